#include "core/authority_set.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/testing/pki_fixture.h"
#include "core/x509_svid.h"

namespace sigil::core {
namespace {

using testing::Id;
using testing::Td;
using testing::TestNow;

constexpr Seconds kHour{3600};
constexpr Seconds kMinute{60};

CaOptions Options() { return {Td("example.org"), KeyType::kEcP256, 24 * kHour, kDefaultBackdate}; }

BundleSet AsSet(TrustBundle b) {
  BundleSet s;
  s.Put(std::make_shared<TrustBundle>(std::move(b)));
  return s;
}

PublicKey NewKey() { return PrivateKey::Generate(KeyType::kEcP256)->Public(); }

TEST(AuthoritySet, PrepareActivateRetireTimeline) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok()) << set.error().ToString();
  std::string first = set->active().ca.certificate().Fingerprint();
  // The last leaf the first CA signs expires at 22 h.
  ASSERT_TRUE(set->IssueX509Svid({Id("spiffe://example.org/w"), NewKey(), {}, 3 * kHour},
                                 TestNow() + 19 * kHour)
                  .ok());
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

  // The old CA leaves the bundle once its last leaf expired, not at its own expiry (24 h).
  EXPECT_FALSE(*set->Rotate(TestNow() + 22 * kHour));
  EXPECT_EQ(set->retired_count(), 1u);
  std::vector<RotationStep> steps;
  EXPECT_TRUE(*set->Rotate(TestNow() + 22 * kHour + Seconds(1), &steps));
  EXPECT_EQ(set->retired_count(), 0u);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].kind, RotationStep::Kind::kRetired);
  EXPECT_EQ(steps[0].generation.ca_sha256, first);
  EXPECT_EQ(set->Bundle().x509_authorities().size(), 1u);
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
  // Keeps the first generation in the bundle until 23 h.
  ASSERT_TRUE(set->IssueX509Svid({Id("spiffe://example.org/w"), NewKey(), {}, 4 * kHour},
                                 TestNow() + 19 * kHour)
                  .ok());
  ASSERT_TRUE(set->Rotate(TestNow() + 20 * kHour).ok());  // one retired + one active
  ASSERT_TRUE(set->Rotate(TestNow() + 23 * kHour).ok());
  ASSERT_EQ(set->retired_count(), 1u);
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

// --- explicit rotation (RotateNow) and retirement by issued expiry ---

TEST(AuthoritySet, RotateNowPublishesAtOnceAndActivatesAfterTheDelay) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  const std::string old_ca = set->active().ca.certificate().Fingerprint();
  const uint64_t seq0 = set->Bundle().sequence();
  const TimePoint t = TestNow() + kHour;
  bool created = false;
  auto prepared = set->RotateNow(t, 10 * kMinute, &created);
  ASSERT_TRUE(prepared.ok()) << prepared.error().ToString();
  EXPECT_TRUE(created);
  EXPECT_EQ(prepared->role, GenerationRole::kPrepared);
  EXPECT_TRUE(prepared->scheduled);
  EXPECT_EQ(prepared->activate_at, t + 10 * kMinute);
  // Published at once (bundle first), not signing yet.
  TrustBundle b = set->Bundle();
  EXPECT_EQ(b.x509_authorities().size(), 2u);
  EXPECT_EQ(b.jwt_authorities().size(), 2u);
  EXPECT_GT(b.sequence(), seq0);
  EXPECT_EQ(set->active().ca.certificate().Fingerprint(), old_ca);
  auto leaf = set->IssueX509Svid({Id("spiffe://example.org/w"), NewKey(), {}, kHour}, t);
  ASSERT_TRUE(leaf.ok());
  EXPECT_TRUE(VerifyX509Svid(leaf->chain, AsSet(b), t).ok());

  EXPECT_FALSE(set->RotationDue(t + 10 * kMinute - Seconds(1)));
  EXPECT_FALSE(*set->Rotate(t + 10 * kMinute - Seconds(1)));
  EXPECT_TRUE(set->RotationDue(t + 10 * kMinute));
  std::vector<RotationStep> steps;
  EXPECT_TRUE(*set->Rotate(t + 10 * kMinute, &steps));
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].kind, RotationStep::Kind::kActivated);
  EXPECT_EQ(steps[0].generation.ca_sha256, prepared->ca_sha256);
  ASSERT_TRUE(steps[0].previous.has_value());
  EXPECT_EQ(steps[0].previous->ca_sha256, old_ca);
  EXPECT_EQ(steps[0].previous->leaves_bundle_at, t + kHour);  // the leaf issued above
  EXPECT_EQ(set->active().ca.certificate().Fingerprint(), prepared->ca_sha256);
  EXPECT_EQ(set->prepared(), nullptr);
  // New leaves come from the new CA; the old CA's leaf still verifies (both roots published).
  auto fresh =
      set->IssueX509Svid({Id("spiffe://example.org/w"), NewKey(), {}, kHour}, t + 10 * kMinute);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(X509_check_issued(set->active().ca.certificate().get(), fresh->leaf.get()), X509_V_OK);
  BundleSet both = AsSet(set->Bundle());
  EXPECT_TRUE(VerifyX509Svid(fresh->chain, both, t + 10 * kMinute).ok());
  EXPECT_TRUE(VerifyX509Svid(leaf->chain, both, t + 10 * kMinute).ok());
  // The old CA leaves right after its last leaf expired, hours before its own notAfter.
  EXPECT_FALSE(*set->Rotate(t + kHour));
  EXPECT_EQ(set->retired_count(), 1u);
  steps.clear();
  EXPECT_TRUE(*set->Rotate(t + kHour + Seconds(1), &steps));
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].kind, RotationStep::Kind::kRetired);
  EXPECT_EQ(steps[0].generation.ca_sha256, old_ca);
  EXPECT_EQ(set->Bundle().x509_authorities().size(), 1u);
  EXPECT_EQ(set->Bundle().jwt_authorities().size(), 1u);
}

