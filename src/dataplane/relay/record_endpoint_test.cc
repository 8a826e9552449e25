// The user-space TLS 1.3 record layer (Endpoint::Records / SwitchToRecords) against real
// OpenSSL peers: data both ways for the three cipher suites, close_notify in both directions,
// post-handshake messages after the switch, tampered records, a plain->records->records->plain
// relay chain (MB/s next to OpenSSL endpoints), and the heap held per idle endpoint.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>

#if defined(__SANITIZE_ADDRESS__)
// From the ASan runtime (sanitizer/allocator_interface.h is not installed here).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

#include <array>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/ktls/ktls.h"
#include "dataplane/ktls/test_tls_pair.h"
#include "dataplane/relay/endpoint.h"
#include "dataplane/relay/record_endpoint.h"
#include "dataplane/relay/record_layer.h"
#include "dataplane/relay/relay.h"
#include "dataplane/relay/test_util.h"

namespace sigil::dataplane {
namespace {

using namespace std::chrono_literals;
namespace kt = ktls::testing;
using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// Live heap bytes: glibc's mallinfo2 normally; under ASan (whose allocator mallinfo2 does not
// see) the sanitizer's count of bytes handed out, so the memory bound is checked there too.
size_t HeapBytes() {
#if defined(__SANITIZE_ADDRESS__)
  return __sanitizer_get_current_allocated_bytes();
#else
  return testing::HeapInUseBytes();
#endif
}

struct CipherCase {
  const char* suite;
  ktls::KtlsCipher cipher;
  const char* name;
};

constexpr CipherCase kCiphers[] = {
    {"TLS_AES_128_GCM_SHA256", ktls::KtlsCipher::kAes128Gcm, "Aes128Gcm"},
    {"TLS_AES_256_GCM_SHA384", ktls::KtlsCipher::kAes256Gcm, "Aes256Gcm"},
    {"TLS_CHACHA20_POLY1305_SHA256", ktls::KtlsCipher::kChacha20Poly1305, "Chacha20Poly1305"},
};

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

bool WaitFd(int fd, short events, Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, static_cast<int>(left.count())) == 1;
}

std::string Describe(const IoResult& r) {
  static const char* kNames[] = {"ok", "want-read", "want-write", "eof", "reset", "error"};
  return std::string(kNames[static_cast<int>(r.status)]) + (r.truncated ? " (truncated)" : "") +
         (r.error.empty() ? "" : ": " + r.error);
}

// Reads exactly `n` bytes from a non-blocking endpoint, polling as it asks.
Result<std::string> EpReadExactly(Endpoint& ep, size_t n, std::chrono::milliseconds timeout = 30s) {
  auto deadline = Clock::now() + timeout;
  std::string out;
  std::vector<char> buf(64 * 1024);
  while (out.size() < n) {
    size_t want = std::min(buf.size(), n - out.size());
    IoResult r = ep.Read({buf.data(), want});
    if (r.status == IoStatus::kOk) {
      out.append(buf.data(), r.bytes);
      continue;
    }
    if (r.status == IoStatus::kWantRead || r.status == IoStatus::kWantWrite) {
      if (!WaitFd(ep.fd(), r.status == IoStatus::kWantRead ? POLLIN : POLLOUT, deadline)) {
        return Internal("read timed out after " + std::to_string(out.size()) + " bytes");
      }
      continue;
    }
    return Internal("read after " + std::to_string(out.size()) + " bytes: " + Describe(r));
  }
  return out;
}

// Reads until something other than data or a retry: returns that result; `data` collects bytes.
IoResult EpReadToEnd(Endpoint& ep, std::string& data, std::chrono::milliseconds timeout = 30s) {
  auto deadline = Clock::now() + timeout;
  std::vector<char> buf(64 * 1024);
  for (;;) {
    IoResult r = ep.Read({buf.data(), buf.size()});
    if (r.status == IoStatus::kOk) {
      data.append(buf.data(), r.bytes);
      continue;
    }
    if (r.status == IoStatus::kWantRead || r.status == IoStatus::kWantWrite) {
      if (!WaitFd(ep.fd(), r.status == IoStatus::kWantRead ? POLLIN : POLLOUT, deadline)) {
        IoResult t;
        t.status = IoStatus::kError;
        t.error = "test: timed out";
        return t;
      }
      continue;
    }
    return r;
  }
}

Result<void> EpWriteAll(Endpoint& ep, std::string_view data,
                        std::chrono::milliseconds timeout = 30s) {
  auto deadline = Clock::now() + timeout;
  while (!data.empty()) {
    IoResult r = ep.Write({data.data(), data.size()});
    if (r.status == IoStatus::kOk) {
      data.remove_prefix(r.bytes);
      continue;
    }
    if (r.status == IoStatus::kWantRead || r.status == IoStatus::kWantWrite) {
      if (!WaitFd(ep.fd(), r.status == IoStatus::kWantRead ? POLLIN : POLLOUT, deadline)) {
        return Internal("write timed out");
      }
      continue;
    }
    return Internal("write: " + Describe(r));
  }
  return Ok();
}

Result<void> EpShutdownWrite(Endpoint& ep, std::chrono::milliseconds timeout = 30s) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    IoResult r = ep.ShutdownWrite();
    if (r.status == IoStatus::kOk) return Ok();
    if (r.status != IoStatus::kWantWrite && r.status != IoStatus::kWantRead) {
      return Internal("shutdown: " + Describe(r));
    }
    if (!WaitFd(ep.fd(), r.status == IoStatus::kWantRead ? POLLIN : POLLOUT, deadline)) {
      return Internal("shutdown timed out");
    }
  }
}

