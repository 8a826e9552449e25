#include "core/x509_svid.h"

#include <gtest/gtest.h>

#include "core/testing/pki_fixture.h"

namespace sigil::core {
namespace {

using testing::CraftLeaf;
using testing::Id;
using testing::MakeCa;
using testing::Td;
using testing::TestNow;

BundleSet BundleFor(const X509Ca& ca) {
  auto b = std::make_shared<TrustBundle>(ca.trust_domain());
  b->AddX509Authority(ca.root());
  BundleSet set;
  set.Put(std::move(b));
  return set;
}

class X509SvidVerify : public ::testing::Test {
 protected:
  X509Ca ca_ = MakeCa();
  PublicKey pub_ = PrivateKey::Generate(KeyType::kEcP256)->Public();

  std::vector<Certificate> Issue(std::string_view id) {
    auto svid = ca_.IssueX509Svid({Id(id), pub_, {}, Seconds(3600)}, TestNow());
    if (!svid.ok()) std::abort();
    return svid->chain;
  }
  Certificate Craft(std::vector<std::pair<int, std::string>> exts) {
    return CraftLeaf(ca_, pub_, exts, TestNow() - Seconds(10), TestNow() + Seconds(3600));
  }
};

TEST_F(X509SvidVerify, AcceptsOwnSvid) {
  auto id = VerifyX509Svid(Issue("spiffe://example.org/web"), BundleFor(ca_), TestNow());
  ASSERT_TRUE(id.ok()) << id.error().ToString();
  EXPECT_EQ(id->str(), "spiffe://example.org/web");
}

TEST_F(X509SvidVerify, RejectsOtherCaExpiryAndMissingBundle) {
  X509Ca other = MakeCa();
  auto wrong = VerifyX509Svid(Issue("spiffe://example.org/web"), BundleFor(other), TestNow());
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), ErrorCode::kUnauthenticated);

  auto expired =
      VerifyX509Svid(Issue("spiffe://example.org/web"), BundleFor(ca_), TestNow() + Seconds(3601));
  ASSERT_FALSE(expired.ok());
  EXPECT_NE(expired.error().message().find("expired"), std::string::npos);

  auto not_yet =
      VerifyX509Svid(Issue("spiffe://example.org/web"), BundleFor(ca_), TestNow() - Seconds(60));
  EXPECT_FALSE(not_yet.ok());

  // The bundle of a different trust domain is never used, even if it holds the right root.
  auto b = std::make_shared<TrustBundle>(Td("other.org"));
  b->AddX509Authority(ca_.root());
  BundleSet foreign;
  foreign.Put(b);
  auto no_bundle = VerifyX509Svid(Issue("spiffe://example.org/web"), foreign, TestNow());
  ASSERT_FALSE(no_bundle.ok());
  EXPECT_NE(no_bundle.error().message().find("no X.509 bundle"), std::string::npos);
  EXPECT_FALSE(VerifyX509Svid({}, BundleFor(ca_), TestNow()).ok());
}

