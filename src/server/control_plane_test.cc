#include "server/control_plane.h"

#include <gtest/gtest.h>

#include "core/csr.h"
#include "core/join_token.h"
#include "core/x509_svid.h"
#include "store/sqlite_store.h"

namespace sigil::server {
namespace {

using core::PrivateKey;

class ControlPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    auto store = store::SqliteStore::Open(":memory:");
    ASSERT_TRUE(store.ok()) << store.error().ToString();
    raw_store_ = store->get();
    auto kek = core::Kek::FromBytes(SecretBytes(32));
    ASSERT_TRUE(kek.ok());
    ControlPlaneOptions options{{*core::TrustDomain::Parse("example.org")}, {}, {}};
    auto cp = ControlPlane::Open(options, std::move(store).value(), std::move(kek).value(), clock_);
    ASSERT_TRUE(cp.ok()) << cp.error().ToString();
    cp_ = std::move(cp).value();
  }

  std::vector<uint8_t> Csr() {
    node_key_ = std::make_unique<PrivateKey>(*PrivateKey::Generate(core::KeyType::kEcP256));
    return *core::CreateCsrDer(*node_key_);
  }

  std::vector<store::AuditRecord> Audit(const std::string& type) {
    store::AuditFilter f;
    f.type = type;
    return *raw_store_->QueryAudit(f);
  }

  FakeClock clock_{FromUnixSeconds(1796398545)};
  store::Store* raw_store_ = nullptr;
  std::unique_ptr<ControlPlane> cp_;
  std::unique_ptr<PrivateKey> node_key_;
};