// Exports `side`'s keys, frees its SSL and wraps its socket in a records endpoint.
std::unique_ptr<Endpoint> SwitchSide(kt::Endpoint& side) {
  auto keys = ktls::ExportTrafficKeys(side.ssl.get());
  EXPECT_TRUE(keys.ok()) << keys.error().ToString();
  if (!keys.ok()) return nullptr;
  side.ssl.reset();
  auto ep = Endpoint::Records(std::move(side.fd), std::move(*keys));
  EXPECT_TRUE(ep.ok()) << ep.error().ToString();
  return ep.ok() ? std::move(*ep) : nullptr;
}

// Random keys for both directions; Mirror() gives the peer's view.
struct RawKeys {
  ktls::KtlsCipher cipher = ktls::KtlsCipher::kAes128Gcm;
  std::vector<uint8_t> tx_key, tx_iv, rx_key, rx_iv;
  uint64_t tx_seq = 0, rx_seq = 0;

  static RawKeys Random(ktls::KtlsCipher c, uint64_t seq = 0) {
    RawKeys k;
    k.cipher = c;
    size_t key_len = c == ktls::KtlsCipher::kAes128Gcm ? 16 : 32;
    for (auto* v : {&k.tx_key, &k.rx_key}) v->resize(key_len);
    for (auto* v : {&k.tx_iv, &k.rx_iv}) v->resize(12);
    for (auto* v : {&k.tx_key, &k.rx_key, &k.tx_iv, &k.rx_iv}) {
      RAND_bytes(v->data(), static_cast<int>(v->size()));
    }
    k.tx_seq = seq;
    k.rx_seq = seq + 3;
    return k;
  }
  RawKeys Mirror() const {
    RawKeys m = *this;
    std::swap(m.tx_key, m.rx_key);
    std::swap(m.tx_iv, m.rx_iv);
    std::swap(m.tx_seq, m.rx_seq);
    return m;
  }
  ktls::TrafficKeys Traffic() const {
    ktls::TrafficKeys t;
    t.cipher = cipher;
    t.tx.key = SecretBytes::Copy(tx_key);
    t.tx.iv = SecretBytes::Copy(tx_iv);
    t.tx.seq = tx_seq;
    t.rx.key = SecretBytes::Copy(rx_key);
    t.rx.iv = SecretBytes::Copy(rx_iv);
    t.rx.seq = rx_seq;
    return t;
  }
  ktls::DirectionKeys Tx() const { return Traffic().tx; }
};

std::array<OwnedFd, 2> SocketPair() {
  int sv[2] = {-1, -1};
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  return {OwnedFd(sv[0]), OwnedFd(sv[1])};
}

// ---- RecordCipher unit tests ----

class RecordCipherTest : public ::testing::TestWithParam<CipherCase> {};