TEST_F(X509SvidVerify, RejectsLeafProfileViolations) {
  const std::string ku = "critical,digitalSignature";
  const std::string bc = "critical,CA:FALSE";
  struct Case {
    const char* name;
    std::vector<std::pair<int, std::string>> exts;
    const char* expect;
  } cases[] = {
      {"two URI SANs",
       {{NID_basic_constraints, bc},
        {NID_key_usage, ku},
        {NID_subject_alt_name, "URI:spiffe://example.org/a,URI:spiffe://example.org/b"}},
       "more than one URI SAN"},
      {"no URI SAN",
       {{NID_basic_constraints, bc},
        {NID_key_usage, ku},
        {NID_subject_alt_name, "DNS:a.example.org"}},
       "no URI SAN"},
      {"not a spiffe URI",
       {{NID_basic_constraints, bc},
        {NID_key_usage, ku},
        {NID_subject_alt_name, "URI:https://example.org/a"}},
       "scheme"},
      {"root path",
       {{NID_basic_constraints, bc},
        {NID_key_usage, ku},
        {NID_subject_alt_name, "URI:spiffe://example.org"}},
       "no path"},
      {"cA=true",
       {{NID_basic_constraints, "critical,CA:TRUE"},
        {NID_key_usage, ku},
        {NID_subject_alt_name, "URI:spiffe://example.org/a"}},
       "cA=true"},
      {"no keyUsage",
       {{NID_basic_constraints, bc}, {NID_subject_alt_name, "URI:spiffe://example.org/a"}},
       "no keyUsage"},
      {"keyUsage not critical",
       {{NID_basic_constraints, bc},
        {NID_key_usage, "digitalSignature"},
        {NID_subject_alt_name, "URI:spiffe://example.org/a"}},
       "not critical"},
      {"keyCertSign on a leaf",
       {{NID_basic_constraints, bc},
        {NID_key_usage, "critical,digitalSignature,keyCertSign"},
        {NID_subject_alt_name, "URI:spiffe://example.org/a"}},
       "keyCertSign"},
      {"no digitalSignature",
       {{NID_basic_constraints, bc},
        {NID_key_usage, "critical,keyEncipherment"},
        {NID_subject_alt_name, "URI:spiffe://example.org/a"}},
       "digitalSignature"},
      {"EKU without clientAuth",
       {{NID_basic_constraints, bc},
        {NID_key_usage, ku},
        {NID_ext_key_usage, "serverAuth"},
        {NID_subject_alt_name, "URI:spiffe://example.org/a"}},
       "clientAuth"},
  };
  for (const auto& c : cases) {
    auto id = VerifyX509Svid(std::vector<Certificate>{Craft(c.exts)}, BundleFor(ca_), TestNow());
    ASSERT_FALSE(id.ok()) << c.name;
    EXPECT_NE(id.error().message().find(c.expect), std::string::npos)
        << c.name << ": " << id.error().message();
  }
  // Without EKU the leaf is acceptable (EKU is SHOULD, and go-spiffe does not enforce it).
  auto no_eku = VerifyX509Svid(
      std::vector<Certificate>{Craft({{NID_basic_constraints, bc},
                                      {NID_key_usage, ku},
                                      {NID_subject_alt_name, "URI:spiffe://example.org/a"}})},
      BundleFor(ca_), TestNow());
  EXPECT_TRUE(no_eku.ok()) << no_eku.error().ToString();
}

TEST_F(X509SvidVerify, IntermediateChainValidatesAgainstUpstreamRoot) {
  auto [root, root_key] = testing::MakeUpstreamRoot();
  std::vector<Certificate> upstream{root};
  auto ca = X509Ca::CreateIntermediate(
      {Td("example.org"), KeyType::kEcP256, Seconds(3600 * 24), kDefaultBackdate}, upstream,
      root_key, TestNow());
  ASSERT_TRUE(ca.ok()) << ca.error().ToString();
  auto svid = ca->IssueX509Svid({Id("spiffe://example.org/db"), pub_, {}, Seconds(600)}, TestNow());
  ASSERT_TRUE(svid.ok());
  auto id = VerifyX509Svid(svid->chain, BundleFor(*ca), TestNow());
  ASSERT_TRUE(id.ok()) << id.error().ToString();
  EXPECT_EQ(id->str(), "spiffe://example.org/db");
  // Without the intermediate the leaf does not chain to the root.
  auto leaf_only = VerifyX509Svid(std::vector<Certificate>{svid->leaf}, BundleFor(*ca), TestNow());
  EXPECT_FALSE(leaf_only.ok());
}

TEST(SpiffeIdFromCertificate, CaCertificateCarriesTrustDomainId) {
  X509Ca ca = MakeCa("example.org");
  auto id = SpiffeIdFromCertificate(ca.certificate());
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(id->IsTrustDomainId());
  EXPECT_FALSE(CheckLeafProfile(ca.certificate()).ok());
}

}  // namespace
}  // namespace sigil::core
