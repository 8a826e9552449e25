// The DER-template issuance path: every leaf must be exactly what the X.509-SVID profile and
// OpenSSL's own encoder would produce, for each CA and leaf key type.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "common/encoding.h"
#include "core/ca.h"
#include "core/testing/pki_fixture.h"
#include "core/x509_svid.h"

namespace sigil::core {
namespace {

using testing::Id;
using testing::Td;
using testing::TestNow;

std::vector<uint8_t> I2dAlgor(const X509_ALGOR* a) {
  unsigned char* out = nullptr;
  int len = i2d_X509_ALGOR(a, &out);
  std::vector<uint8_t> der(out, out + (len > 0 ? len : 0));
  OPENSSL_free(out);
  return der;
}

std::vector<uint8_t> I2dPubkey(EVP_PKEY* key) {
  unsigned char* out = nullptr;
  int len = i2d_PUBKEY(key, &out);
  std::vector<uint8_t> der(out, out + (len > 0 ? len : 0));
  OPENSSL_free(out);
  return der;
}

// Fresh CAs per key type are slow for RSA; build each once.
const X509Ca& CaFor(KeyType type) {
  static std::map<KeyType, X509Ca>* cas = new std::map<KeyType, X509Ca>();  // test-lifetime cache
  auto it = cas->find(type);
  if (it == cas->end()) {
    auto ca = X509Ca::CreateSelfSigned({Td("example.org"), type, kDefaultCaTtl, kDefaultBackdate},
                                       TestNow());
    if (!ca.ok()) std::abort();
    it = cas->emplace(type, std::move(ca).value()).first;
  }
  return it->second;
}

class TemplateIssuance : public ::testing::TestWithParam<std::tuple<KeyType, KeyType>> {};

TEST_P(TemplateIssuance, LeafIsExactlyTheProfile) {
  auto [ca_type, leaf_type] = GetParam();
  const X509Ca& ca = CaFor(ca_type);
  PublicKey pub = PrivateKey::Generate(leaf_type)->Public();
  auto svid = ca.IssueX509Svid({Id("spiffe://example.org/ns/prod/sa/web"),
                                pub,
                                {"web.example.org", "*.svc.example.org"},
                                Seconds(3600)},
                               TestNow());
  ASSERT_TRUE(svid.ok()) << svid.error().ToString();
  const Certificate& leaf = svid->leaf;

  // The signed DER, the object's own encoding and a fresh parse all agree byte for byte.
  EXPECT_EQ(svid->der, leaf.ToDer());
  auto parsed = Certificate::FromDer(svid->der);
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(parsed->ToDer(), svid->der);
  EXPECT_EQ(parsed->Fingerprint(), leaf.Fingerprint());
  EXPECT_EQ(svid->chain.front().Fingerprint(), leaf.Fingerprint());

  // Signature by the CA, over what was sent; algorithm as OpenSSL's X509_sign writes it for the
  // CA key (the self-signed CA certificate was signed by X509_sign with the same key).
  EVP_PKEY* ca_pub = X509_get0_pubkey(ca.certificate().get());
  EXPECT_EQ(X509_verify(parsed->get(), ca_pub), 1);
  EXPECT_EQ(X509_verify(leaf.get(), ca_pub), 1);
  EXPECT_EQ(I2dAlgor(X509_get0_tbs_sigalg(parsed->get())),
            I2dAlgor(X509_get0_tbs_sigalg(ca.certificate().get())));
  const X509_ALGOR* outer = nullptr;
  X509_get0_signature(nullptr, &outer, parsed->get());
  EXPECT_EQ(I2dAlgor(outer), I2dAlgor(X509_get0_tbs_sigalg(parsed->get())));

  // Profile, read back from the parsed copy.
  EXPECT_EQ(X509_get_version(parsed->get()), X509_VERSION_3);
  EXPECT_EQ(parsed->UriSans(), std::vector<std::string>{"spiffe://example.org/ns/prod/sa/web"});
  EXPECT_EQ(parsed->DnsSans(), (std::vector<std::string>{"web.example.org", "*.svc.example.org"}));
  EXPECT_FALSE(parsed->IsCa());
  EXPECT_TRUE(CheckLeafProfile(*parsed).ok());
  bool rsa = leaf_type == KeyType::kRsa2048;
  EXPECT_EQ(
      X509_get_key_usage(parsed->get()),
      rsa ? uint32_t{KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT} : uint32_t{KU_DIGITAL_SIGNATURE});
  uint32_t xku = X509_get_extended_key_usage(parsed->get());
  EXPECT_TRUE((xku & XKU_SSL_SERVER) && (xku & XKU_SSL_CLIENT));
  EXPECT_EQ(parsed->NotBefore(), TestNow() - kDefaultBackdate);
  EXPECT_EQ(parsed->NotAfter(), TestNow() + Seconds(3600));
  EXPECT_EQ(X509_NAME_cmp(X509_get_issuer_name(parsed->get()),
                          X509_get_subject_name(ca.certificate().get())),
            0);
  char subject[64];
  EXPECT_EQ(std::string(
                X509_NAME_oneline(X509_get_subject_name(parsed->get()), subject, sizeof(subject))),
            "/O=Sigil");
  EXPECT_EQ(X509_check_issued(ca.certificate().get(), parsed->get()), X509_V_OK);

  // Key: the request's key, encoded as OpenSSL encodes it; SKID = SHA-1 of its bits; AKID =
  // the CA's SKID.
  EXPECT_TRUE(parsed->PublicKeyOf()->Equals(pub));
  EXPECT_TRUE(leaf.PublicKeyOf()->Equals(pub));
  unsigned char* spki = nullptr;
  int spki_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(parsed->get()), &spki);
  EXPECT_EQ(std::vector<uint8_t>(spki, spki + spki_len), I2dPubkey(pub.get()));
  OPENSSL_free(spki);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  ASSERT_EQ(X509_pubkey_digest(parsed->get(), EVP_sha1(), md, &md_len), 1);
  const ASN1_OCTET_STRING* skid = X509_get0_subject_key_id(parsed->get());
  ASSERT_NE(skid, nullptr);
  EXPECT_EQ(std::vector<uint8_t>(ASN1_STRING_get0_data(skid), ASN1_STRING_get0_data(skid) + 20),
            std::vector<uint8_t>(md, md + md_len));
  const ASN1_OCTET_STRING* akid = X509_get0_authority_key_id(parsed->get());
  const ASN1_OCTET_STRING* ca_skid = X509_get0_subject_key_id(ca.certificate().get());
  ASSERT_TRUE(akid != nullptr && ca_skid != nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(akid, ca_skid), 0);

