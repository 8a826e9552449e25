#include "core/keys.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>

#include "common/encoding.h"

namespace sigil::core {
namespace {

class KeyTypes : public ::testing::TestWithParam<KeyType> {};

TEST_P(KeyTypes, GenerateSignVerifyAndRoundTrip) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key.ok()) << key.error().ToString();
  EXPECT_EQ(key->type(), GetParam());
  auto msg = AsBytes("attested payload");
  const EVP_MD* md = DefaultDigestFor(key->type());
  auto sig = key->Sign(msg, md);
  ASSERT_TRUE(sig.ok()) << sig.error().ToString();
  EXPECT_TRUE(VerifySignature(key->Public(), msg, *sig, md).ok());
  auto tampered = *sig;
  tampered[tampered.size() / 2] ^= 1;
  auto bad = VerifySignature(key->Public(), msg, tampered, md);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kUnauthenticated);

  // PKCS#8 DER and PEM round trips keep the same key.
  auto der = key->ToPkcs8Der();
  ASSERT_TRUE(der.ok());
  auto back = PrivateKey::FromPkcs8Der(der->span());
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->Public().Equals(key->Public()));
  auto pem = key->ToPkcs8Pem();
  ASSERT_TRUE(pem.ok());
  EXPECT_TRUE(pem->view().starts_with("-----BEGIN PRIVATE KEY-----"));
  auto back_pem = PrivateKey::FromPem(pem->view());
  ASSERT_TRUE(back_pem.ok());
  EXPECT_EQ(back_pem->Public().Fingerprint(), key->Public().Fingerprint());

  // The public key round-trips through SPKI DER/PEM and never carries private material.
  PublicKey pub = key->Public();
  auto from_der = PublicKey::FromDer(pub.ToDer());
  ASSERT_TRUE(from_der.ok());
  EXPECT_TRUE(from_der->Equals(pub));
  EXPECT_EQ(pub.ToPem().find("PRIVATE"), std::string::npos);
  EXPECT_EQ(pub.Fingerprint().size(), 64u);
}

INSTANTIATE_TEST_SUITE_P(All, KeyTypes,
                         ::testing::Values(KeyType::kEcP256, KeyType::kEcP384, KeyType::kEcP521,
                                           KeyType::kRsa2048, KeyType::kEd25519),
                         [](const ::testing::TestParamInfo<KeyType>& p) {
                           std::string n(KeyTypeName(p.param));
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

TEST(Keys, RsaPss) {
  auto key = PrivateKey::Generate(KeyType::kRsa2048);
  ASSERT_TRUE(key.ok());
  auto msg = AsBytes("x");
  auto sig = key->Sign(msg, EVP_sha256(), /*rsa_pss=*/true);
  ASSERT_TRUE(sig.ok());
  EXPECT_TRUE(VerifySignature(key->Public(), msg, *sig, EVP_sha256(), true).ok());
  EXPECT_FALSE(VerifySignature(key->Public(), msg, *sig, EVP_sha256(), false).ok());
}

TEST(Keys, ParseKeyTypeNamesEveryType) {
  for (auto name :
       {"ec-p256", "ec-p384", "ec-p521", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"}) {
    auto t = ParseKeyType(name);
    ASSERT_TRUE(t.ok()) << name;
    EXPECT_EQ(KeyTypeName(*t), name);
  }
  auto bad = ParseKeyType("dsa-1024");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("dsa-1024"), std::string::npos);
}

TEST(Keys, RejectsMalformedAndDisallowedInput) {
  EXPECT_FALSE(PrivateKey::FromPem("").ok());
  EXPECT_FALSE(
      PrivateKey::FromPem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").ok());
  std::vector<uint8_t> junk(100, 0x30);
  EXPECT_FALSE(PrivateKey::FromPkcs8Der(junk).ok());
  EXPECT_FALSE(PublicKey::FromDer(junk).ok());
  std::string huge(kMaxKeyInputBytes + 1, 'A');
  auto big = PrivateKey::FromPem(huge);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message().find("too large"), std::string::npos);

  // A 1024-bit RSA key is classified as not allowed.
  EvpPkeyPtr small(EVP_RSA_gen(1024));
  ASSERT_TRUE(small);
  auto cls = ClassifyKey(small.get());
  ASSERT_FALSE(cls.ok());
  EXPECT_NE(cls.error().message().find("1024"), std::string::npos);

  // Trailing bytes after a valid DER key are rejected.
  auto key = PrivateKey::Generate(KeyType::kEcP256);
  ASSERT_TRUE(key.ok());
  auto der = key->Public().ToDer();
  der.push_back(0);
  EXPECT_FALSE(PublicKey::FromDer(der).ok());
}

TEST(Keys, EncryptedPemIsRefusedNotPrompted) {
  auto key = PrivateKey::Generate(KeyType::kEcP256);
  ASSERT_TRUE(key.ok());
  BioPtr bio(BIO_new(BIO_s_mem()));
  char pass[] = "pw";
  ASSERT_EQ(PEM_write_bio_PKCS8PrivateKey(bio.get(), key->get(), EVP_aes_256_cbc(), pass, 2,
                                          nullptr, nullptr),
            1);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  auto parsed = PrivateKey::FromPem(std::string_view(data, static_cast<size_t>(len)));
  EXPECT_FALSE(parsed.ok());
}

}  // namespace
}  // namespace sigil::core
