// Host tests of sigil_ktls: HKDF-Expand-Label against RFC 8448, the exported keys and sequence
// numbers checked against real OpenSSL records (decrypted / forged in user space), the
// refusals, and EnableKernelTls on a kernel without the tls ULP. The kernel path itself runs in
// the QEMU guest (tests/vm/run_ktls_vm.sh).
#include "dataplane/ktls/ktls.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/socket.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/ossl.h"
#include "dataplane/ktls/test_tls_pair.h"

namespace sigil::dataplane::ktls {
namespace {

using testing::MakeTlsPair;
using testing::PairOptions;

std::vector<uint8_t> Hex(std::string_view hex) {
  std::vector<uint8_t> out;
  std::string digits;
  for (char c : hex) {
    if (c != ' ') digits.push_back(c);
  }
  for (size_t i = 0; i + 1 < digits.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(digits.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::vector<uint8_t> Vec(const SecretBytes& s) { return {s.data(), s.data() + s.size()}; }

struct Rfc8448Case {
  const char* name;
  const char* secret;
  const char* key;
  const char* iv;
};

// RFC 8448 section 3 (simple 1-RTT handshake, TLS_AES_128_GCM_SHA256).
TEST(HkdfExpandLabel, Rfc8448TrafficKeys) {
  const Rfc8448Case cases[] = {
      {"server handshake",
       "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 "
       "ad 38",
       "3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc", "5d 31 3e b2 67 12 76 ee 13 00 0b 30"},
      {"server application",
       "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 "
       "16 43",
       "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56", "cf 78 2b 88 dd 83 54 9a ad f1 e9 84"},
      {"client application",
       "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 "
       "04 a5",
       "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51", "5b 78 92 3d ee 08 57 90 33 e5 23 d9"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<uint8_t> secret = Hex(c.secret);
    auto key = HkdfExpandLabel(EVP_sha256(), secret, "key", {}, 16);
    auto iv = HkdfExpandLabel(EVP_sha256(), secret, "iv", {}, 12);
    ASSERT_TRUE(key.ok()) << key.error().ToString();
    ASSERT_TRUE(iv.ok()) << iv.error().ToString();
    EXPECT_EQ(Vec(*key), Hex(c.key));
    EXPECT_EQ(Vec(*iv), Hex(c.iv));
  }
}

TEST(HkdfExpandLabel, RejectsBadArguments) {
  std::vector<uint8_t> secret(32, 1);
  EXPECT_FALSE(HkdfExpandLabel(nullptr, secret, "key", {}, 16).ok());
  EXPECT_FALSE(HkdfExpandLabel(EVP_sha256(), {}, "key", {}, 16).ok());
  EXPECT_FALSE(HkdfExpandLabel(EVP_sha256(), secret, "key", {}, 0).ok());
  EXPECT_FALSE(HkdfExpandLabel(EVP_sha256(), secret, std::string(250, 'x'), {}, 16).ok());
}

const EVP_CIPHER* AeadOf(KtlsCipher c) {
  switch (c) {
    case KtlsCipher::kAes128Gcm:
      return EVP_aes_128_gcm();
    case KtlsCipher::kAes256Gcm:
      return EVP_aes_256_gcm();
    case KtlsCipher::kChacha20Poly1305:
      return EVP_chacha20_poly1305();
  }
  return nullptr;
}

std::vector<uint8_t> Nonce(const DirectionKeys& k, uint64_t seq) {
  std::vector<uint8_t> nonce(k.iv.data(), k.iv.data() + k.iv.size());
  for (int i = 0; i < 8; ++i) nonce[11 - i] ^= static_cast<uint8_t>(seq >> (8 * i));
  return nonce;
}

// Decrypts one TLS 1.3 record (header included) with `k` at sequence `seq`: returns the inner
// plaintext including the content type byte, or an empty vector if authentication fails.
std::vector<uint8_t> OpenRecord(KtlsCipher cipher, const DirectionKeys& k, uint64_t seq,
                                const std::vector<uint8_t>& record) {
  constexpr size_t kTag = 16;
  if (record.size() < 5 + kTag) return {};
  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  std::vector<uint8_t> nonce = Nonce(k, seq);
  std::vector<uint8_t> out(record.size());
  int len = 0;
  int total = 0;
  size_t body = record.size() - 5 - kTag;
  bool ok =
      EVP_DecryptInit_ex(ctx.get(), AeadOf(cipher), nullptr, k.key.data(), nonce.data()) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, record.data(), 5) == 1 &&
      EVP_DecryptUpdate(ctx.get(), out.data(), &len, record.data() + 5, static_cast<int>(body)) ==
          1;
  total = len;
  std::vector<uint8_t> tag(record.end() - kTag, record.end());
  ok = ok && EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, kTag, tag.data()) == 1 &&
       EVP_DecryptFinal_ex(ctx.get(), out.data() + total, &len) == 1;
  if (!ok) return {};
  out.resize(static_cast<size_t>(total + len));
  return out;
}

// Builds a TLS 1.3 application-data record for `plaintext` with `k` at sequence `seq`.
std::vector<uint8_t> SealRecord(KtlsCipher cipher, const DirectionKeys& k, uint64_t seq,
                                std::string_view plaintext) {
  constexpr size_t kTag = 16;
  std::vector<uint8_t> inner(plaintext.begin(), plaintext.end());
  inner.push_back(23);
  size_t body = inner.size() + kTag;
  std::vector<uint8_t> record(5 + body);
  record[0] = 23;  // application_data, legacy version 3.3
  record[1] = 3;
  record[2] = 3;
  record[3] = static_cast<uint8_t>(body >> 8);
  record[4] = static_cast<uint8_t>(body & 0xff);
  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  std::vector<uint8_t> nonce = Nonce(k, seq);
  int len = 0;
  EXPECT_EQ(EVP_EncryptInit_ex(ctx.get(), AeadOf(cipher), nullptr, k.key.data(), nonce.data()), 1);
  EXPECT_EQ(EVP_EncryptUpdate(ctx.get(), nullptr, &len, record.data(), 5), 1);
  EXPECT_EQ(EVP_EncryptUpdate(ctx.get(), record.data() + 5, &len, inner.data(),
                              static_cast<int>(inner.size())),
            1);
  EXPECT_EQ(EVP_EncryptFinal_ex(ctx.get(), record.data() + 5 + len, &len), 1);
  EXPECT_EQ(
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, kTag, record.data() + 5 + inner.size()),
      1);
  return record;
}

std::vector<uint8_t> ReadRawRecord(int fd) {
  std::vector<uint8_t> record(5);
  if (!testing::RecvExact(fd, record).ok()) return {};
  size_t body = (size_t{record[3]} << 8) | record[4];
  record.resize(5 + body);
  if (!testing::RecvExact(fd, std::span(record).subspan(5)).ok()) return {};
  return record;
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class ExportedKeys : public ::testing::TestWithParam<const char*> {};

// The exported keys and sequence numbers, proven against OpenSSL's own record layer in both
// directions: the server's tickets and a "READY" record are counted, OpenSSL's records decrypt
// with the exported keys, and records we seal with them are accepted by OpenSSL.
TEST_P(ExportedKeys, MatchOpenSslRecords) {
  PairOptions options;
  options.ciphersuite = GetParam();
  auto pair = MakeTlsPair(options);
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  SSL* server = pair->server.ssl.get();
  SSL* client = pair->client.ssl.get();
  ASSERT_TRUE(testing::SslWriteAll(server, Bytes("READY")).ok());
  std::string ready(5, '\0');
  ASSERT_TRUE(
      testing::SslReadExact(client, {reinterpret_cast<uint8_t*>(ready.data()), ready.size()}).ok());
  EXPECT_EQ(ready, "READY");

  auto ck = ExportTrafficKeys(client);
  ASSERT_TRUE(ck.ok()) << ck.error().ToString();
  auto sk = ExportTrafficKeys(server);
  ASSERT_TRUE(sk.ok()) << sk.error().ToString();
  EXPECT_EQ(KtlsCipherName(ck->cipher), GetParam());
  // Two NewSessionTickets plus READY went server -> client; nothing client -> server.
  EXPECT_EQ(sk->tx.seq, 3u);
  EXPECT_EQ(ck->rx.seq, 3u);
  EXPECT_EQ(ck->tx.seq, 0u);
  EXPECT_EQ(sk->rx.seq, 0u);
  EXPECT_EQ(Vec(ck->rx.key), Vec(sk->tx.key));
  EXPECT_EQ(Vec(ck->tx.iv), Vec(sk->rx.iv));

  // Server OpenSSL record (seq 3) -> raw bytes at the client -> decrypt with the client's keys.
  ASSERT_TRUE(testing::SslWriteAll(server, Bytes("from openssl")).ok());
  std::vector<uint8_t> rec = ReadRawRecord(pair->client.fd.get());
  std::vector<uint8_t> plain = OpenRecord(ck->cipher, ck->rx, ck->rx.seq, rec);
  std::string expected = "from openssl";
  expected.push_back(23);
  EXPECT_EQ(std::string(plain.begin(), plain.end()), expected);

  // A record sealed with the server's TX keys at seq 3 is what OpenSSL's client expects next
  // (it never saw the raw record above).
  std::vector<uint8_t> forged = SealRecord(sk->cipher, sk->tx, sk->tx.seq, "from kernel");
  ASSERT_TRUE(testing::SendAll(pair->server.fd.get(), forged).ok());
  std::string got(11, '\0');
  ASSERT_TRUE(
      testing::SslReadExact(client, {reinterpret_cast<uint8_t*>(got.data()), got.size()}).ok());
  EXPECT_EQ(got, "from kernel");

  // Client -> server: OpenSSL's first application record decrypts at the exported seq 0.
  ASSERT_TRUE(testing::SslWriteAll(client, Bytes("up")).ok());
  rec = ReadRawRecord(pair->server.fd.get());
  plain = OpenRecord(sk->cipher, sk->rx, sk->rx.seq, rec);
  EXPECT_EQ(std::string(plain.begin(), plain.end()), std::string("up\x17"));
}

INSTANTIATE_TEST_SUITE_P(Ciphers, ExportedKeys,
                         ::testing::Values("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                           "TLS_CHACHA20_POLY1305_SHA256"));

TEST(ExportTrafficKeys, CountsTicketsWrittenInsideSslAccept) {
  for (int tickets : {0, 2, 5}) {
    SCOPED_TRACE(tickets);
    PairOptions options;
    options.num_tickets = tickets;
    auto pair = MakeTlsPair(options);
    ASSERT_TRUE(pair.ok()) << pair.error().ToString();
    auto sk = ExportTrafficKeys(pair->server.ssl.get());
    ASSERT_TRUE(sk.ok()) << sk.error().ToString();
    EXPECT_EQ(sk->tx.seq, static_cast<uint64_t>(tickets));
    EXPECT_EQ(sk->rx.seq, 0u);
  }
}

TEST(ExportTrafficKeys, RefusesBufferedRecords) {
  auto pair = MakeTlsPair(PairOptions{});
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  ASSERT_TRUE(testing::SslWriteAll(pair->server.ssl.get(), Bytes("READYREADY")).ok());
  uint8_t buf[5];
  ASSERT_TRUE(testing::SslReadExact(pair->client.ssl.get(), buf).ok());
  auto k = ExportTrafficKeys(pair->client.ssl.get());
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.error().code(), ErrorCode::kFailedPrecondition) << k.error().ToString();
  auto e = EnableKernelTls(pair->client.fd.get(), pair->client.ssl.get());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code(), ErrorCode::kFailedPrecondition);
  // Refusal leaves the connection usable through OpenSSL.
  ASSERT_TRUE(testing::SslReadExact(pair->client.ssl.get(), buf).ok());
  EXPECT_EQ(std::string(buf, buf + 5), "READY");
  EXPECT_TRUE(ExportTrafficKeys(pair->client.ssl.get()).ok());
  auto again = ExportTrafficKeys(pair->client.ssl.get());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kFailedPrecondition);
}

TEST(ExportTrafficKeys, RefusesUnpreparedContextAndTls12) {
  PairOptions unprepared;
  unprepared.prepare = false;
  auto pair = MakeTlsPair(unprepared);
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  auto k = ExportTrafficKeys(pair->server.ssl.get());
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(k.error().message().find("PrepareContextForKtls"), std::string::npos);

  PairOptions tls12;
  tls12.tls12 = true;
  auto pair12 = MakeTlsPair(tls12);
  ASSERT_TRUE(pair12.ok()) << pair12.error().ToString();
  auto k12 = ExportTrafficKeys(pair12->client.ssl.get());
  ASSERT_FALSE(k12.ok());
  EXPECT_EQ(k12.error().code(), ErrorCode::kFailedPrecondition);
}

TEST(PrepareContextForKtls, RefusesForeignKeylogCallback) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  ASSERT_TRUE(ctx);
  SSL_CTX_set_keylog_callback(ctx.get(), [](const SSL*, const char*) {});
  auto r = PrepareContextForKtls(ctx.get());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
}

// On the development host the kernel has no tls ULP: EnableKernelTls must say so and leave the
// connection to OpenSSL. Where the ULP exists (the QEMU guest) the same call must succeed.
TEST(EnableKernelTls, MatchesKernelSupport) {
  auto pair = MakeTlsPair(PairOptions{});
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  auto st = EnableKernelTls(pair->server.fd.get(), pair->server.ssl.get());
  if (KernelTlsSupported()) {
    ASSERT_TRUE(st.ok()) << st.error().ToString();
    EXPECT_TRUE(st->tx && st->rx);
    return;
  }
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(st.error().message().find("kernel has no tls ULP"), std::string::npos)
      << st.error().message();
  ASSERT_TRUE(testing::SslWriteAll(pair->server.ssl.get(), Bytes("still tls")).ok());
  uint8_t buf[9];
  ASSERT_TRUE(testing::SslReadExact(pair->client.ssl.get(), buf).ok());
  EXPECT_EQ(std::string(buf, buf + 9), "still tls");
}

TEST(EnableKernelTls, RejectsMismatchedFd) {
  auto pair = MakeTlsPair(PairOptions{});
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  auto st = EnableKernelTls(pair->client.fd.get(), pair->server.ssl.get());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
}

TEST(ReadTlsStat, MatchesModuleState) {
  auto stat = ReadTlsStat();
  if (KernelTlsSupported()) {
    ASSERT_TRUE(stat.ok()) << stat.error().ToString();
    EXPECT_TRUE(stat->contains("TlsCurrTxSw"));
  } else {
    ASSERT_FALSE(stat.ok());
    EXPECT_EQ(stat.error().code(), ErrorCode::kUnavailable);
  }
}

}  // namespace
}  // namespace sigil::dataplane::ktls
