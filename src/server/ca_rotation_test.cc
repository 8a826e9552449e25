// ControlPlane CA rotation (ca_rotation.cc): `sigil ca rotate`, the maintenance tick's steps,
// audit records, persistence, the write-ahead of issued expiries. Real SQLite, real keys.
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/duration.h"
#include "core/certificate.h"
#include "server/control_plane.h"
#include "store/sqlite_store.h"

namespace sigil::server {
namespace {

class CaRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("sigil-ca-rotation-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    Open();
  }
  void TearDown() override {
    cp_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Open() {
    cp_.reset();
    auto store = store::SqliteStore::Open((dir_ / "sigil.db").string());
    ASSERT_TRUE(store.ok()) << store.error().ToString();
    raw_store_ = store->get();
    auto kek = core::Kek::FromBytes(SecretBytes(32));
    ASSERT_TRUE(kek.ok());
    ControlPlaneOptions options{{*core::TrustDomain::Parse("example.org")}, {}, {}};
    options.server_svid_ttl = Seconds(3600);
    auto cp = ControlPlane::Open(options, std::move(store).value(), std::move(kek).value(), clock_);
    ASSERT_TRUE(cp.ok()) << cp.error().ToString();
    cp_ = std::move(cp).value();
  }

  std::vector<store::AuditRecord> Audit(const std::string& type) {
    store::AuditFilter f;
    f.type = type;
    return *raw_store_->QueryAudit(f);
  }

  // The certificate chain (leaf first) of a fresh server credential.
  std::vector<core::Certificate> IssueLeaf() {
    auto cred = cp_->IssueServerCredential({"localhost"});
    EXPECT_TRUE(cred.ok()) << cred.error().ToString();
    auto chain = core::ParseCertificatesPem(cred->chain_pem);
    EXPECT_TRUE(chain.ok());
    return *chain;
  }

  const core::GenerationInfo* Role(const CaRotationStatus& s, core::GenerationRole role) {
    for (const auto& g : s.generations) {
      if (g.role == role) return &g;
    }
    return nullptr;
  }

  std::filesystem::path dir_;
  FakeClock clock_{FromUnixSeconds(1796398545)};
  store::Store* raw_store_ = nullptr;
  std::unique_ptr<ControlPlane> cp_;
};

TEST_F(CaRotationTest, RotatePublishesFirstActivatesOnTheTickAndRetiresAfterTheLastLeaf) {
  const std::string old_ca = cp_->SigningCa().Fingerprint();
  const std::vector<core::Certificate> old_leaf = IssueLeaf();  // 1 h, from the old CA
  ASSERT_EQ(old_leaf[1].Fingerprint(), old_ca);

  auto prepared = cp_->RotateCa(Seconds(10), false, "spiffe://example.org/sigil/admin");
  ASSERT_TRUE(prepared.ok()) << prepared.error().ToString();
  EXPECT_NE(prepared->ca_sha256, old_ca);
  EXPECT_EQ(prepared->activate_at, clock_.Now() + Seconds(10));
  // Bundle first: both roots are published before the new CA signs anything.
  EXPECT_EQ(cp_->Bundle().x509_authorities().size(), 2u);
  EXPECT_EQ(cp_->SigningCa().Fingerprint(), old_ca);
  auto records = Audit("ca.rotate.prepare");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].event.actor, "spiffe://example.org/sigil/admin");
  auto details = nlohmann::json::parse(records[0].event.details_json);
  EXPECT_EQ(details["ca_sha256"], prepared->ca_sha256);
  EXPECT_EQ(details["activate_after_seconds"], 10);
  EXPECT_EQ(details["new_generation"], true);
  EXPECT_EQ(details["trigger"], "operator");

  clock_.Advance(Seconds(9));
  EXPECT_FALSE(*cp_->RotateIfDue());
  EXPECT_TRUE(Audit("ca.rotate.activate").empty());
  clock_.Advance(Seconds(1));
  EXPECT_TRUE(*cp_->RotateIfDue());
  records = Audit("ca.rotate.activate");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].event.actor, "server");
  details = nlohmann::json::parse(records[0].event.details_json);
  EXPECT_EQ(details["ca_sha256"], prepared->ca_sha256);
  EXPECT_EQ(details["previous_ca_sha256"], old_ca);
  EXPECT_EQ(cp_->SigningCa().Fingerprint(), prepared->ca_sha256);
  const std::vector<core::Certificate> new_leaf = IssueLeaf();
  EXPECT_EQ(new_leaf[1].Fingerprint(), prepared->ca_sha256);

  // The old CA stays while its last leaf is valid; "leaves bundle at" covers that leaf (the
  // stored bound runs at most 5 minutes ahead of it).
  CaRotationStatus status = cp_->CaStatus();
  const core::GenerationInfo* retiring = Role(status, core::GenerationRole::kRetiring);
  ASSERT_NE(retiring, nullptr);
  EXPECT_EQ(retiring->ca_sha256, old_ca);
  ASSERT_TRUE(retiring->leaves_bundle_at.has_value());
  const TimePoint leaves = *retiring->leaves_bundle_at;
  EXPECT_GE(leaves, old_leaf[0].NotAfter());
  EXPECT_LE(leaves, old_leaf[0].NotAfter() + Seconds(300));
  EXPECT_LT(leaves, old_leaf[1].NotAfter());  // long before the old CA itself expires
  clock_.Set(leaves);
  EXPECT_FALSE(*cp_->RotateIfDue());
  EXPECT_EQ(cp_->Bundle().x509_authorities().size(), 2u);
  clock_.Advance(Seconds(1));
  EXPECT_TRUE(*cp_->RotateIfDue());
  records = Audit("ca.rotate.retire");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(records[0].event.details_json)["ca_sha256"], old_ca);
  ASSERT_EQ(cp_->Bundle().x509_authorities().size(), 1u);
  EXPECT_EQ(cp_->Bundle().x509_authorities()[0].Fingerprint(), prepared->ca_sha256);
  EXPECT_TRUE(raw_store_->VerifyAudit()->ok);
}

