#include "core/authority_set.h"

#include <gtest/gtest.h>

#include "core/testing/pki_fixture.h"
#include "core/x509_svid.h"

namespace sigil::core {
namespace {

using testing::Id;
using testing::Td;
using testing::TestNow;

constexpr Seconds kHour{3600};

CaOptions Options() { return {Td("example.org"), KeyType::kEcP256, 24 * kHour, kDefaultBackdate}; }

BundleSet AsSet(TrustBundle b) {
  BundleSet s;
  s.Put(std::make_shared<TrustBundle>(std::move(b)));
  return s;
}

TEST(AuthoritySet, PrepareActivateRetireTimeline) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok()) << set.error().ToString();
  std::string first = set->active().ca.certificate().Fingerprint();
  uint64_t seq0 = set->Bundle().sequence();
  EXPECT_EQ(set->Bundle().x509_authorities().size(), 1u);

  EXPECT_FALSE(*set->Rotate(TestNow() + 11 * kHour));
  EXPECT_EQ(set->prepared(), nullptr);

  // Half-life: the next generation is published but does not sign yet.
  EXPECT_TRUE(*set->Rotate(TestNow() + 12 * kHour));
  ASSERT_NE(set->prepared(), nullptr);
  EXPECT_EQ(set->active().ca.certificate().Fingerprint(), first);
  TrustBundle b = set->Bundle();
  EXPECT_EQ(b.x509_authorities().size(), 2u);
  EXPECT_EQ(b.jwt_authorities().size(), 2u);
  EXPECT_GT(b.sequence(), seq0);

  // 5/6 of the life: the prepared generation signs; the old one stays in the bundle.
  EXPECT_TRUE(*set->Rotate(TestNow() + 20 * kHour));
  EXPECT_NE(set->active().ca.certificate().Fingerprint(), first);
  EXPECT_EQ(set->prepared(), nullptr);
  EXPECT_EQ(set->retired_count(), 1u);
  EXPECT_EQ(set->Bundle().x509_authorities().size(), 2u);

  // The old CA expires and leaves the bundle.
  EXPECT_TRUE(*set->Rotate(TestNow() + 24 * kHour + Seconds(10)));
  EXPECT_EQ(set->retired_count(), 0u);
}

// Property: at every hour of three CA lifetimes, every SVID issued so far that has not expired
// still verifies against the current bundle, and so does every unexpired JWT-SVID.
TEST(AuthoritySet, NoIssuedCredentialIsEverOrphanedByRotation) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  PublicKey pub = PrivateKey::Generate(KeyType::kEcP256)->Public();
  std::vector<IssuedX509Svid> issued;
  std::vector<std::pair<std::string, TimePoint>> tokens;
  std::vector<std::string> aud{"db"};
  for (int h = 0; h <= 72; ++h) {
    TimePoint now = TestNow() + h * kHour;
    ASSERT_TRUE(set->Rotate(now).ok());
    auto svid = set->IssueX509Svid({Id("spiffe://example.org/w"), pub, {}, kHour}, now);
    ASSERT_TRUE(svid.ok()) << "hour " << h << ": " << svid.error().ToString();
    EXPECT_EQ(svid->leaf.NotAfter(), now + kHour) << "hour " << h << ": leaf cut short";
    issued.push_back(*svid);
    auto token = set->MintJwtSvid(Id("spiffe://example.org/w"), aud, now, Seconds(300));
    ASSERT_TRUE(token.ok());
    tokens.emplace_back(*token, now + Seconds(300));
    BundleSet bundles = AsSet(set->Bundle());
    for (const auto& s : issued) {
      if (s.leaf.NotAfter() <= now) continue;
      auto id = VerifyX509Svid(s.chain, bundles, now);
      EXPECT_TRUE(id.ok()) << "hour " << h << ": " << id.error().ToString();
    }
    for (const auto& [t, exp] : tokens) {
      if (exp <= now) continue;
      EXPECT_TRUE(ValidateJwtSvid(t, bundles, aud, now).ok()) << "hour " << h;
    }
  }
}

TEST(AuthoritySet, RecoversAfterLongOutage) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  TimePoint later = TestNow() + 10 * 24 * kHour;
  auto changed = set->Rotate(later);
  ASSERT_TRUE(changed.ok());
  EXPECT_TRUE(*changed);
  EXPECT_GT(set->active().ca.not_after(), later);
  EXPECT_TRUE(set->IssueX509Svid({Id("spiffe://example.org/w"),
                                  PrivateKey::Generate(KeyType::kEcP256)->Public(),
                                  {},
                                  kHour},
                                 later)
                  .ok());
  TrustBundle bundle = set->Bundle();
  for (const auto& c : bundle.x509_authorities()) EXPECT_GT(c.NotAfter(), later);
}