TEST_P(RecordCipherTest, SealOpenRoundTripPaddingAndTamper) {
  RawKeys keys = RawKeys::Random(GetParam().cipher, 41);
  RecordCipher sealer, opener;
  ASSERT_TRUE(sealer.Init(keys.cipher, keys.Traffic().tx, RecordCipher::Mode::kSeal).ok());
  ASSERT_TRUE(opener.Init(keys.cipher, keys.Traffic().tx, RecordCipher::Mode::kOpen).ok());
  testing::Prng prng(5);
  for (size_t n : {size_t{0}, size_t{1}, size_t{1000}, kTlsMaxPlaintext}) {
    std::string content = prng.Bytes(n);
    std::vector<uint8_t> rec(SealedRecordSize(n));
    auto sealed = sealer.Seal(kTlsContentApplicationData, Bytes(content), rec);
    ASSERT_TRUE(sealed.ok()) << sealed.error().ToString();
    ASSERT_EQ(*sealed, rec.size());
    EXPECT_EQ(rec[0], kTlsContentApplicationData);
    auto opened = opener.Open(rec);
    ASSERT_TRUE(opened.ok()) << opened.error().ToString();
    EXPECT_EQ(opened->type, kTlsContentApplicationData);
    EXPECT_EQ(
        std::string(reinterpret_cast<const char*>(opened->content.data()), opened->content.size()),
        content);
  }
  EXPECT_EQ(sealer.seq(), 45u);
  EXPECT_EQ(opener.seq(), 45u);

  // Tampering with the header (AAD), the ciphertext or the tag fails authentication.
  for (size_t pos : {size_t{3}, size_t{7}, size_t{5 + 10 + 1 + 15}}) {
    RecordCipher s2, o2;
    ASSERT_TRUE(s2.Init(keys.cipher, keys.Traffic().tx, RecordCipher::Mode::kSeal).ok());
    ASSERT_TRUE(o2.Init(keys.cipher, keys.Traffic().tx, RecordCipher::Mode::kOpen).ok());
    std::string content = "0123456789";
    std::vector<uint8_t> rec(SealedRecordSize(content.size()));
    ASSERT_TRUE(s2.Seal(kTlsContentApplicationData, Bytes(content), rec).ok());
    if (pos == 3) {
      // A length change is caught by the header/size check before the AEAD.
      rec[4] ^= 1;
      EXPECT_FALSE(o2.Open(rec).ok());
      continue;
    }
    rec[pos] ^= 0x40;
    auto opened = o2.Open(rec);
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.error().code(), ErrorCode::kUnauthenticated) << opened.error().ToString();
    EXPECT_NE(opened.error().message().find("bad record MAC"), std::string::npos);
  }

  // Wrong sequence number: authentication fails too.
  {
    RecordCipher s3, o3;
    ASSERT_TRUE(s3.Init(keys.cipher, keys.Traffic().tx, RecordCipher::Mode::kSeal).ok());
    RawKeys shifted = keys;
    shifted.tx_seq += 1;
    ASSERT_TRUE(o3.Init(keys.cipher, shifted.Traffic().tx, RecordCipher::Mode::kOpen).ok());
    std::vector<uint8_t> rec(SealedRecordSize(3));
    ASSERT_TRUE(s3.Seal(kTlsContentApplicationData, Bytes("abc"), rec).ok());
    EXPECT_FALSE(o3.Open(rec).ok());
  }

  // Sequence number 2^64 - 1 is never used.
  {
    RawKeys high = keys;
    high.tx_seq = UINT64_MAX - 1;
    RecordCipher s4;
    ASSERT_TRUE(s4.Init(keys.cipher, high.Traffic().tx, RecordCipher::Mode::kSeal).ok());
    std::vector<uint8_t> rec(SealedRecordSize(1));
    EXPECT_TRUE(s4.Seal(kTlsContentApplicationData, Bytes("a"), rec).ok());
    auto overflow = s4.Seal(kTlsContentApplicationData, Bytes("a"), rec);
    ASSERT_FALSE(overflow.ok());
    EXPECT_NE(overflow.error().message().find("sequence number"), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(Cipher, RecordCipherTest, ::testing::ValuesIn(kCiphers),
                         [](const auto& tp) { return std::string(tp.param.name); });

TEST(RecordHeaderTest, RejectsWrongTypeVersionAndSizes) {
  auto parse = [](std::array<uint8_t, 5> h) { return ParseRecordHeader(h); };
  EXPECT_EQ(*parse({23, 3, 3, 0, 17}), 17u);
  EXPECT_EQ(*parse({23, 3, 3, 0x41, 0x00}), kTlsMaxCiphertext);
  EXPECT_FALSE(parse({22, 3, 3, 0, 40}).ok());       // handshake type after the switch
  EXPECT_FALSE(parse({21, 3, 3, 0, 2}).ok());        // plaintext alert
  EXPECT_FALSE(parse({23, 3, 1, 0, 40}).ok());       // version
  EXPECT_FALSE(parse({23, 3, 3, 0, 16}).ok());       // shorter than a tag + type byte
  EXPECT_FALSE(parse({23, 3, 3, 0x41, 0x01}).ok());  // 2^14 + 257
}

// ---- one side switched, OpenSSL on the other ----

struct SideCase {
  CipherCase cipher;
  bool switch_client;
};

class OneSideSwitchedTest : public ::testing::TestWithParam<SideCase> {};

TEST_P(OneSideSwitchedTest, DataBothWaysAndCloseNotify) {
  const SideCase& c = GetParam();
  kt::PairOptions opts;
  opts.ciphersuite = c.cipher.suite;
  auto pair = kt::MakeTlsPair(opts);
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  kt::Endpoint& ours_side = c.switch_client ? pair->client : pair->server;
  SSL* peer = (c.switch_client ? pair->server : pair->client).ssl.get();
  std::unique_ptr<Endpoint> ep = SwitchSide(ours_side);
  ASSERT_NE(ep, nullptr);
  ASSERT_TRUE(ep->is_records());
  ASSERT_TRUE(ep->is_tls());
  EXPECT_EQ(ep->ssl(), nullptr);
  EXPECT_EQ(ep->records()->cipher(), c.cipher.cipher);

  const std::vector<size_t> sizes = {0,     1,     2,         100,   4096,   16383,  16384,
                                     16385, 32768, 65536 + 7, 99999, 300000, 1 << 20};
  testing::Prng prng(c.switch_client ? 11 : 12);
  std::vector<std::string> to_us, to_peer;
  for (size_t n : sizes) {
    to_us.push_back(prng.Bytes(n));
    to_peer.push_back(prng.Bytes(n));
  }
  // Peer first closes (SSL_shutdown) when we switched the server, we first close otherwise.
  const bool peer_closes_first = !c.switch_client;

  std::string peer_got, peer_error;
  int peer_read_rc = -1, peer_read_err = -1, peer_shutdown_rc = -2;
  std::thread peer_thread([&] {
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] == 0) continue;  // SSL_write of 0 bytes sends nothing
      auto w = kt::SslWriteAll(peer, Bytes(to_us[i]));
      if (!w.ok()) {
        peer_error = w.error().ToString();
        return;
      }
      std::string got(sizes[i], '\0');
      auto r = kt::SslReadExact(
          peer, std::span<uint8_t>(reinterpret_cast<uint8_t*>(got.data()), got.size()));
      if (!r.ok()) {
        peer_error = r.error().ToString();
        return;
      }
      peer_got += got;
    }
    if (peer_closes_first) peer_shutdown_rc = SSL_shutdown(peer);
    char b[16];
    size_t n = 0;
    peer_read_rc = SSL_read_ex(peer, b, sizeof(b), &n);
    peer_read_err = SSL_get_error(peer, peer_read_rc);
    if (!peer_closes_first) peer_shutdown_rc = SSL_shutdown(peer);
  });

  std::string we_got;
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto got = EpReadExactly(*ep, sizes[i]);
    ASSERT_TRUE(got.ok()) << "size " << sizes[i] << ": " << got.error().ToString();
    we_got += *got;
    auto w = EpWriteAll(*ep, to_peer[i]);
    ASSERT_TRUE(w.ok()) << "size " << sizes[i] << ": " << w.error().ToString();
  }
  if (peer_closes_first) {
    std::string extra;
    IoResult end = EpReadToEnd(*ep, extra);
    EXPECT_EQ(end.status, IoStatus::kEof) << Describe(end);
    EXPECT_FALSE(end.truncated);
    EXPECT_TRUE(extra.empty());
    ASSERT_TRUE(EpShutdownWrite(*ep).ok());
  } else {
    ASSERT_TRUE(EpShutdownWrite(*ep).ok());
    std::string extra;
    IoResult end = EpReadToEnd(*ep, extra);
    EXPECT_EQ(end.status, IoStatus::kEof) << Describe(end);
    EXPECT_FALSE(end.truncated);
    EXPECT_TRUE(extra.empty());
  }
  peer_thread.join();
  ASSERT_EQ(peer_error, "");

  std::string all_to_us, all_to_peer;
  for (size_t i = 0; i < sizes.size(); ++i) {
    all_to_us += to_us[i];
    all_to_peer += to_peer[i];
  }
  EXPECT_EQ(testing::Sha256Hex(we_got), testing::Sha256Hex(all_to_us));
  EXPECT_EQ(testing::Sha256Hex(peer_got), testing::Sha256Hex(all_to_peer));
  EXPECT_EQ(we_got.size(), all_to_us.size());
  // Our close_notify is a clean close for OpenSSL, not a truncation.
  EXPECT_EQ(peer_read_rc, 0);
  EXPECT_EQ(peer_read_err, SSL_ERROR_ZERO_RETURN);
  // Peer closing first: SSL_shutdown sent its alert (0); else it had already received ours (1).
  EXPECT_EQ(peer_shutdown_rc, peer_closes_first ? 0 : 1);
  // The server's two handshake tickets were still in flight when the client switched.
  EXPECT_EQ(ep->records()->tickets_skipped(), c.switch_client ? 2u : 0u);
  EXPECT_EQ(ep->records()->buffered_bytes(), 0u);
  // Writing after our close_notify is refused.
  EXPECT_EQ(ep->Write({"x", 1}).status, IoStatus::kError);
}