TEST(AuthoritySet, RotateNowTakesThePreparedGenerationAndRefusesNegativeDelays) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  ASSERT_TRUE(*set->Rotate(TestNow() + 12 * kHour));  // the schedule prepared one
  ASSERT_NE(set->prepared(), nullptr);
  const std::string prepared_ca = set->prepared()->ca.certificate().Fingerprint();
  auto gens = set->Generations();
  ASSERT_EQ(gens.size(), 2u);
  EXPECT_EQ(gens[1].role, GenerationRole::kPrepared);
  EXPECT_FALSE(gens[1].scheduled);
  ASSERT_TRUE(gens[1].activate_at.has_value());
  const TimePoint automatic = *gens[1].activate_at;  // 5/6 of the CA's life: ~20 h
  EXPECT_LT(std::chrono::abs(automatic - (TestNow() + 20 * kHour)), Seconds(10));
  const uint64_t seq = set->Bundle().sequence();

  EXPECT_EQ(set->RotateNow(TestNow() + 12 * kHour, Seconds(-1)).error().code(),
            ErrorCode::kInvalidArgument);
  bool created = true;
  auto info = set->RotateNow(TestNow() + 12 * kHour, 5 * kMinute, &created);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(info->ca_sha256, prepared_ca);
  EXPECT_EQ(set->Bundle().sequence(), seq);  // nothing new to publish
  EXPECT_TRUE(*set->Rotate(TestNow() + 12 * kHour + 5 * kMinute));
  EXPECT_EQ(set->active().ca.certificate().Fingerprint(), prepared_ca);

  // A schedule later than the automatic activation: the automatic one still applies.
  auto next = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(next.ok());
  auto late = next->RotateNow(TestNow() + 13 * kHour, 10 * kHour);
  ASSERT_TRUE(late.ok());
  ASSERT_TRUE(late->activate_at.has_value());
  EXPECT_LT(std::chrono::abs(*late->activate_at - (TestNow() + 20 * kHour)), Seconds(10));
  EXPECT_FALSE(*next->Rotate(*late->activate_at - Seconds(1)));
  EXPECT_TRUE(*next->Rotate(*late->activate_at));
  EXPECT_EQ(next->active().ca.certificate().Fingerprint(), late->ca_sha256);
}