TEST(AuthoritySet, RotatesUnderUpstream) {
  auto [root, root_key] = testing::MakeUpstreamRoot(TestNow(), Seconds(30 * 24 * 3600));
  UpstreamCa upstream{{root}, std::make_shared<const PrivateKey>(std::move(root_key))};
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow(), upstream);
  ASSERT_TRUE(set.ok()) << set.error().ToString();
  ASSERT_TRUE(set->Rotate(TestNow() + 20 * kHour).ok());
  // The bundle holds the upstream root once, whatever the number of intermediates.
  TrustBundle b = set->Bundle();
  ASSERT_EQ(b.x509_authorities().size(), 1u);
  EXPECT_EQ(b.x509_authorities()[0].Fingerprint(), root.Fingerprint());
  auto svid = set->IssueX509Svid(
      {Id("spiffe://example.org/w"), PrivateKey::Generate(KeyType::kEcP256)->Public(), {}, kHour},
      TestNow() + 20 * kHour);
  ASSERT_TRUE(svid.ok());
  EXPECT_TRUE(VerifyX509Svid(svid->chain, AsSet(b), TestNow() + 20 * kHour).ok());
}

TEST(AuthoritySet, PolicyValidation) {
  RotationPolicy bad;
  bad.prepare_fraction = 0.9;
  EXPECT_FALSE(AuthoritySet::Create(Options(), bad, TestNow()).ok());
  RotationPolicy ok;
  auto short_ca = ok.Validate(Seconds(3 * 3600), kHour);  // 30 min left < 1 h SVIDs
  ASSERT_FALSE(short_ca.ok());
  EXPECT_NE(short_ca.error().message().find("SVID ttl"), std::string::npos);
  EXPECT_TRUE(ok.Validate(24 * kHour, kHour).ok());
}

TEST(AuthoritySet, SerializeRoundTripKeepsEveryGeneration) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  ASSERT_TRUE(set->Rotate(TestNow() + 20 * kHour).ok());  // one retired + one active
  ASSERT_TRUE(set->Rotate(TestNow() + 23 * kHour).ok());
  auto blob = set->Serialize();
  ASSERT_TRUE(blob.ok()) << blob.error().ToString();
  auto back = AuthoritySet::Deserialize(Options(), RotationPolicy{}, std::nullopt, *blob);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(back->retired_count(), set->retired_count());
  EXPECT_EQ(back->active().ca.certificate().Fingerprint(),
            set->active().ca.certificate().Fingerprint());
  EXPECT_EQ(back->active().jwt.kid, set->active().jwt.kid);
  EXPECT_EQ(back->Bundle().ToJwks(), set->Bundle().ToJwks());
  // The restored set signs with the same key: its leaves verify against the old bundle.
  TimePoint now = TestNow() + 23 * kHour;
  auto svid = back->IssueX509Svid(
      {Id("spiffe://example.org/w"), PrivateKey::Generate(KeyType::kEcP256)->Public(), {}, kHour},
      now);
  ASSERT_TRUE(svid.ok());
  EXPECT_TRUE(VerifyX509Svid(svid->chain, AsSet(set->Bundle()), now).ok());
  auto token = back->MintJwtSvid(Id("spiffe://example.org/w"), {"db"}, now, Seconds(60));
  ASSERT_TRUE(token.ok());
  EXPECT_TRUE(
      ValidateJwtSvid(*token, AsSet(set->Bundle()), std::vector<std::string>{"db"}, now).ok());
}

TEST(AuthoritySet, DeserializeRejectsWrongTrustDomainAndGarbage) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  auto blob = set->Serialize();
  ASSERT_TRUE(blob.ok());
  CaOptions other = Options();
  other.trust_domain = Td("other.org");
  auto wrong = AuthoritySet::Deserialize(other, RotationPolicy{}, std::nullopt, *blob);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message().find("example.org"), std::string::npos);
  for (std::string_view bad : {"", "[]", "{\"version\":1}", "{\"version\":2}", "not json"}) {
    EXPECT_FALSE(
        AuthoritySet::Deserialize(Options(), RotationPolicy{}, std::nullopt, SecretBytes::Copy(bad))
            .ok())
        << bad;
  }
}

TEST(AuthoritySet, JwtRefusesForeignSubject) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  auto foreign = set->MintJwtSvid(Id("spiffe://other.org/w"), {"a"}, TestNow(), Seconds(60));
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.error().code(), ErrorCode::kPermissionDenied);
}

}  // namespace
}  // namespace sigil::core