  // Criticality: basicConstraints and keyUsage critical; EKU, SAN, SKID, AKID not.
  auto critical = [&](int nid) {
    int i = X509_get_ext_by_NID(parsed->get(), nid, -1);
    return i >= 0 ? X509_EXTENSION_get_critical(X509_get_ext(parsed->get(), i)) : -1;
  };
  EXPECT_EQ(critical(NID_basic_constraints), 1);
  EXPECT_EQ(critical(NID_key_usage), 1);
  EXPECT_EQ(critical(NID_ext_key_usage), 0);
  EXPECT_EQ(critical(NID_subject_alt_name), 0);
  EXPECT_EQ(critical(NID_subject_key_identifier), 0);
  EXPECT_EQ(critical(NID_authority_key_identifier), 0);
  EXPECT_EQ(X509_get_ext_count(parsed->get()), 6);

  // End to end through the SPIFFE verifier.
  auto bundle = std::make_shared<TrustBundle>(Td("example.org"));
  bundle->AddX509Authority(ca.root());
  BundleSet bundles;
  bundles.Put(std::move(bundle));
  EXPECT_TRUE(VerifyX509Svid(svid->chain, bundles, TestNow()).ok());
}

INSTANTIATE_TEST_SUITE_P(CaAndLeafKeys, TemplateIssuance,
                         ::testing::Combine(::testing::Values(KeyType::kEcP256, KeyType::kEcP384,
                                                              KeyType::kRsa2048, KeyType::kEd25519),
                                            ::testing::Values(KeyType::kEcP256, KeyType::kEcP384,
                                                              KeyType::kRsa2048,
                                                              KeyType::kEd25519)));

TEST(TemplateIssuance, SerialIsPositive128BitInteger) {
  const X509Ca& ca = CaFor(KeyType::kEcP256);
  PublicKey pub = PrivateKey::Generate(KeyType::kEcP256)->Public();
  for (int i = 0; i < 200; ++i) {
    auto svid = ca.IssueX509Svid({Id("spiffe://example.org/w"), pub, {}, Seconds(60)}, TestNow());
    ASSERT_TRUE(svid.ok());
    const ASN1_INTEGER* serial = X509_get0_serialNumber(svid->leaf.get());
    EXPECT_EQ(ASN1_STRING_type(serial), V_ASN1_INTEGER);  // not V_ASN1_NEG_INTEGER
    EXPECT_LE(ASN1_STRING_length(serial), 16);
    EXPECT_GT(ASN1_STRING_length(serial), 0);
    EXPECT_NE(ASN1_STRING_get0_data(serial)[0], 0);  // minimal magnitude
    EXPECT_EQ(svid->der, svid->leaf.ToDer());
  }
}

TEST(TemplateIssuance, IntermediateCaIssuesWithItsOwnName) {
  auto [root, root_key] = testing::MakeUpstreamRoot(TestNow(), Seconds(10 * 3600));
  std::vector<Certificate> upstream{root};
  auto ca = X509Ca::CreateIntermediate(
      {Td("example.org"), KeyType::kEcP384, Seconds(3600), kDefaultBackdate}, upstream, root_key,
      TestNow());
  ASSERT_TRUE(ca.ok()) << ca.error().ToString();
  auto svid = ca->IssueX509Svid({Id("spiffe://example.org/w"),
                                 PrivateKey::Generate(KeyType::kEcP256)->Public(),
                                 {},
                                 Seconds(60)},
                                TestNow());
  ASSERT_TRUE(svid.ok());
  auto parsed = Certificate::FromDer(svid->der);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(X509_verify(parsed->get(), X509_get0_pubkey(ca->certificate().get())), 1);
  EXPECT_EQ(X509_check_issued(ca->certificate().get(), parsed->get()), X509_V_OK);
  // ecdsa-with-SHA384 for a P-384 CA key: 1.2.840.10045.4.3.3, no parameters.
  EXPECT_EQ(HexEncode(I2dAlgor(X509_get0_tbs_sigalg(parsed->get()))), "300a06082a8648ce3d040303");
}

TEST(PublicKeySpki, MatchesOpenSslEncodingForEveryKeyType) {
  for (KeyType type : {KeyType::kEcP256, KeyType::kEcP384, KeyType::kEcP521, KeyType::kRsa2048,
                       KeyType::kEd25519}) {
    auto priv = PrivateKey::Generate(type);
    ASSERT_TRUE(priv.ok());
    PublicKey pub = priv->Public();
    std::vector<uint8_t> expected = I2dPubkey(pub.get());
    EXPECT_EQ(std::vector<uint8_t>(pub.SpkiDer().begin(), pub.SpkiDer().end()), expected)
        << KeyTypeName(type);
    auto reparsed = PublicKey::FromDer(expected);
    ASSERT_TRUE(reparsed.ok());
    EXPECT_EQ(reparsed->ToDer(), expected);
    auto wrapped = PublicKey::FromEvp(priv->get());
    ASSERT_TRUE(wrapped.ok());
    EXPECT_EQ(wrapped->ToDer(), expected);  // computed from the private key's public half
    PublicKey copy = *reparsed;
    EXPECT_EQ(copy.SpkiDer().data(), reparsed->SpkiDer().data());  // shared cache
    EXPECT_EQ(EVP_PKEY_eq(pub.GetForX509(), pub.get()), 1) << KeyTypeName(type);
  }
}

TEST(PublicKeySpki, CompressedPointKeepsItsForm) {
  // P-256 SPKI with a compressed point (0x02/0x03 prefix), as some clients send.
  auto priv = PrivateKey::Generate(KeyType::kEcP256);
  EvpPkeyPtr copy(EVP_PKEY_dup(priv->get()));
  ASSERT_EQ(EVP_PKEY_set_utf8_string_param(copy.get(), "point-format", "compressed"), 1);
  std::vector<uint8_t> compressed = I2dPubkey(copy.get());
  ASSERT_EQ(compressed.size(), 59u);
  auto pub = PublicKey::FromDer(compressed);
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(pub->ToDer(), I2dPubkey(pub->get()));
  // Issued certificates carry the key in the form the key itself encodes to.
  auto svid = CaFor(KeyType::kEcP256)
                  .IssueX509Svid({Id("spiffe://example.org/w"), *pub, {}, Seconds(60)}, TestNow());
  ASSERT_TRUE(svid.ok());
  EXPECT_EQ(svid->der, svid->leaf.ToDer());
  EXPECT_TRUE(svid->leaf.PublicKeyOf()->Equals(*pub));
}

}  // namespace
}  // namespace sigil::core