TEST(AuthoritySet, RecordsTheLatestExpiryOfEverythingIssued) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  EXPECT_FALSE(set->active().x509_issued_until.has_value());
  EXPECT_FALSE(set->active().jwt_issued_until.has_value());
  const TimePoint t = TestNow() + kHour;
  for (Seconds ttl : {kHour, 3 * kHour, 2 * kHour}) {
    ASSERT_TRUE(set->IssueX509Svid({Id("spiffe://example.org/w"), NewKey(), {}, ttl}, t).ok());
  }
  EXPECT_EQ(set->active().x509_issued_until, t + 3 * kHour);
  ASSERT_TRUE(set->MintJwtSvid(Id("spiffe://example.org/w"), {"db"}, t, Seconds(300)).ok());
  ASSERT_TRUE(set->MintJwtSvid(Id("spiffe://example.org/w"), {"db"}, t, Seconds(60)).ok());
  EXPECT_EQ(set->active().jwt_issued_until, t + Seconds(300));
  // A leaf is capped at the CA's notAfter, and so is the record.
  ASSERT_TRUE(set->IssueX509Svid({Id("spiffe://example.org/w"), NewKey(), {}, 48 * kHour}, t).ok());
  EXPECT_EQ(set->active().x509_issued_until, set->active().ca.not_after());
  // The write-ahead bound only ever raises the record, within the CA's life.
  set->ExtendIssuedUntil(t, TestNow() + 100 * kHour);
  EXPECT_EQ(set->active().x509_issued_until, set->active().ca.not_after());
  EXPECT_EQ(set->active().jwt_issued_until, set->active().jwt.not_after);

  // Leaving the bundle: X.509 expiry, or JWT exp plus the validation leeway, whichever is
  // later; at once when the generation signed nothing.
  AuthorityGeneration& g = const_cast<AuthorityGeneration&>(set->active());
  g.x509_issued_until = t + kMinute;
  g.jwt_issued_until = t + kMinute;
  EXPECT_EQ(g.LeavesBundleAt(), t + kMinute + kDefaultJwtLeeway);
  g.jwt_issued_until.reset();
  EXPECT_EQ(g.LeavesBundleAt(), t + kMinute);
  g.x509_issued_until.reset();
  EXPECT_EQ(g.LeavesBundleAt(), g.ca.not_before());
}

TEST(AuthoritySet, JwtKeyStaysForTheLeewayAfterTheLastToken) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  const TimePoint t = TestNow() + kHour;
  auto token = set->MintJwtSvid(Id("spiffe://example.org/w"), {"db"}, t, Seconds(300));
  ASSERT_TRUE(token.ok());
  ASSERT_TRUE(set->RotateNow(t, Seconds(0)).ok());
  ASSERT_TRUE(*set->Rotate(t));
  const TimePoint last_valid = t + Seconds(300) + kDefaultJwtLeeway;
  EXPECT_TRUE(
      ValidateJwtSvid(*token, AsSet(set->Bundle()), std::vector<std::string>{"db"}, last_valid)
          .ok());
  EXPECT_FALSE(*set->Rotate(last_valid));
  EXPECT_EQ(set->Bundle().jwt_authorities().size(), 2u);
  EXPECT_TRUE(*set->Rotate(last_valid + Seconds(1)));
  EXPECT_EQ(set->Bundle().jwt_authorities().size(), 1u);
}

// Property: with an explicit rotation every 45 minutes (5 minutes of propagation) and the
// automatic schedule running too, every credential issued so far that has not expired verifies
// against the bundle of every minute, and a retired CA is gone soon after its last leaf.
TEST(AuthoritySet, ExplicitRotationsNeverOrphanACredential) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  std::vector<IssuedX509Svid> issued;
  std::vector<std::pair<std::string, TimePoint>> tokens;
  std::vector<std::string> aud{"db"};
  size_t max_roots = 0;
  for (int m = 0; m <= 26 * 60; ++m) {
    const TimePoint now = TestNow() + m * kMinute;
    ASSERT_TRUE(set->Rotate(now).ok());
    if (m % 45 == 0 && m > 0 && (set->prepared() == nullptr || !set->prepared()->activate_at)) {
      ASSERT_TRUE(set->RotateNow(now, 5 * kMinute).ok());
    }
    if (m % 7 == 0) {
      auto svid =
          set->IssueX509Svid({Id("spiffe://example.org/w"), NewKey(), {}, 20 * kMinute}, now);
      ASSERT_TRUE(svid.ok()) << "minute " << m;
      issued.push_back(*svid);
      auto token = set->MintJwtSvid(Id("spiffe://example.org/w"), aud, now, Seconds(300));
      ASSERT_TRUE(token.ok());
      tokens.emplace_back(*token, now + Seconds(300));
    }
    BundleSet bundles = AsSet(set->Bundle());
    max_roots = std::max(max_roots, set->Bundle().x509_authorities().size());
    for (const auto& s : issued) {
      if (s.leaf.NotAfter() <= now) continue;  // OpenSSL: expired at notAfter itself
      EXPECT_TRUE(VerifyX509Svid(s.chain, bundles, now).ok()) << "minute " << m;
    }
    for (const auto& [t, exp] : tokens) {
      if (exp < now) continue;
      EXPECT_TRUE(ValidateJwtSvid(t, bundles, aud, now).ok()) << "minute " << m;
    }
    std::erase_if(issued, [&](const auto& s) { return s.leaf.NotAfter() < now; });
    std::erase_if(tokens, [&](const auto& t) { return t.second < now; });
  }
  // Retiring CAs leave within 20 minutes of their activation: never more than three roots
  // (retiring, active, prepared) although each CA lives 24 h.
  EXPECT_LE(max_roots, 3u);
}