std::vector<SideCase> AllSideCases() {
  std::vector<SideCase> out;
  for (const CipherCase& c : kCiphers) {
    out.push_back({c, false});
    out.push_back({c, true});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cipher, OneSideSwitchedTest, ::testing::ValuesIn(AllSideCases()),
                         [](const auto& tp) {
                           return std::string(tp.param.cipher.name) +
                                  (tp.param.switch_client ? "_ClientSwitched" : "_ServerSwitched");
                         });

// ---- post-handshake messages and tampering after the switch (client switched) ----

struct SwitchedClient {
  kt::TlsPair pair;
  std::unique_ptr<Endpoint> ep;
};

std::optional<SwitchedClient> MakeSwitchedClient(const char* suite = "TLS_AES_128_GCM_SHA256") {
  kt::PairOptions opts;
  opts.ciphersuite = suite;
  auto pair = kt::MakeTlsPair(opts);
  EXPECT_TRUE(pair.ok()) << pair.error().ToString();
  if (!pair.ok()) return std::nullopt;
  SwitchedClient s{std::move(*pair), nullptr};
  s.ep = SwitchSide(s.pair.client);
  if (!s.ep) return std::nullopt;
  return s;
}

TEST(RecordPostHandshakeTest, NewSessionTicketAfterSwitchIsSkipped) {
  auto s = MakeSwitchedClient();
  ASSERT_TRUE(s);
  SSL* server = s->pair.server.ssl.get();
  ASSERT_EQ(SSL_new_session_ticket(server), 1);
  ASSERT_EQ(SSL_do_handshake(server), 1);  // sends the extra ticket
  ASSERT_TRUE(kt::SslWriteAll(server, Bytes("after-ticket")).ok());
  auto got = EpReadExactly(*s->ep, 12);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, "after-ticket");
  EXPECT_EQ(s->ep->records()->tickets_skipped(), 3u);  // 2 from the handshake + 1
  // And the connection keeps working both ways.
  ASSERT_TRUE(EpWriteAll(*s->ep, "reply").ok());
  std::array<uint8_t, 5> reply{};
  ASSERT_TRUE(kt::SslReadExact(server, reply).ok());
  EXPECT_EQ(std::string(reply.begin(), reply.end()), "reply");
}