TEST_F(CaRotationTest, SecondRotationIsRefusedWhilePendingUnlessForced) {
  EXPECT_EQ(cp_->RotateCa(Seconds(-1), false, "a").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(cp_->RotateCa(Seconds(3 * 24 * 3600), false, "a").error().code(),
            ErrorCode::kInvalidArgument);
  auto first = cp_->RotateCa(Seconds(600), false, "a");
  ASSERT_TRUE(first.ok());
  const uint64_t seq = cp_->Bundle().sequence();
  auto again = cp_->RotateCa(Seconds(60), false, "a");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(again.error().message().find(first->ca_sha256), std::string::npos)
      << again.error().message();
  EXPECT_NE(again.error().message().find(FormatRfc3339(*first->activate_at)), std::string::npos)
      << again.error().message();
  EXPECT_NE(again.error().message().find("--force"), std::string::npos);
  // --force reschedules the same generation; nothing new is published.
  auto forced = cp_->RotateCa(Seconds(0), true, "a");
  ASSERT_TRUE(forced.ok()) << forced.error().ToString();
  EXPECT_EQ(forced->ca_sha256, first->ca_sha256);
  EXPECT_EQ(forced->activate_at, clock_.Now());
  EXPECT_EQ(cp_->Bundle().sequence(), seq);
  auto records = Audit("ca.rotate.prepare");
  ASSERT_EQ(records.size(), 2u);
  auto details = nlohmann::json::parse(records[1].event.details_json);
  EXPECT_EQ(details["new_generation"], false);
  EXPECT_EQ(details["rescheduled"], true);
  EXPECT_TRUE(*cp_->RotateIfDue());
  EXPECT_EQ(cp_->SigningCa().Fingerprint(), first->ca_sha256);
  // Once activated nothing is pending: the next rotation is accepted.
  EXPECT_TRUE(cp_->RotateCa(Seconds(60), false, "a").ok());
}

TEST_F(CaRotationTest, ScheduleAndIssuedExpirySurviveARestart) {
  const std::vector<core::Certificate> leaf = IssueLeaf();
  auto prepared = cp_->RotateCa(Seconds(120), false, "a");
  ASSERT_TRUE(prepared.ok());
  Open();  // same database and KEK: a server restart
  CaRotationStatus status = cp_->CaStatus();
  ASSERT_EQ(status.generations.size(), 2u);
  const core::GenerationInfo* pending = Role(status, core::GenerationRole::kPrepared);
  ASSERT_NE(pending, nullptr);
  EXPECT_EQ(pending->ca_sha256, prepared->ca_sha256);
  EXPECT_TRUE(pending->scheduled);
  EXPECT_EQ(pending->activate_at, prepared->activate_at);
  // What the first process issued is on record, so the old CA cannot leave too early.
  const core::GenerationInfo* active = Role(status, core::GenerationRole::kActive);
  ASSERT_NE(active, nullptr);
  ASSERT_TRUE(active->x509_issued_until.has_value());
  EXPECT_GE(*active->x509_issued_until, leaf[0].NotAfter());
  EXPECT_FALSE(cp_->RotateCa(Seconds(1), false, "a").ok());  // still pending after restart

  clock_.Advance(Seconds(120));
  EXPECT_TRUE(*cp_->RotateIfDue());
  Open();
  EXPECT_EQ(cp_->SigningCa().Fingerprint(), prepared->ca_sha256);
  status = cp_->CaStatus();
  const core::GenerationInfo* retiring = Role(status, core::GenerationRole::kRetiring);
  ASSERT_NE(retiring, nullptr);
  EXPECT_GE(*retiring->leaves_bundle_at, leaf[0].NotAfter());
  EXPECT_EQ(Audit("ca.rotate.prepare").size(), 1u);
  EXPECT_EQ(Audit("ca.rotate.activate").size(), 1u);
}

TEST_F(CaRotationTest, EveryIssuedExpiryIsStoredBeforeTheCertificateLeaves) {
  // Each issuance is covered by the stored state the moment it returns: a crash right after
  // it (here: reopening the database) still knows about it. The stored bound runs ahead in
  // steps, so issuing again within the step does not write.
  auto blob_before = raw_store_->GetBlob(std::string(kAuthoritiesBlob));
  ASSERT_TRUE(blob_before.ok());
  std::vector<core::Certificate> first = IssueLeaf();
  auto blob_first = raw_store_->GetBlob(std::string(kAuthoritiesBlob));
  ASSERT_TRUE(blob_first.ok());
  EXPECT_NE(*blob_first, *blob_before);
  clock_.Advance(Seconds(1));
  std::vector<core::Certificate> second = IssueLeaf();  // within the write-ahead step
  auto blob_second = raw_store_->GetBlob(std::string(kAuthoritiesBlob));
  ASSERT_TRUE(blob_second.ok());
  EXPECT_EQ(*blob_second, *blob_first);
  Open();
  const CaRotationStatus status = cp_->CaStatus();
  const core::GenerationInfo* active = Role(status, core::GenerationRole::kActive);
  ASSERT_NE(active, nullptr);
  ASSERT_TRUE(active->x509_issued_until.has_value());
  EXPECT_GE(*active->x509_issued_until, second[0].NotAfter());
}

}  // namespace
}  // namespace sigil::server