// --- persistence of the new fields, and sets stored before they existed ---

nlohmann::json Doc(const SecretBytes& blob) { return nlohmann::json::parse(blob.view()); }
SecretBytes Blob(const nlohmann::json& doc) { return SecretBytes::Copy(doc.dump()); }

TEST(AuthoritySet, SerializeKeepsIssuedExpiriesAndTheSchedule) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  const TimePoint t = TestNow() + kHour;
  ASSERT_TRUE(set->IssueX509Svid({Id("spiffe://example.org/w"), NewKey(), {}, kHour}, t).ok());
  ASSERT_TRUE(set->RotateNow(t, 10 * kMinute).ok());
  auto blob = set->Serialize();
  ASSERT_TRUE(blob.ok());
  auto back = AuthoritySet::Deserialize(Options(), RotationPolicy{}, std::nullopt, *blob);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(back->active().x509_issued_until, t + kHour);
  EXPECT_FALSE(back->active().jwt_issued_until.has_value());
  ASSERT_NE(back->prepared(), nullptr);
  EXPECT_EQ(back->prepared()->activate_at, t + 10 * kMinute);
  EXPECT_FALSE(back->prepared()->x509_issued_until.has_value());
  EXPECT_EQ(back->Bundle().ToJwks(), set->Bundle().ToJwks());
  // The restored schedule activates on time.
  EXPECT_TRUE(*back->Rotate(t + 10 * kMinute));
  EXPECT_EQ(back->retired_count(), 1u);
}

TEST(AuthoritySet, SetStoredBeforeIssuedExpiriesKeepsTheOldRetirementRule) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  // The first CA's last leaf expires at 21 h; recorded, it would leave the bundle then.
  ASSERT_TRUE(set->IssueX509Svid({Id("spiffe://example.org/w"), NewKey(), {}, 2 * kHour},
                                 TestNow() + 19 * kHour)
                  .ok());
  ASSERT_TRUE(set->Rotate(TestNow() + 20 * kHour).ok());  // one retired + one active
  auto blob = set->Serialize();
  ASSERT_TRUE(blob.ok());
  nlohmann::json doc = Doc(*blob);
  for (auto& g : doc["generations"]) {
    ASSERT_TRUE(g.contains("x509_issued_until"));
    g.erase("x509_issued_until");
    g.erase("jwt_issued_until");
  }
  auto old = AuthoritySet::Deserialize(Options(), RotationPolicy{}, std::nullopt, Blob(doc));
  ASSERT_TRUE(old.ok()) << old.error().ToString();
  ASSERT_EQ(old->retired_count(), 1u);
  auto gens = old->Generations();
  ASSERT_EQ(gens.size(), 2u);
  const GenerationInfo& retiring = gens[0];
  EXPECT_EQ(retiring.role, GenerationRole::kRetiring);
  EXPECT_EQ(retiring.x509_issued_until, retiring.not_after);
  EXPECT_EQ(retiring.leaves_bundle_at, retiring.not_after);
  // Missing field = the CA's notAfter: the retired CA stays until it expires, as before.
  EXPECT_FALSE(*old->Rotate(TestNow() + 23 * kHour));
  EXPECT_EQ(old->retired_count(), 1u);
  EXPECT_TRUE(*old->Rotate(TestNow() + 24 * kHour + Seconds(11)));
  EXPECT_EQ(old->retired_count(), 0u);
}

TEST(AuthoritySet, DeserializeRejectsBadIssuedExpiriesAndSchedules) {
  auto set = AuthoritySet::Create(Options(), RotationPolicy{}, TestNow());
  ASSERT_TRUE(set.ok());
  auto blob = set->Serialize();
  ASSERT_TRUE(blob.ok());
  const nlohmann::json good = Doc(*blob);
  struct Case {
    const char* member;
    nlohmann::json value;
  };
  for (const Case& c : {Case{"x509_issued_until", "soon"}, Case{"jwt_issued_until", -5},
                        Case{"x509_issued_until", 1.5}, Case{"activate_at", 1796398545},
                        Case{"jwt_issued_until", int64_t{1} << 50}}) {
    nlohmann::json doc = good;
    doc["generations"][0][c.member] = c.value;
    auto r = AuthoritySet::Deserialize(Options(), RotationPolicy{}, std::nullopt, Blob(doc));
    ASSERT_FALSE(r.ok()) << c.member << "=" << c.value.dump();
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find(c.member), std::string::npos) << r.error().message();
  }
}

}  // namespace
}  // namespace sigil::core