TEST(RecordPostHandshakeTest, KeyUpdateFromPeerFailsReadClearly) {
  auto s = MakeSwitchedClient();
  ASSERT_TRUE(s);
  SSL* server = s->pair.server.ssl.get();
  ASSERT_TRUE(kt::SslWriteAll(server, Bytes("before")).ok());
  ASSERT_EQ(SSL_key_update(server, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
  ASSERT_EQ(SSL_do_handshake(server), 1);  // sends the KeyUpdate
  ASSERT_TRUE(kt::SslWriteAll(server, Bytes("after")).ok());
  std::string data;
  IoResult r = EpReadToEnd(*s->ep, data);
  EXPECT_EQ(data, "before");
  EXPECT_EQ(r.status, IoStatus::kError);
  EXPECT_NE(r.error.find("KeyUpdate not supported after the record-layer switch"),
            std::string::npos)
      << r.error;
  // Sticky: no later read yields anything.
  std::array<char, 16> buf{};
  EXPECT_EQ(s->ep->Read(buf).status, IoStatus::kError);
}

enum class Tamper { kNone, kCiphertext, kTag, kBogusRecord, kOversize, kPlaintextAlert };

class RecordTamperTest : public ::testing::TestWithParam<Tamper> {};

// The server's SSL writes into a memory BIO; the test (the man in the middle) modifies the
// record and puts it on the wire.
TEST_P(RecordTamperTest, TamperedRecordNeverYieldsData) {
  auto s = MakeSwitchedClient("TLS_CHACHA20_POLY1305_SHA256");
  ASSERT_TRUE(s);
  SSL* server = s->pair.server.ssl.get();
  BIO* mem = BIO_new(BIO_s_mem());
  ASSERT_NE(mem, nullptr);
  SSL_set0_wbio(server, mem);  // the SSL owns it now
  const std::string secret = "attack at dawn";
  ASSERT_TRUE(kt::SslWriteAll(server, Bytes(secret)).ok());
  std::vector<uint8_t> wire(static_cast<size_t>(BIO_pending(mem)));
  ASSERT_EQ(BIO_read(mem, wire.data(), static_cast<int>(wire.size())),
            static_cast<int>(wire.size()));
  ASSERT_EQ(wire.size(), SealedRecordSize(secret.size()));
  switch (GetParam()) {
    case Tamper::kNone:
      break;
    case Tamper::kCiphertext:
      wire[kTlsRecordHeaderLen + 3] ^= 0x01;
      break;
    case Tamper::kTag:
      wire.back() ^= 0x80;
      break;
    case Tamper::kBogusRecord:
      RAND_bytes(wire.data() + kTlsRecordHeaderLen,
                 static_cast<int>(wire.size() - kTlsRecordHeaderLen));
      break;
    case Tamper::kOversize:
      wire = {23, 3, 3, 0x41, 0x01};  // 2^14 + 257 bytes announced
      wire.resize(wire.size() + 40, 0);
      break;
    case Tamper::kPlaintextAlert:
      wire = {21, 3, 3, 0, 2, 2, 40};  // an unprotected fatal alert
      break;
  }
  ASSERT_TRUE(kt::SendAll(s->pair.server.fd.get(), wire).ok());
  std::string data;
  IoResult r;
  if (GetParam() == Tamper::kNone) {
    auto got = EpReadExactly(*s->ep, secret.size());
    ASSERT_TRUE(got.ok()) << got.error().ToString();
    EXPECT_EQ(*got, secret);
    return;
  }
  r = EpReadToEnd(*s->ep, data);
  EXPECT_EQ(data, "");
  EXPECT_EQ(r.status, IoStatus::kError) << Describe(r);
  switch (GetParam()) {
    case Tamper::kCiphertext:
    case Tamper::kTag:
    case Tamper::kBogusRecord:
      EXPECT_NE(r.error.find("bad record MAC"), std::string::npos) << r.error;
      break;
    case Tamper::kOversize:
      EXPECT_NE(r.error.find("record overflow"), std::string::npos) << r.error;
      break;
    default:
      EXPECT_NE(r.error.find("unexpected outer content type 21"), std::string::npos) << r.error;
      break;
  }
  std::array<char, 16> buf{};
  EXPECT_EQ(s->ep->Read(buf).status, IoStatus::kError);
  EXPECT_EQ(s->ep->records()->buffered_bytes(), 0u);
}

std::string TamperName(const ::testing::TestParamInfo<Tamper>& tp) {
  static const char* const kNames[] = {"Untouched",   "Ciphertext", "Tag",
                                       "BogusRecord", "Oversize",   "PlaintextAlert"};
  return kNames[static_cast<int>(tp.param)];
}

INSTANTIATE_TEST_SUITE_P(Kind, RecordTamperTest,
                         ::testing::Values(Tamper::kNone, Tamper::kCiphertext, Tamper::kTag,
                                           Tamper::kBogusRecord, Tamper::kOversize,
                                           Tamper::kPlaintextAlert),
                         TamperName);

// ---- inner content types, with records sealed by the test (random keys, socketpair) ----

class ControlRecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    keys_ = RawKeys::Random(ktls::KtlsCipher::kAes256Gcm, 1000);
    auto fds = SocketPair();
    raw_ = std::move(fds[1]);
    auto ep = Endpoint::Records(std::move(fds[0]), keys_.Traffic());
    ASSERT_TRUE(ep.ok()) << ep.error().ToString();
    ep_ = std::move(*ep);
    // The peer seals with our rx keys.
    peer_ = std::make_unique<RecordCipher>();
    ASSERT_TRUE(
        peer_->Init(keys_.cipher, keys_.Mirror().Traffic().tx, RecordCipher::Mode::kSeal).ok());
  }
  void Send(uint8_t type, std::string_view content) {
    std::vector<uint8_t> rec(SealedRecordSize(content.size()));
    auto n = peer_->Seal(type, Bytes(content), rec);
    ASSERT_TRUE(n.ok()) << n.error().ToString();
    ASSERT_TRUE(kt::SendAll(raw_.get(), rec).ok());
  }
  static std::string Handshake(uint8_t type, size_t body_len, size_t actual_len) {
    std::string m;
    m += static_cast<char>(type);
    m += static_cast<char>((body_len >> 16) & 0xff);
    m += static_cast<char>((body_len >> 8) & 0xff);
    m += static_cast<char>(body_len & 0xff);
    m += std::string(actual_len, 't');
    return m;
  }

  RawKeys keys_;
  OwnedFd raw_;
  std::unique_ptr<Endpoint> ep_;
  std::unique_ptr<RecordCipher> peer_;
};

TEST_F(ControlRecordTest, TicketsAndEmptyRecordsSkippedDataAndCloseNotify) {
  Send(kTlsContentHandshake, Handshake(4, 50, 50) + Handshake(4, 10, 10));  // two in one record
  Send(kTlsContentApplicationData, "");                                     // empty data record
  Send(kTlsContentApplicationData, "hello");
  Send(kTlsContentAlert, std::string("\x01\x00", 2));
  std::string data;
  IoResult r = EpReadToEnd(*ep_, data);
  EXPECT_EQ(data, "hello");
  EXPECT_EQ(r.status, IoStatus::kEof) << Describe(r);
  EXPECT_FALSE(r.truncated);
  EXPECT_EQ(ep_->records()->tickets_skipped(), 2u);
  EXPECT_EQ(ep_->records()->rx_seq(), keys_.rx_seq + 4);
  // EOF is sticky; our direction still works.
  std::array<char, 4> buf{};
  EXPECT_EQ(ep_->Read(buf).status, IoStatus::kEof);
  EXPECT_TRUE(EpWriteAll(*ep_, "still").ok());
}

TEST_F(ControlRecordTest, FatalAlertIsReset) {
  Send(kTlsContentAlert, std::string("\x02\x28", 2));  // fatal handshake_failure
  std::string data;
  IoResult r = EpReadToEnd(*ep_, data);
  EXPECT_EQ(r.status, IoStatus::kReset) << Describe(r);
  EXPECT_NE(r.error.find("alert 40"), std::string::npos) << r.error;
}

TEST_F(ControlRecordTest, FragmentedTicketRejected) {
  Send(kTlsContentHandshake, Handshake(4, 100, 10));
  std::string data;
  IoResult r = EpReadToEnd(*ep_, data);
  EXPECT_EQ(r.status, IoStatus::kError);
  EXPECT_NE(r.error.find("fragmented"), std::string::npos) << r.error;
}