TEST_F(ControlPlaneTest, FirstOpenCreatesAndSealsTheCa) {
  EXPECT_TRUE(cp_->created_authorities());
  EXPECT_EQ(Audit("ca.init").size(), 1u);
  auto blob = raw_store_->GetBlob("authorities");
  ASSERT_TRUE(blob.ok());
  // The sealed blob does not contain a PEM/PKCS#8 private key in clear.
  std::string bytes(blob->begin(), blob->end());
  EXPECT_EQ(bytes.find("PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(bytes.find("ca_key"), std::string::npos);
}

TEST_F(ControlPlaneTest, JoinTokenIsSingleUseAndEveryOutcomeIsAudited) {
  auto token = cp_->CreateJoinToken("node-a", Seconds(3600), "admin");
  ASSERT_TRUE(token.ok()) << token.error().ToString();
  EXPECT_EQ(Audit("token.create").size(), 1u);
  // The store never sees the token text.
  auto tokens = raw_store_->ListJoinTokens();
  ASSERT_TRUE(tokens.ok());
  for (const auto& t : *tokens) {
    EXPECT_EQ(std::string(token->text.view()).find(t.token_hash), std::string::npos);
  }
  auto joined = cp_->JoinNode(token->text.view(), "node-a", Csr(), "127.0.0.1");
  ASSERT_TRUE(joined.ok()) << joined.error().ToString();
  EXPECT_EQ(joined->spiffe_id, "spiffe://example.org/sigil/node/node-a");
  core::BundleSet bundles;
  bundles.Put(std::make_shared<core::TrustBundle>(cp_->Bundle()));
  auto id = core::VerifyX509Svid(joined->svid.chain, bundles, clock_.Now());
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->str(), "spiffe://example.org/sigil/node/node-a");
  EXPECT_TRUE(joined->svid.leaf.PublicKeyOf()->Equals(node_key_->Public()));
  EXPECT_EQ(Audit("token.use").size(), 1u);
  EXPECT_EQ(Audit("node.join").size(), 1u);
  EXPECT_TRUE(raw_store_->GetNode("node-a").ok());

  auto replay = cp_->JoinNode(token->text.view(), "node-a", Csr(), "127.0.0.1");
  ASSERT_FALSE(replay.ok());
  EXPECT_EQ(replay.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(Audit("token.reuse").size(), 1u);
}

TEST_F(ControlPlaneTest, ExpiredUnknownForeignAndMismatchedTokensAreRefused) {
  auto token = cp_->CreateJoinToken("node-b", Seconds(60), "admin");
  ASSERT_TRUE(token.ok());
  clock_.Advance(Seconds(61));
  EXPECT_FALSE(cp_->JoinNode(token->text.view(), "node-b", Csr(), "p").ok());
  EXPECT_EQ(Audit("token.expired").size(), 1u);
  // The sweeper audits an expiry only for tokens nobody tried (each exactly once).
  auto unused = cp_->CreateJoinToken("node-c", Seconds(60), "admin");
  ASSERT_TRUE(unused.ok());
  clock_.Advance(Seconds(61));
  EXPECT_GE(*cp_->SweepExpiredTokens(), 1u);
  EXPECT_EQ(*cp_->SweepExpiredTokens(), 0u);

  auto fresh = cp_->CreateJoinToken("node-d", Seconds(600), "admin");
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(cp_->JoinNode(fresh->text.view(), "node-x", Csr(), "p").ok());
  EXPECT_EQ(Audit("token.mismatch").size(), 1u);

  EXPECT_FALSE(cp_->JoinNode("SJT1.garbage", "node-d", Csr(), "p").ok());
  EXPECT_EQ(Audit("token.invalid").size(), 1u);
  // A well-formed token for another CA.
  std::string other = "SJT1.0123abcd." + std::string(32, 'A') + "." + std::string(64, 'a');
  EXPECT_FALSE(cp_->JoinNode(other, "node-d", Csr(), "p").ok());
  EXPECT_EQ(Audit("token.invalid").size(), 2u);
  // None of the refusals leaked the token into the audit log.
  auto records = raw_store_->QueryAudit(store::AuditFilter{});
  ASSERT_TRUE(records.ok());
  for (const auto& r : *records) {
    EXPECT_EQ(r.event.details_json.find(std::string(fresh->text.view()).substr(14, 32)),
              std::string::npos);
  }
  EXPECT_TRUE(raw_store_->VerifyAudit()->ok);
}

TEST_F(ControlPlaneTest, IssuanceIsCountedInMetrics) {
  metrics::Registry registry;
  metrics::ServerMetrics m(registry);
  cp_->AttachMetrics(&m);
  auto token = cp_->CreateJoinToken("node-m", Seconds(600), "admin");
  ASSERT_TRUE(token.ok());
  ASSERT_TRUE(cp_->JoinNode(token->text.view(), "node-m", Csr(), "p").ok());
  ASSERT_TRUE(cp_->IssueAdminCredential(true, "t").ok());
  std::string text = registry.Render();
  EXPECT_NE(text.find("sigil_svid_issued_total 2"), std::string::npos) << text;
  EXPECT_NE(text.find("sigil_svid_issue_seconds_count 2"), std::string::npos) << text;
}

TEST_F(ControlPlaneTest, AdminCredentialsAndBadInput) {
  auto admin = cp_->IssueAdminCredential(false, "init");
  ASSERT_TRUE(admin.ok());
  EXPECT_EQ(admin->spiffe_id, "spiffe://example.org/sigil/admin");
  EXPECT_TRUE(admin->key_pem.view().starts_with("-----BEGIN PRIVATE KEY-----"));
  auto ro = cp_->IssueAdminCredential(true, "init");
  ASSERT_TRUE(ro.ok());
  EXPECT_EQ(ro->spiffe_id, "spiffe://example.org/sigil/admin/readonly");
  EXPECT_EQ(Audit("admin.credential.create").size(), 2u);
  EXPECT_FALSE(cp_->CreateJoinToken("Bad Name", Seconds(60), "a").ok());
  EXPECT_FALSE(cp_->CreateJoinToken("ok", Seconds(0), "a").ok());
  EXPECT_FALSE(cp_->CreateJoinToken("ok", Seconds(30 * 24 * 3600), "a").ok());
}

}  // namespace
}  // namespace sigil::server
