#include "core/csr.h"

#include <gtest/gtest.h>
#include <openssl/x509v3.h>

#include "core/ca.h"
#include "core/testing/pki_fixture.h"

namespace sigil::core {
namespace {

using testing::Id;
using testing::TestNow;

TEST(Csr, CreateParseVerify) {
  auto key = PrivateKey::Generate(KeyType::kEcP256);
  auto der = CreateCsrDer(*key);
  ASSERT_TRUE(der.ok());
  auto csr = Csr::ParseDer(*der);
  ASSERT_TRUE(csr.ok());
  auto pub = csr->Verify(KeyPolicy{});
  ASSERT_TRUE(pub.ok()) << pub.error().ToString();
  EXPECT_TRUE(pub->Equals(key->Public()));
  auto from_pem = Csr::ParsePem(CsrDerToPem(*der));
  ASSERT_TRUE(from_pem.ok());
  EXPECT_EQ(from_pem->ToDer(), *der);
}

TEST(Csr, TamperedSignatureIsRejected) {
  auto key = PrivateKey::Generate(KeyType::kEcP256);
  auto der = *CreateCsrDer(*key);
  // Flip a bit inside the subject (O=Sigil): still parses, no longer verifies.
  auto pos = std::search(der.begin(), der.end(), std::begin("Sigil"), std::end("Sigil") - 1);
  ASSERT_NE(pos, der.end());
  *pos ^= 0x01;
  auto csr = Csr::ParseDer(der);
  ASSERT_TRUE(csr.ok());
  auto pub = csr->Verify(KeyPolicy{});
  ASSERT_FALSE(pub.ok());
  EXPECT_NE(pub.error().message().find("signature"), std::string::npos);
}

TEST(Csr, KeyPolicyIsEnforced) {
  auto ed = PrivateKey::Generate(KeyType::kEd25519);
  auto csr = Csr::ParseDer(*CreateCsrDer(*ed));
  ASSERT_TRUE(csr.ok());
  auto refused = csr->Verify(KeyPolicy{});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("ed25519"), std::string::npos);
  KeyPolicy permissive;
  permissive.allowed.insert(KeyType::kEd25519);
  EXPECT_TRUE(csr->Verify(permissive).ok());

  // RSA-1024 is never acceptable (ClassifyKey refuses it).
  EvpPkeyPtr small(EVP_RSA_gen(1024));
  X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), small.get());
  ASSERT_GT(X509_REQ_sign(req.get(), small.get(), EVP_sha256()), 0);
  unsigned char* out = nullptr;
  int len = i2d_X509_REQ(req.get(), &out);
  std::vector<uint8_t> der(out, out + len);
  OPENSSL_free(out);
  auto weak = Csr::ParseDer(der);
  ASSERT_TRUE(weak.ok());
  auto weak_result = weak->Verify(permissive);
  ASSERT_FALSE(weak_result.ok());
  EXPECT_NE(weak_result.error().message().find("1024"), std::string::npos);
}

TEST(Csr, MalformedInput) {
  EXPECT_FALSE(Csr::ParseDer({}).ok());
  std::vector<uint8_t> junk(50, 0x30);
  EXPECT_FALSE(Csr::ParseDer(junk).ok());
  std::vector<uint8_t> huge(kMaxCsrBytes + 1, 0);
  EXPECT_FALSE(Csr::ParseDer(huge).ok());
  EXPECT_FALSE(Csr::ParsePem("not pem").ok());
  auto wrong_block =
      Csr::ParsePem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  ASSERT_FALSE(wrong_block.ok());
  EXPECT_NE(wrong_block.error().message().find("expected CERTIFICATE REQUEST"), std::string::npos);
  auto key = PrivateKey::Generate(KeyType::kEcP256);
  auto der = *CreateCsrDer(*key);
  der.push_back(0);
  EXPECT_FALSE(Csr::ParseDer(der).ok());  // trailing data
}

// The CSR asks for CA:TRUE and a foreign SPIFFE ID; the issuer ignores both.
TEST(Csr, RequestedExtensionsAreIgnoredByTheIssuer) {
  auto key = PrivateKey::Generate(KeyType::kEcP256);
  X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), key->get());
  STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
  sk_X509_EXTENSION_push(
      exts, X509V3_EXT_conf_nid(nullptr, nullptr, NID_basic_constraints, "critical,CA:TRUE"));
  sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name,
                                                   "URI:spiffe://example.org/admin"));
  X509_REQ_add_extensions(req.get(), exts);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  ASSERT_GT(X509_REQ_sign(req.get(), key->get(), EVP_sha256()), 0);
  unsigned char* out = nullptr;
  int len = i2d_X509_REQ(req.get(), &out);
  std::vector<uint8_t> der(out, out + len);
  OPENSSL_free(out);

  auto csr = Csr::ParseDer(der);
  ASSERT_TRUE(csr.ok());
  auto pub = csr->Verify(KeyPolicy{});
  ASSERT_TRUE(pub.ok());
  X509Ca ca = testing::MakeCa();
  auto svid = ca.IssueX509Svid({Id("spiffe://example.org/web"), *pub, {}, Seconds(60)}, TestNow());
  ASSERT_TRUE(svid.ok());
  EXPECT_FALSE(svid->leaf.IsCa());
  EXPECT_EQ(svid->leaf.UriSans(), std::vector<std::string>{"spiffe://example.org/web"});
}

}  // namespace
}  // namespace sigil::core