TEST_F(ControlRecordTest, OtherHandshakeMessageAndContentTypeRejected) {
  Send(kTlsContentHandshake, Handshake(13, 3, 3));  // CertificateRequest
  std::string data;
  IoResult r = EpReadToEnd(*ep_, data);
  EXPECT_EQ(r.status, IoStatus::kError);
  EXPECT_NE(r.error.find("unexpected post-handshake message type 13"), std::string::npos)
      << r.error;

  SetUp();
  Send(20, "\x01");  // change_cipher_spec as an inner type
  data.clear();
  r = EpReadToEnd(*ep_, data);
  EXPECT_EQ(r.status, IoStatus::kError);
  EXPECT_NE(r.error.find("unexpected inner content type 20"), std::string::npos) << r.error;
}

TEST_F(ControlRecordTest, EndlessEmptyRecordsAreBounded) {
  for (uint32_t i = 0; i <= RecordLayer::kMaxEmptyRecords; ++i) {
    Send(kTlsContentApplicationData, "");
  }
  std::string data;
  IoResult r = EpReadToEnd(*ep_, data);
  EXPECT_EQ(r.status, IoStatus::kError);
  EXPECT_NE(r.error.find("too many records without application data"), std::string::npos)
      << r.error;
}

TEST_F(ControlRecordTest, TcpEofMidRecordIsTruncation) {
  std::vector<uint8_t> rec(SealedRecordSize(100));
  ASSERT_TRUE(peer_->Seal(kTlsContentApplicationData, Bytes(std::string(100, 'z')), rec).ok());
  ASSERT_TRUE(kt::SendAll(raw_.get(), std::span<const uint8_t>(rec).first(50)).ok());
  ::shutdown(raw_.get(), SHUT_WR);
  std::string data;
  IoResult r = EpReadToEnd(*ep_, data);
  EXPECT_EQ(data, "");
  EXPECT_EQ(r.status, IoStatus::kEof);
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(ep_->records()->buffered_bytes(), 0u);
}

