#include "core/certificate.h"

#include <gtest/gtest.h>

#include "core/testing/pki_fixture.h"

namespace sigil::core {
namespace {

using testing::Id;
using testing::TestNow;

std::vector<Certificate> TwoCerts() {
  X509Ca a = testing::MakeCa("a.org");
  X509Ca b = testing::MakeCa("b.org");
  return {a.certificate(), b.certificate()};
}

TEST(Certificate, PemRoundTripKeepsOrder) {
  auto certs = TwoCerts();
  std::string pem = CertificatesToPem(certs);
  auto parsed = ParseCertificatesPem(pem);
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].Fingerprint(), certs[0].Fingerprint());
  EXPECT_EQ((*parsed)[1].Fingerprint(), certs[1].Fingerprint());
}

TEST(Certificate, DerConcatenationRoundTrip) {
  auto certs = TwoCerts();
  auto der = CertificatesToDer(certs);
  auto parsed = ParseCertificatesDer(der);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[1].ToDer(), certs[1].ToDer());
  der.push_back(0x30);  // a truncated third certificate
  auto truncated = ParseCertificatesDer(der);
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.error().message().find("certificate 3"), std::string::npos);
}

TEST(Certificate, PemRejectsOtherBlocksUnlessAsked) {
  auto certs = TwoCerts();
  auto key = PrivateKey::Generate(KeyType::kEcP256);
  std::string mixed = certs[0].ToPem() + std::string(key->Public().ToPem());
  auto strict = ParseCertificatesPem(mixed);
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(strict.error().message().find("PUBLIC KEY"), std::string::npos);
  auto lenient = ParseCertificatesPem(mixed, /*skip_other_blocks=*/true);
  ASSERT_TRUE(lenient.ok());
  EXPECT_EQ(lenient->size(), 1u);
}

TEST(Certificate, BoundsAndGarbage) {
  EXPECT_FALSE(ParseCertificatesPem("").ok());
  EXPECT_FALSE(ParseCertificatesPem("hello").ok());
  EXPECT_FALSE(
      ParseCertificatesPem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").ok());
  EXPECT_FALSE(ParseCertificatesPem(std::string(kMaxPemInputBytes + 1, 'a')).ok());
  std::string many;
  auto cert = TwoCerts()[0];
  for (size_t i = 0; i <= kMaxCertificatesPerInput; ++i) many += cert.ToPem();
  auto too_many = ParseCertificatesPem(many);
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.error().message().find("more than 64"), std::string::npos);
  EXPECT_FALSE(Certificate::FromDer({}).ok());
  auto der = cert.ToDer();
  der.push_back(0);
  EXPECT_FALSE(Certificate::FromDer(der).ok());
  EXPECT_FALSE(ParseCertificatesDer({}).ok());
}

TEST(Certificate, Accessors) {
  X509Ca ca = testing::MakeCa();
  auto pub = PrivateKey::Generate(KeyType::kEcP256)->Public();
  auto svid = ca.IssueX509Svid({Id("spiffe://example.org/x"), pub, {"x.example.org"}, Seconds(60)},
                               TestNow());
  ASSERT_TRUE(svid.ok());
  const Certificate& leaf = svid->leaf;
  EXPECT_EQ(leaf.DnsSans(), std::vector<std::string>{"x.example.org"});
  EXPECT_EQ(leaf.Fingerprint().size(), 64u);
  EXPECT_FALSE(leaf.SerialHex().empty());
  EXPECT_EQ(leaf.SerialHex().find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_FALSE(leaf.IsSelfSigned());
  Certificate copy = leaf;  // shares the X509 (refcount), same content
  EXPECT_EQ(copy.get(), leaf.get());
}

}  // namespace
}  // namespace sigil::core
