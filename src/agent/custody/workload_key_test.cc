// WorkloadKey against the real OpenSSL secure heap, in forked hardened children.
#include "agent/custody/workload_key.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "agent/custody/harden.h"
#include "agent/custody/proc_io.h"
#include "agent/custody/testing/child.h"
#include "agent/custody/testing/memscan.h"
#include "common/file_util.h"
#include "core/csr.h"

namespace sigil::agent::custody {
namespace {

using testing::AddressRange;
using testing::ChildChecks;
using testing::RunInChild;

constexpr size_t kScalarOffset = 36;  // in the PKCS#8 DER (workload_key.cc)

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

core::SpiffeId Id(std::string_view text = "spiffe://example.org/ns/prod/web") {
  return core::SpiffeId::Parse(text).value();
}

std::string Str(const Error& e) { return e.ToString(); }

// The scalar of a key as four 16-byte needles (big-endian halves as in DER, little-endian
// halves as in a BIGNUM's words), kept in the secure heap like the key itself.
struct ScalarNeedles {
  SecretBytes bytes{64};
  std::array<std::span<const uint8_t>, 4> needles;
  explicit ScalarNeedles(const SecretBytes& pkcs8) {
    std::copy_n(pkcs8.data() + kScalarOffset, 32, bytes.data());
    std::reverse_copy(pkcs8.data() + kScalarOffset, pkcs8.data() + kScalarOffset + 32,
                      bytes.data() + 32);
    for (size_t i = 0; i < 4; ++i) needles[i] = bytes.span().subspan(i * 16, 16);
  }
};

std::vector<std::span<const uint8_t>> AllNeedles(
    const std::vector<std::unique_ptr<ScalarNeedles>>& keys) {
  std::vector<std::span<const uint8_t>> out;
  for (const auto& k : keys) out.insert(out.end(), k->needles.begin(), k->needles.end());
  return out;
}

std::vector<AddressRange> RangesOf(const std::vector<std::unique_ptr<ScalarNeedles>>& keys) {
  std::vector<AddressRange> out;
  for (const auto& k : keys) {
    auto start = reinterpret_cast<uintptr_t>(k->bytes.data());
    out.push_back({start, start + k->bytes.size()});
  }
  return out;
}

// The secure-heap arena: the mapping of a probe allocation.
AddressRange Arena() {
  void* probe = OPENSSL_secure_malloc(1);
  AddressRange r = testing::MappingOf(probe);
  OPENSSL_secure_free(probe);
  return r;
}

TEST(WorkloadKey, RefusesWithoutSecureHeap) {
  ASSERT_EQ(CRYPTO_secure_malloc_initialized(), 0);  // the gtest runner is never hardened
  auto key = WorkloadKey::Generate(Id());
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.error().code(), ErrorCode::kFailedPrecondition);
}

TEST(WorkloadKey, RefusesTrustDomainId) {
  EXPECT_EQ(RunInChild([](ChildChecks& c) {
              if (!CHILD_CHECK(c, HardenProcess().ok())) return;
              auto key = WorkloadKey::Generate(Id("spiffe://example.org"));
              CHILD_CHECK(c, !key.ok() && key.error().code() == ErrorCode::kInvalidArgument);
            }),
            "");
}

TEST(WorkloadKey, CsrAndPkcs8MatchOpenSsl) {
  EXPECT_EQ(
      RunInChild([](ChildChecks& c) {
        if (!CHILD_CHECK(c, HardenProcess().ok())) return;
        auto key = WorkloadKey::Generate(Id());
        if (!CHILD_CHECK_MSG(c, key.ok(), key.ok() ? "" : Str(key.error()))) return;
        CHILD_CHECK(c, key->spiffe_id().str() == "spiffe://example.org/ns/prod/web");

        auto csr_der = key->CreateCsrDer();
        if (!CHILD_CHECK(c, csr_der.ok())) return;
        auto csr = core::Csr::ParseDer(*csr_der);
        if (!CHILD_CHECK(c, csr.ok())) return;
        auto csr_key = csr->Verify(core::KeyPolicy{});
        CHILD_CHECK(c, csr_key.ok() && csr_key->Equals(key->public_key()));

        auto der = key->ExportPkcs8Der();
        if (!CHILD_CHECK(c, der.ok())) return;
        CHILD_CHECK(c, der->size() == kP256Pkcs8DerSize);
        CHILD_CHECK(c, CRYPTO_secure_allocated(der->data()) == 1);
        // Byte-identical to OpenSSL's own encoder (leaky, but fine in a test).
        core::PrivateKey reparsed = core::PrivateKey::FromPkcs8Der(der->span()).value();
        CHILD_CHECK(c, reparsed.Public().Equals(key->public_key()));
        auto openssl_der = reparsed.ToPkcs8Der();
        CHILD_CHECK(c, openssl_der.ok() && openssl_der->Equals(*der));

        std::array<uint8_t, 5> msg = {1, 2, 3, 4, 5};
        auto sig = key->Sign(msg);
        CHILD_CHECK(
            c, sig.ok() && core::VerifySignature(key->public_key(), msg, *sig, EVP_sha256()).ok());
      }),
      "");
}

TEST(WorkloadKey, ThousandKeysLiveInTheSecureHeapAndAreGivenBack) {
  EXPECT_EQ(RunInChild([](ChildChecks& c) {
              if (!CHILD_CHECK(c, HardenProcess().ok())) return;
              size_t baseline = CRYPTO_secure_used();
              std::vector<WorkloadKey> keys;
              keys.reserve(1000);
              for (int i = 0; i < 1000; ++i) {
                auto key = WorkloadKey::Generate(Id());
                if (!CHILD_CHECK(c, key.ok())) return;
                keys.push_back(std::move(key).value());
              }
              size_t held = CRYPTO_secure_used();
              // 32 bytes (one P-256 scalar, 4 words) per key.
              CHILD_CHECK_MSG(c, held - baseline >= 1000 * 32,
                              std::to_string(held) + " vs " + std::to_string(baseline));
              {
                auto der = keys.front().ExportPkcs8Der();  // 138 -> 256-byte block
                CHILD_CHECK(c, CRYPTO_secure_used() == held + 256);
              }
              CHILD_CHECK(c, CRYPTO_secure_used() == held);
              keys.clear();
              CHILD_CHECK_MSG(
                  c, CRYPTO_secure_used() == baseline,
                  std::to_string(CRYPTO_secure_used()) + " vs " + std::to_string(baseline));
            }),
            "");
}

TEST(WorkloadKey, FreedKeysAreWipedFromTheArena) {
  EXPECT_EQ(RunInChild([](ChildChecks& c) {
              if (!CHILD_CHECK(c, HardenProcess().ok())) return;
              AddressRange arena = Arena();
              if (!CHILD_CHECK(c, arena.end > arena.start)) return;
              std::vector<std::unique_ptr<ScalarNeedles>> needles;
              {
                std::vector<WorkloadKey> keys;
                for (int i = 0; i < 20; ++i) {
                  keys.push_back(WorkloadKey::Generate(Id()).value());
                  needles.push_back(
                      std::make_unique<ScalarNeedles>(keys.back().ExportPkcs8Der().value()));
                }
                // While alive, each scalar is in the arena as a BIGNUM (little-endian words).
                auto all = AllNeedles(needles);
                auto hits = testing::FindInRange(arena, all, RangesOf(needles));
                std::vector<int> le(needles.size(), 0);
                std::vector<int> be(needles.size(), 0);
                for (const auto& h : hits) ++(h.needle % 4 >= 2 ? le : be)[h.needle / 4];
                for (size_t i = 0; i < needles.size(); ++i) {
                  CHILD_CHECK_MSG(c, le[i] >= 2 && be[i] == 0,
                                  "key " + std::to_string(i) + ": " + std::to_string(le[i]) +
                                      " little-endian, " + std::to_string(be[i]) + " big-endian");
                }
              }
              // Freed: no trace left anywhere in the arena except the needles themselves.
              auto hits = testing::FindInRange(arena, AllNeedles(needles), RangesOf(needles));
              CHILD_CHECK_MSG(c, hits.empty(), std::to_string(hits.size()) + " hits");
            }),
            "");
}

// The scalar is never copied outside the arena: not by generation, CSR signing, signing or
// export (and the DER/BIGNUM byte orders are both searched). OpenSSL's own PKCS#8 encoder is
// measured for contrast and reported, not asserted (it is OpenSSL's behaviour, not ours).
TEST(WorkloadKey, NoCopyOfTheScalarOutsideTheArena) {
  EXPECT_EQ(RunInChild([](ChildChecks& c) {
              if (!CHILD_CHECK(c, HardenProcess().ok())) return;
              std::vector<AddressRange> skip = {Arena()};
              std::vector<std::unique_ptr<ScalarNeedles>> needles;
              std::vector<WorkloadKey> keys;
              for (int i = 0; i < 100; ++i) {
                keys.push_back(WorkloadKey::Generate(Id()).value());
                CHILD_CHECK(c, keys.back().CreateCsrDer().ok());
                std::array<uint8_t, 3> msg = {1, 2, 3};
                CHILD_CHECK(c, keys.back().Sign(msg).ok());
                auto der = keys.back().ExportPkcs8Der().value();
                needles.push_back(std::make_unique<ScalarNeedles>(der));
              }
              auto all = AllNeedles(needles);
              for (const auto& h : testing::FindInWritableMemory(all, skip)) {
                c.Fail("copy of a scalar in " + h.mapping, __FILE__, __LINE__);
              }
              keys.clear();
              for (const auto& h : testing::FindInWritableMemory(all, skip)) {
                c.Fail("after free: copy of a scalar in " + h.mapping, __FILE__, __LINE__);
              }
            }),
            "");
  // Contrast, informational: core::PrivateKey::ToPkcs8Der's EVP_PKEY2PKCS8.
  std::string info = RunInChild([](ChildChecks& c) {
    if (!HardenProcess().ok()) return;
    std::vector<AddressRange> skip = {Arena()};
    auto key = WorkloadKey::Generate(Id()).value();
    ScalarNeedles n(key.ExportPkcs8Der().value());
    {
      std::unique_ptr<PKCS8_PRIV_KEY_INFO, OsslFree<PKCS8_PRIV_KEY_INFO_free>> p8(
          EVP_PKEY2PKCS8(key.get()));
    }
    auto hits = testing::FindInWritableMemory(n.needles, skip);
    c.Fail("EVP_PKEY2PKCS8 left " + std::to_string(hits.size()) +
               " copies of scalar halves in freed normal-heap memory",
           "info", 0);
  });
  std::cout << "[ info ] " << info;
}

std::vector<std::string> FilesModifiedSince(const std::string& dir, time_t since) {
  std::vector<std::string> out;
  std::error_code ec;
  auto it = std::filesystem::recursive_directory_iterator(
      dir, std::filesystem::directory_options::skip_permission_denied, ec);
  for (; !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (st.st_mtime >= since && st.st_size <= (16 << 20)) out.push_back(it->path());
  }
  return out;
}

// Nothing the custody API does writes to any file descriptor, and no file written while it ran
// (in its working directory, $TMPDIR, $HOME, /tmp, /var/tmp, /dev/shm) holds key bytes.
TEST(WorkloadKey, NoDisk) {
  EXPECT_EQ(
      RunInChild([](ChildChecks& c) {
        char tmpl[] = "/tmp/sigil-custody-XXXXXX";
        const char* dir = ::mkdtemp(tmpl);
        if (!CHILD_CHECK(c, dir != nullptr)) return;
        struct RemoveDir {
          const char* path;
          ~RemoveDir() { ::rmdir(path); }
        } remove_dir{dir};
        if (!CHILD_CHECK(c, ::chdir(dir) == 0)) return;
        ::setenv("TMPDIR", dir, 1);
        ::setenv("HOME", dir, 1);
        time_t start = std::time(nullptr) - 1;
        if (!CHILD_CHECK(c, HardenProcess().ok())) return;

        auto io_before = internal::ReadProcFile("/proc/self/io");
        std::vector<std::unique_ptr<ScalarNeedles>> needles;
        std::vector<WorkloadKey> keys;
        for (int i = 0; i < 200; ++i) {
          auto key = WorkloadKey::Generate(Id());
          if (!key.ok()) break;
          (void)key->CreateCsrDer();
          std::array<uint8_t, 3> msg = {1, 2, 3};
          (void)key->Sign(msg);
          auto der = key->ExportPkcs8Der();
          if (!der.ok()) break;
          needles.push_back(std::make_unique<ScalarNeedles>(*der));
          keys.push_back(std::move(key).value());
        }
        auto io_after = internal::ReadProcFile("/proc/self/io");
        CHILD_CHECK(c, needles.size() == 200);
        // syscw counts write(2)-family calls on any fd; wchar their bytes.
        auto field = [](const Result<std::string>& io, std::string_view name) {
          if (!io.ok()) return std::string("?");
          size_t at = io->find(std::string(name) + ": ");
          return at == std::string::npos ? std::string("?")
                                         : io->substr(at, io->find('\n', at) - at);
        };
        // Sanitizer runtimes probe memory with write(2) into a private pipe (seen with
        // strace: 16-byte writes of pointers), so the count is only exact without them.
        if (!kSanitized) {
          CHILD_CHECK_MSG(c, field(io_before, "syscw") == field(io_after, "syscw"),
                          field(io_before, "syscw") + " -> " + field(io_after, "syscw"));
          CHILD_CHECK_MSG(c, field(io_before, "wchar") == field(io_after, "wchar"),
                          field(io_before, "wchar") + " -> " + field(io_after, "wchar"));
        }

        std::vector<std::string> files = FilesModifiedSince(dir, start);
        CHILD_CHECK_MSG(c, files.empty(), "files in the working directory");
        for (const char* root : {"/tmp", "/var/tmp", "/dev/shm"}) {
          auto more = FilesModifiedSince(root, start);
          files.insert(files.end(), more.begin(), more.end());
        }
        for (const auto& path : files) {
          // Unreadable or larger than 64 MiB: nothing of ours is in it (the key test writes none).
          auto read = ReadFile(path, size_t{64} << 20);
          const std::string content = read.ok() ? *read : std::string();
          for (const auto& n : needles) {
            for (const auto& needle : n->needles) {
              std::string_view hay(content);
              std::string_view nd(reinterpret_cast<const char*>(needle.data()), needle.size());
              CHILD_CHECK_MSG(c, hay.find(nd) == std::string_view::npos, "key bytes in " + path);
            }
          }
        }
      }),
      "");
}

}  // namespace
}  // namespace sigil::agent::custody