// A writer blocked mid-record keeps the sealed tail and finishes it on the retry; the reader
// gets every byte in order.
TEST_F(ControlRecordTest, PartialWritesResumeOnRetry) {
  int small = 4096;
  ::setsockopt(ep_->fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  auto peer_keys = keys_.Mirror();
  auto peer_ep = Endpoint::Records(std::move(raw_), peer_keys.Traffic());
  ASSERT_TRUE(peer_ep.ok());
  testing::Prng prng(77);
  const std::string payload = prng.Bytes(4 << 20);
  std::promise<std::string> got_p;
  auto got_f = got_p.get_future();
  std::thread reader([&] {
    auto got = EpReadExactly(**peer_ep, payload.size(), 60s);
    got_p.set_value(got.ok() ? *got : "error: " + got.error().ToString());
  });
  size_t want_writes = 0;
  auto deadline = Clock::now() + 60s;
  std::string_view rest = payload;
  bool saw_buffered = false;
  while (!rest.empty() && Clock::now() < deadline) {
    IoResult r = ep_->Write({rest.data(), rest.size()});
    if (r.status == IoStatus::kOk) {
      rest.remove_prefix(r.bytes);
      continue;
    }
    ASSERT_EQ(r.status, IoStatus::kWantWrite) << Describe(r);
    ++want_writes;
    saw_buffered |= ep_->records()->buffered_bytes() > 0;
    WaitFd(ep_->fd(), POLLOUT, deadline);
  }
  reader.join();
  EXPECT_TRUE(rest.empty());
  EXPECT_EQ(got_f.get() == payload, true);
  EXPECT_GT(want_writes, 0u);
  EXPECT_TRUE(saw_buffered);
  EXPECT_EQ(ep_->records()->buffered_bytes(), 0u);
}

// Half-close: the peer's close_notify arrives while one of our records is only partly sent;
// the read side ends cleanly and the write side still finishes its record and the stream.
TEST_F(ControlRecordTest, CloseNotifyWhileWritePendingKeepsWriteSide) {
  int small = 4096;
  ::setsockopt(ep_->fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  auto peer = Endpoint::Records(std::move(raw_), keys_.Mirror().Traffic());
  ASSERT_TRUE(peer.ok());
  testing::Prng prng(78);
  const std::string payload = prng.Bytes(2 << 20);
  std::string_view rest = payload;
  IoResult r;
  for (int i = 0; i < 100000; ++i) {
    r = ep_->Write({rest.data(), rest.size()});
    if (r.status != IoStatus::kOk) break;
    rest.remove_prefix(r.bytes);
  }
  ASSERT_EQ(r.status, IoStatus::kWantWrite) << Describe(r);
  ASSERT_GT(ep_->records()->buffered_bytes(), 0u);
  ASSERT_TRUE(EpShutdownWrite(**peer).ok());
  std::string none;
  IoResult end = EpReadToEnd(*ep_, none);
  EXPECT_EQ(end.status, IoStatus::kEof) << Describe(end);
  EXPECT_FALSE(end.truncated);
  EXPECT_GT(ep_->records()->buffered_bytes(), 0u);  // the pending record survived

  std::string got;
  IoResult peer_end;
  std::thread reader([&] { peer_end = EpReadToEnd(**peer, got, 60s); });
  auto w = EpWriteAll(*ep_, rest, 60s);
  auto sd = EpShutdownWrite(*ep_);
  reader.join();
  ASSERT_TRUE(w.ok()) << w.error().ToString();
  ASSERT_TRUE(sd.ok()) << sd.error().ToString();
  EXPECT_EQ(peer_end.status, IoStatus::kEof) << Describe(peer_end);
  EXPECT_FALSE(peer_end.truncated);
  EXPECT_TRUE(got == payload) << got.size() << " of " << payload.size() << " bytes";
  EXPECT_EQ(ep_->records()->buffered_bytes(), 0u);
}

// ---- SwitchToRecords on an OpenSSL endpoint ----

TEST(RecordSwitchTest, RefusedWhileOpensslHoldsBytesThenSucceeds) {
  auto pair = kt::MakeTlsPair({});
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  SSL* client = pair->client.ssl.get();
  std::unique_ptr<Endpoint> ep =
      Endpoint::Tls(std::move(pair->server.fd), std::move(pair->server.ssl));
  ASSERT_TRUE(kt::SslWriteAll(client, Bytes("0123456789")).ok());
  auto first = EpReadExactly(*ep, 1);
  ASSERT_TRUE(first.ok());
  auto refused = ep->SwitchToRecords();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition) << refused.error().ToString();
  EXPECT_NE(ep->ssl(), nullptr);
  auto rest = EpReadExactly(*ep, 9);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(*first + *rest, "0123456789");
  ASSERT_TRUE(ep->SwitchToRecords().ok());
  EXPECT_EQ(ep->ssl(), nullptr);
  EXPECT_TRUE(ep->is_records());
  EXPECT_FALSE(ep->SwitchToRecords().ok());
  ASSERT_TRUE(kt::SslWriteAll(client, Bytes("after switch")).ok());
  auto after = EpReadExactly(*ep, 12);
  ASSERT_TRUE(after.ok()) << after.error().ToString();
  EXPECT_EQ(*after, "after switch");
  ASSERT_TRUE(EpWriteAll(*ep, "pong").ok());
  std::array<uint8_t, 4> pong{};
  ASSERT_TRUE(kt::SslReadExact(client, pong).ok());
  EXPECT_EQ(std::string(pong.begin(), pong.end()), "pong");
}

// ---- relay: plain -> records -> records -> plain (vs OpenSSL endpoints) ----

struct RelayCase {
  CipherCase cipher;
  bool records;
};

class RecordRelayTest : public ::testing::TestWithParam<RelayCase> {};

TEST_P(RecordRelayTest, StreamThroughTwoRelaysHashesMatch) {
  const RelayCase& c = GetParam();
  const size_t total = (kSanitized ? size_t{64} : size_t{256}) << 20;
  kt::PairOptions opts;
  opts.ciphersuite = c.cipher.suite;
  auto pair = kt::MakeTlsPair(opts);
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  std::unique_ptr<Endpoint> tls_client, tls_server;
  if (c.records) {
    tls_client = SwitchSide(pair->client);
    tls_server = SwitchSide(pair->server);
  } else {
    tls_client = Endpoint::Tls(std::move(pair->client.fd), std::move(pair->client.ssl));
    tls_server = Endpoint::Tls(std::move(pair->server.fd), std::move(pair->server.ssl));
  }
  ASSERT_TRUE(tls_client && tls_server);
  auto src = SocketPair();   // [0] the sending application, [1] relay 1's plain side
  auto sink = SocketPair();  // [0] relay 2's plain side, [1] the receiving application

  auto group = LoopGroup::Start(2);
  ASSERT_TRUE(group.ok());
  std::promise<RelayStats> s1, s2;
  auto f1 = s1.get_future(), f2 = s2.get_future();
  StartRelay((*group)->at(0), Endpoint::Plain(std::move(src[1])), std::move(tls_client), {},
             [&](const RelayStats& st) { s1.set_value(st); });
  StartRelay((*group)->at(1), std::move(tls_server), Endpoint::Plain(std::move(sink[0])), {},
             [&](const RelayStats& st) { s2.set_value(st); });

  std::promise<std::string> sink_digest_p;
  auto sink_digest = sink_digest_p.get_future();
  auto start = Clock::now();
  std::thread receiver([&] {
    int fd = sink[1].get();
    EvpMdCtxPtr md(EVP_MD_CTX_new());
    EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
    std::vector<char> buf(1 << 20);
    size_t got = 0;
    for (;;) {
      if (!WaitFd(fd, POLLIN, Clock::now() + 60s)) break;
      ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      EVP_DigestUpdate(md.get(), buf.data(), static_cast<size_t>(n));
      got += static_cast<size_t>(n);
    }
    unsigned char out[32];
    unsigned len = 0;
    EVP_DigestFinal_ex(md.get(), out, &len);
    ::shutdown(fd, SHUT_WR);  // the reverse direction ends too: close_notify flows back
    sink_digest_p.set_value(
        testing::Sha256Hex(std::string_view(reinterpret_cast<const char*>(out), len)) + "/" +
        std::to_string(got));
  });

  EvpMdCtxPtr md(EVP_MD_CTX_new());
  EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
  testing::Prng prng(1234);
  std::string chunk(1 << 20, '\0');
  size_t sent = 0;
  bool ok = true;
  while (sent < total && ok) {
    size_t n = std::min(chunk.size(), total - sent);
    prng.Fill(chunk.data(), n);
    EVP_DigestUpdate(md.get(), chunk.data(), n);
    ok = testing::SendAll(src[0].get(), std::string_view(chunk.data(), n), 60s);
    sent += n;
  }
  ::shutdown(src[0].get(), SHUT_WR);
  auto back = testing::RecvUntilEof(src[0].get(), 120s);
  std::string sink_result = sink_digest.get();
  auto elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  receiver.join();
  ASSERT_TRUE(ok);
  unsigned char out[32];
  unsigned len = 0;
  EVP_DigestFinal_ex(md.get(), out, &len);
  std::string client_hex =
      testing::Sha256Hex(std::string_view(reinterpret_cast<const char*>(out), len));
  EXPECT_EQ(sink_result, client_hex + "/" + std::to_string(total));
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(*back, "");  // clean EOF back through both relays
  ASSERT_EQ(f1.wait_for(60s), std::future_status::ready);
  ASSERT_EQ(f2.wait_for(60s), std::future_status::ready);
  RelayStats st1 = f1.get(), st2 = f2.get();
  for (const RelayStats* st : {&st1, &st2}) {
    EXPECT_EQ(st->error, "");
    EXPECT_EQ(st->a_to_b_bytes, total);
    EXPECT_EQ(st->b_to_a_bytes, 0u);
    EXPECT_FALSE(st->a_truncated || st->b_truncated);  // close_notify, not a bare FIN
    EXPECT_FALSE(st->spliced);
  }
  std::printf("[ INFO ] plain->%s->%s->plain %s: %zu MiB in %.2f s = %.0f MB/s%s\n",
              c.records ? "records" : "openssl", c.records ? "records" : "openssl", c.cipher.name,
              total >> 20, elapsed, static_cast<double>(total) / elapsed / 1e6,
              kSanitized ? " (sanitized build)" : "");
}

std::vector<RelayCase> AllRelayCases() {
  std::vector<RelayCase> out;
  for (const CipherCase& c : kCiphers) {
    out.push_back({c, true});
    out.push_back({c, false});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Chain, RecordRelayTest, ::testing::ValuesIn(AllRelayCases()),
                         [](const auto& tp) {
                           return std::string(tp.param.records ? "Records_" : "Openssl_") +
                                  tp.param.cipher.name;
                         });

// ---- memory per idle endpoint ----

// Non-blocking handshake of a client/server SSL pair over a socketpair, in one thread.
bool Handshake(SSL* client, SSL* server) {
  int c_rc = 0, s_rc = 0;
  for (int i = 0; i < 1000 && (c_rc != 1 || s_rc != 1); ++i) {
    if (c_rc != 1) c_rc = SSL_do_handshake(client);
    if (s_rc != 1) s_rc = SSL_do_handshake(server);
    if (c_rc != 1 && SSL_get_error(client, c_rc) != SSL_ERROR_WANT_READ) return false;
    if (s_rc != 1 && SSL_get_error(server, s_rc) != SSL_ERROR_WANT_READ) return false;
  }
  return c_rc == 1 && s_rc == 1;
}

// 1,000 idle endpoints (500 connections, both ends) after a small exchange each way: the heap
// they hold as OpenSSL endpoints, then after SwitchToRecords and another exchange.
TEST(RecordMemoryTest, IdleEndpointHeap) {
  constexpr size_t kConns = 500;
  testing::RaiseFdLimit(16384);
  testing::TestCa ca("ca");
  auto sctx = testing::ServerContext(ca.Issue("server"), ca);
  auto cctx = testing::ClientContext(ca.Issue("client"), ca);
  ASSERT_TRUE(ktls::PrepareContextForKtls(sctx.get()).ok());
  ASSERT_TRUE(ktls::PrepareContextForKtls(cctx.get()).ok());
  std::vector<std::unique_ptr<Endpoint>> eps;  // [2i] client, [2i+1] server
  eps.reserve(2 * (kConns + 8));
  const std::string ping(100, 'p'), pong(100, 'q');
  auto connect = [&]() -> bool {
    auto fds = SocketPair();
    SslPtr c(SSL_new(cctx.get())), s(SSL_new(sctx.get()));
    if (!c || !s) return false;
    testing::SetNonBlocking(fds[0].get());
    testing::SetNonBlocking(fds[1].get());
    SSL_set_fd(c.get(), fds[0].get());
    SSL_set_fd(s.get(), fds[1].get());
    SSL_set_connect_state(c.get());
    SSL_set_accept_state(s.get());
    if (!Handshake(c.get(), s.get())) return false;
    eps.push_back(Endpoint::Tls(std::move(fds[0]), std::move(c)));
    eps.push_back(Endpoint::Tls(std::move(fds[1]), std::move(s)));
    return true;
  };
  auto exchange = [&](size_t i) -> bool {
    Endpoint& cl = *eps[2 * i];
    Endpoint& sv = *eps[2 * i + 1];
    if (!EpWriteAll(cl, ping).ok()) return false;
    auto a = EpReadExactly(sv, ping.size());
    if (!a.ok() || *a != ping || !EpWriteAll(sv, pong).ok()) return false;
    auto b = EpReadExactly(cl, pong.size());
    return b.ok() && *b == pong;
  };
  for (size_t i = 0; i < 8; ++i) {  // warm-up connections (not counted), kept open
    ASSERT_TRUE(connect());
    ASSERT_TRUE(exchange(i));
    ASSERT_TRUE(eps[2 * i]->SwitchToRecords().ok());
    ASSERT_TRUE(eps[2 * i + 1]->SwitchToRecords().ok());
    ASSERT_TRUE(exchange(i));
  }
  size_t heap0 = HeapBytes();
  for (size_t i = 8; i < kConns + 8; ++i) {
    ASSERT_TRUE(connect()) << "connection " << i;
    ASSERT_TRUE(exchange(i)) << "connection " << i;
  }
  size_t heap_tls = HeapBytes();
  for (size_t i = 8; i < kConns + 8; ++i) {
    auto sc = eps[2 * i]->SwitchToRecords();
    ASSERT_TRUE(sc.ok()) << sc.error().ToString();
    auto ss = eps[2 * i + 1]->SwitchToRecords();
    ASSERT_TRUE(ss.ok()) << ss.error().ToString();
    ASSERT_TRUE(exchange(i)) << "connection " << i;
  }
  size_t heap_rec = HeapBytes();
  size_t buffered = 0, tickets = 0;
  for (const auto& ep : eps) {
    buffered += ep->records()->buffered_bytes();
    tickets += ep->records()->tickets_skipped();
  }
  const double n = 2.0 * kConns;
  double per_tls = (static_cast<double>(heap_tls) - static_cast<double>(heap0)) / n;
  double per_rec = (static_cast<double>(heap_rec) - static_cast<double>(heap0)) / n;
  std::printf(
      "[ INFO ] %zu idle endpoints: OpenSSL endpoint %.0f bytes of heap each, records endpoint "
      "%.0f bytes each (%zu tickets skipped after the switch)%s\n",
      2 * kConns, per_tls, per_rec, tickets,
      kSanitized ? " (ASan allocator count)" : " (mallinfo2)");
  EXPECT_EQ(buffered, 0u);
  EXPECT_LT(per_rec, 6.0 * 1024);
}

}  // namespace
}  // namespace sigil::dataplane
