#include "agent/attest/exe_hash_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <vector>

#include "agent/attest/linux_compat.h"
#include "agent/attest/proc_reader.h"
#include "common/encoding.h"
#include "common/ossl.h"

namespace sigil::agent::attest {
namespace {

constexpr size_t kBlockBytes = size_t{64} * 1024;

std::chrono::nanoseconds RealtimeNow() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

}  // namespace

size_t ExeHashCache::KeyHash::operator()(const Key& k) const {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over the fields
  for (uint64_t v :
       {k.mnt_id, k.dev, k.ino, k.size, static_cast<uint64_t>(k.mtime_sec), uint64_t{k.mtime_nsec},
        static_cast<uint64_t>(k.ctime_sec), uint64_t{k.ctime_nsec}}) {
    h = (h ^ v) * 1099511628211ULL;
  }
  return static_cast<size_t>(h);
}

ExeHashCache::ExeHashCache(Options options) : options_(options) {}

Result<ExeHashCache::Key> ExeHashCache::StatKey(int fd, std::string_view display) {
  struct statx st {};
  unsigned mask = STATX_BASIC_STATS | compat::kStatxMntIdUnique;
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT, mask, &st) != 0) {
    return ErrnoError(display, "statx", errno);
  }
  if (!S_ISREG(st.stx_mode))
    return FailedPrecondition(std::string(display) + ": not a regular file");
  // Without a mount id (Linux < 5.8) the key falls back to st_dev alone.
  uint64_t mnt_id =
      (st.stx_mask & (compat::kStatxMntIdUnique | compat::kStatxMntId)) != 0 ? st.stx_mnt_id : 0;
  return Key{mnt_id,
             makedev(st.stx_dev_major, st.stx_dev_minor),
             st.stx_ino,
             st.stx_size,
             st.stx_mtime.tv_sec,
             st.stx_mtime.tv_nsec,
             st.stx_ctime.tv_sec,
             st.stx_ctime.tv_nsec};
}

bool ExeHashCache::Cacheable(const Key& key, std::chrono::nanoseconds start) const {
  auto ctime = std::chrono::seconds(key.ctime_sec) + std::chrono::nanoseconds(key.ctime_nsec);
  return options_.max_entries > 0 && ctime + options_.min_ctime_age <= start;
}

Result<std::string> ExeHashCache::Hash(int fd, const Key& before, std::string_view display) const {
  if (before.size > options_.max_file_bytes) {
    return ResourceExhausted(std::string(display) + ": " + std::to_string(before.size) +
                             " bytes is more than the " + std::to_string(options_.max_file_bytes) +
                             "-byte hashing limit");
  }
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return OsslError("sha256 init");
  }
  std::vector<uint8_t> block(kBlockBytes);
  uint64_t offset = 0;
  for (;;) {
    ssize_t n = ::pread(fd, block.data(), block.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(display, "read", errno);
    }
    if (n == 0) break;
    offset += static_cast<uint64_t>(n);
    if (offset > options_.max_file_bytes) {
      return ResourceExhausted(std::string(display) + ": grew past the hashing limit");
    }
    if (EVP_DigestUpdate(ctx.get(), block.data(), static_cast<size_t>(n)) != 1) {
      return OsslError("sha256 update");
    }
  }
  std::vector<uint8_t> digest(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest.data(), &len) != 1) return OsslError("sha256 final");
  digest.resize(len);
  SIGIL_ASSIGN_OR_RETURN(Key after, StatKey(fd, display));
  if (after != before || offset != before.size) {
    return Error(ErrorCode::kAborted, std::string(display) + ": changed while it was being hashed");
  }
  return HexEncode(digest);
}

bool ExeHashCache::Lookup(const Key& key, std::string& sha256) {
  std::lock_guard lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  lru_.splice(lru_.begin(), lru_, it->second);
  sha256 = it->second->sha256;
  ++stats_.hits;
  return true;
}

void ExeHashCache::Insert(const Key& key, const std::string& sha256) {
  std::lock_guard lock(mu_);
  auto it = index_.find(key);
  if (it != index_.end()) {  // another thread hashed the same file meanwhile
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.push_front(Entry{key, sha256});
  index_.emplace(key, lru_.begin());
  while (lru_.size() > options_.max_entries) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
}

Result<std::string> ExeHashCache::Sha256Hex(int fd, std::string_view display, bool cacheable) {
  auto start = RealtimeNow();
  SIGIL_ASSIGN_OR_RETURN(Key key, StatKey(fd, display));
  cacheable = cacheable && Cacheable(key, start);
  std::string sha256;
  if (cacheable && Lookup(key, sha256)) return sha256;
  auto hashed = Hash(fd, key, display);
  {
    std::lock_guard lock(mu_);
    ++stats_.misses;
  }
  if (!hashed.ok()) return hashed;
  if (cacheable) Insert(key, *hashed);
  return hashed;
}

ExeHashCache::Stats ExeHashCache::stats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.entries = lru_.size();
  return s;
}

}  // namespace sigil::agent::attest
