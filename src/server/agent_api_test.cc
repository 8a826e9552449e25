// Agent API over real gRPC + TLS on 127.0.0.1 (ephemeral port); no mocks.
#include "server/agent_api.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>

#include "core/certificate.h"
#include "core/csr.h"
#include "core/jwt_svid.h"
#include "core/x509_svid.h"
#include "resources/parse.h"
#include "server/testing/agent_api_fixture.h"
#include "store/query_count.h"
#include "store/sqlite_store.h"

namespace sigil::server {
namespace {

namespace pb = sigil::agent::v1;
using core::PrivateKey;

using testing::AgentApiTest;
using testing::NodeCredential;
using testing::SetDeadline;

TEST(AgentApiStatus, MapsEveryErrorCode) {
  EXPECT_EQ(ToGrpcStatus(PermissionDenied("x")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ToGrpcStatus(Unauthenticated("x")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ToGrpcStatus(InvalidArgument("x")).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(NotFound("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(Error(ErrorCode::kAborted, "x")).error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(ToGrpcStatus(Unavailable("m")).error_message(), "m");
  EXPECT_FALSE(KindSyncedToAgents("CredentialSource"));
  EXPECT_TRUE(KindSyncedToAgents("WorkloadIdentity"));
}

TEST_F(AgentApiTest, JoinIssuesNodeSvidAndRefusesReplay) {
  NodeCredential node = JoinNode("node-a");
  ASSERT_FALSE(node.chain_pem.empty());
  auto node_chain = core::ParseCertificatesPem(node.chain_pem);
  ASSERT_TRUE(node_chain.ok());
  EXPECT_EQ(node_chain->front().UriSans().at(0), "spiffe://example.org/sigil/node/node-a");
  auto rec = cp_->store().GetNode("node-a");
  ASSERT_TRUE(rec.ok());

  // Replay the same token.
  auto key = PrivateKey::Generate(core::KeyType::kEcP256);
  auto csr = *core::CreateCsrDer(*key);
  pb::JoinRequest req;
  req.set_token(last_token_);
  req.set_node_name("node-a");
  req.set_csr(std::string(csr.begin(), csr.end()));
  pb::JoinResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  grpc::Status st = Client(nullptr)->Join(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_EQ(st.error_message(), "join refused: token is invalid, expired or already used");

  // Garbage CSR with a fresh token: INVALID_ARGUMENT.
  auto token = cp_->CreateJoinToken("node-b", Seconds(3600), "admin");
  ASSERT_TRUE(token.ok());
  req.set_token(std::string(token->text.view()));
  req.set_node_name("node-b");
  req.set_csr("not a csr");
  grpc::ClientContext ctx2;
  SetDeadline(ctx2);
  st = Client(nullptr)->Join(&ctx2, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
}

TEST_F(AgentApiTest, RenewRequiresANodeSvid) {
  NodeCredential node = JoinNode("node-a");
  ASSERT_FALSE(node.chain_pem.empty());
  pb::NodeSVIDResponse resp;
  grpc::Status st = Renew(&node, &resp);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(VerifyChainDer(resp.svid_chain()), "spiffe://example.org/sigil/node/node-a");
  EXPECT_GT(resp.expires_at(), ToUnixSeconds(Clock::System().Now()));
  auto rec = cp_->store().GetNode("node-a");
  ASSERT_TRUE(rec.ok());
  auto renewed = core::ParseCertificatesDer(
      {reinterpret_cast<const uint8_t*>(resp.svid_chain().data()), resp.svid_chain().size()});
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(rec->svid_serial, renewed->front().SerialHex());
  store::AuditFilter f;
  f.type = "node.renew";
  EXPECT_EQ(cp_->store().QueryAudit(f)->size(), 1u);

  // No client certificate.
  st = Renew(nullptr, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();

  // A valid SVID of this trust domain, but not a node.
  auto admin = cp_->IssueAdminCredential(false, "test");
  ASSERT_TRUE(admin.ok());
  NodeCredential admin_cred{admin->chain_pem, std::string(admin->key_pem.view())};
  st = Renew(&admin_cred, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("is not a node"), std::string::npos);

  // A revoked node.
  rec->revoked = true;
  ASSERT_TRUE(cp_->store().UpsertNode(*rec, {}).ok());
  st = Renew(&node, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();

  // The workload RPCs authenticate first, then check the request (no audience here).
  NodeCredential other = JoinNode("node-c");
  pb::MintJWTSVIDRequest mint;
  pb::MintJWTSVIDResponse mint_resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  st = Client(&other)->MintJWTSVID(&ctx, mint, &mint_resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  grpc::ClientContext ctx2;
  SetDeadline(ctx2);
  st = Client(nullptr)->MintJWTSVID(&ctx2, mint, &mint_resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
}

constexpr std::string_view kWebIdentity = R"(apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata:
  name: web
spec:
  spiffeId: spiffe://example.org/ns/web
  selectors: ["unix:uid:1000", "unix:path:/usr/bin/web"]
  dnsNames: [web.internal]
  ttl: 30m
)";

TEST_F(AgentApiTest, SignWorkloadSvidChecksSelectorsAndRequestedId) {
  NodeCredential node = JoinNode("node-a");
  ASSERT_FALSE(node.chain_pem.empty());
  ApplyYaml(std::string(kWebIdentity));
  const std::string web_id = "spiffe://example.org/ns/web";
  auto key = PrivateKey::Generate(core::KeyType::kEcP256);
  ASSERT_TRUE(key.ok());

  // Every selector present (plus an unrelated one): issued.
  pb::SignWorkloadSVIDResponse resp;
  grpc::Status st = SignWorkload(
      node, web_id, WebProcess({"unix:gid:1000", "unix:path:/usr/bin/web", "unix:uid:1000"}), *key,
      &resp);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(VerifyChainDer(resp.svid_chain()), web_id);
  auto chain = core::ParseCertificatesDer(
      {reinterpret_cast<const uint8_t*>(resp.svid_chain().data()), resp.svid_chain().size()});
  ASSERT_TRUE(chain.ok());
  const core::Certificate& leaf = chain->front();
  auto leaf_key = leaf.PublicKeyOf();
  ASSERT_TRUE(leaf_key.ok());
  EXPECT_TRUE(leaf_key->Equals(key->Public()));
  EXPECT_EQ(resp.expires_at(), ToUnixSeconds(leaf.NotAfter()));
  int64_t now = ToUnixSeconds(Clock::System().Now());
  EXPECT_GT(resp.expires_at(), now + 25 * 60);  // ttl 30m
  EXPECT_LE(resp.expires_at(), now + 31 * 60);
  auto issued = Audit("svid.issue");
  ASSERT_EQ(issued.size(), 1u);
  EXPECT_EQ(issued[0].event.node, "node-a");
  EXPECT_EQ(issued[0].event.identity, web_id);
  EXPECT_EQ(issued[0].event.pid, 4242);
  EXPECT_EQ(issued[0].event.exe, "/usr/bin/web");
  auto details = nlohmann::json::parse(issued[0].event.details_json);
  EXPECT_EQ(details.at("serial"), leaf.SerialHex());
  EXPECT_EQ(details.at("exe_sha256"), std::string(64, 'a'));
  EXPECT_EQ(details.at("uid"), 1000);
  EXPECT_EQ(details.at("cgroup"), "/system.slice/web.service");
  EXPECT_EQ(details.at("expires"), resp.expires_at());

  // One selector missing: denied and audited.
  st = SignWorkload(node, web_id, WebProcess({"unix:uid:1000"}), *key, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("no WorkloadIdentity matches"), std::string::npos);
  auto denied = Audit("svid.denied");
  ASSERT_EQ(denied.size(), 1u);
  EXPECT_EQ(denied[0].event.node, "node-a");
  EXPECT_EQ(denied[0].event.identity, web_id);
  EXPECT_EQ(denied[0].event.pid, 4242);
  EXPECT_EQ(denied[0].event.exe, "/usr/bin/web");

  // Matching selectors, but another ID than the identity renders: denied.
  st = SignWorkload(node, "spiffe://example.org/ns/admin",
                    WebProcess({"unix:path:/usr/bin/web", "unix:uid:1000"}), *key, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_EQ(Audit("svid.denied").size(), 2u);
  EXPECT_EQ(Audit("svid.issue").size(), 1u);

  // Matching, with a CSR that is not one: INVALID_ARGUMENT, nothing issued.
  pb::SignWorkloadSVIDRequest req;
  req.set_csr("not a csr");
  req.set_spiffe_id(web_id);
  *req.mutable_process() = WebProcess({"unix:path:/usr/bin/web", "unix:uid:1000"});
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  st = Client(&node)->SignWorkloadSVID(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_EQ(Audit("svid.issue").size(), 1u);

  // Without a node SVID: UNAUTHENTICATED before anything else.
  grpc::ClientContext ctx2;
  SetDeadline(ctx2);
  st = Client(nullptr)->SignWorkloadSVID(&ctx2, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
}

TEST_F(AgentApiTest, SignWorkloadSvidRendersTemplatesAndHonoursNodes) {
  NodeCredential node_a = JoinNode("node-a");
  NodeCredential web_1 = JoinNode("web-1");
  ASSERT_FALSE(node_a.chain_pem.empty());
  ASSERT_FALSE(web_1.chain_pem.empty());
  ApplyYaml(R"(apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata:
  name: per-host
spec:
  spiffeId: spiffe://example.org/host/{{node}}/u{{uid}}
  selectors: ["unix:uid:1000"]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata:
  name: web-only
spec:
  spiffeId: spiffe://example.org/ns/frontend
  selectors: ["unix:uid:1000"]
  nodes: ["web-*"]
)");
  auto key = PrivateKey::Generate(core::KeyType::kEcP256);
  ASSERT_TRUE(key.ok());
  pb::SignWorkloadSVIDResponse resp;
  grpc::Status st = SignWorkload(node_a, "spiffe://example.org/host/node-a/u1000",
                                 WebProcess({"unix:uid:1000"}), *key, &resp);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(VerifyChainDer(resp.svid_chain()), "spiffe://example.org/host/node-a/u1000");
  // Another node's rendering is not this node's to ask for.
  st = SignWorkload(node_a, "spiffe://example.org/host/web-1/u1000", WebProcess({"unix:uid:1000"}),
                    *key, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();

  // nodes: ["web-*"]: allowed on web-1 only.
  st = SignWorkload(node_a, "spiffe://example.org/ns/frontend", WebProcess({"unix:uid:1000"}), *key,
                    &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  st = SignWorkload(web_1, "spiffe://example.org/ns/frontend", WebProcess({"unix:uid:1000"}), *key,
                    &resp);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(VerifyChainDer(resp.svid_chain()), "spiffe://example.org/ns/frontend");
  for (const auto& r : Audit("svid.issue")) {
    EXPECT_EQ(r.event.pid, 4242);
    EXPECT_EQ(r.event.exe, "/usr/bin/web");
  }
  EXPECT_EQ(Audit("svid.issue").size(), 2u);
}

TEST_F(AgentApiTest, MintJwtSvidForMatchingProcess) {
  NodeCredential node = JoinNode("node-a");
  ASSERT_FALSE(node.chain_pem.empty());
  ApplyYaml(std::string(kWebIdentity));
  const std::string web_id = "spiffe://example.org/ns/web";
  auto mint = [&](const std::string& id, std::vector<std::string> audience,
                  const pb::AttestedProcess& process, pb::MintJWTSVIDResponse* resp) {
    pb::MintJWTSVIDRequest req;
    req.set_spiffe_id(id);
    for (auto& a : audience) req.add_audience(std::move(a));
    *req.mutable_process() = process;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    return Client(&node)->MintJWTSVID(&ctx, req, resp);
  };
  pb::MintJWTSVIDResponse resp;
  grpc::Status st =
      mint(web_id, {"vault"}, WebProcess({"unix:path:/usr/bin/web", "unix:uid:1000"}), &resp);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  core::BundleSet bundles;
  bundles.Put(std::make_shared<core::TrustBundle>(cp_->Bundle()));
  std::vector<std::string> expected_audience{"vault"};
  auto jwt = core::ValidateJwtSvid(resp.token(), bundles, expected_audience, Clock::System().Now());
  ASSERT_TRUE(jwt.ok()) << jwt.error().ToString();
  EXPECT_EQ(jwt->id.str(), web_id);
  EXPECT_EQ(resp.expires_at(), ToUnixSeconds(jwt->expiry));
  int64_t now = ToUnixSeconds(Clock::System().Now());
  EXPECT_LE(resp.expires_at(), now + 5 * 60 + 5);  // default 5m
  EXPECT_GT(resp.expires_at(), now + 4 * 60);
  auto issued = Audit("jwt.issue");
  ASSERT_EQ(issued.size(), 1u);
  EXPECT_EQ(issued[0].event.node, "node-a");
  EXPECT_EQ(issued[0].event.identity, web_id);
  EXPECT_EQ(issued[0].event.pid, 4242);
  EXPECT_EQ(issued[0].event.exe, "/usr/bin/web");

  // No audience: INVALID_ARGUMENT. A missing selector / other ID: PERMISSION_DENIED, audited.
  st = mint(web_id, {}, WebProcess({"unix:path:/usr/bin/web", "unix:uid:1000"}), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  st = mint(web_id, {"vault"}, WebProcess({"unix:path:/usr/bin/web"}), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  st = mint("spiffe://example.org/ns/db", {"vault"},
            WebProcess({"unix:path:/usr/bin/web", "unix:uid:1000"}), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  auto denied = Audit("svid.denied");
  ASSERT_EQ(denied.size(), 2u);
  for (const auto& r : denied) {
    EXPECT_EQ(r.event.pid, 4242);
    EXPECT_EQ(r.event.exe, "/usr/bin/web");
  }
  EXPECT_EQ(Audit("jwt.issue").size(), 1u);

  // jwtAudiences restricts what may be asked for.
  ApplyYaml(R"(apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata:
  name: web
spec:
  spiffeId: spiffe://example.org/ns/web
  selectors: ["unix:uid:1000", "unix:path:/usr/bin/web"]
  jwtAudiences: [vault]
)");
  st =
      mint(web_id, {"vault", "s3"}, WebProcess({"unix:path:/usr/bin/web", "unix:uid:1000"}), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  st = mint(web_id, {"vault"}, WebProcess({"unix:path:/usr/bin/web", "unix:uid:1000"}), &resp);
  EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
}

TEST_F(AgentApiTest, SyncSendsSnapshotThenDeltas) {
  NodeCredential node = JoinNode("node-a");
  ASSERT_FALSE(node.chain_pem.empty());
  Put("WorkloadIdentity", "web");
  Put("Service", "db");
  Put("CredentialSource", "aws");  // never sent to agents
  api_->AttachMetrics(&metrics_);

  auto stub = Client(&node);
  grpc::ClientContext ctx;
  SetDeadline(ctx, std::chrono::seconds(30));
  pb::SyncRequest req;
  auto reader = stub->Sync(&ctx, req);

  pb::SyncResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_TRUE(msg.snapshot());
  EXPECT_FALSE(msg.trust_bundle_jwks().empty());
  std::set<std::string> names;
  for (const auto& r : msg.upserts()) names.insert(r.kind() + "/" + r.name());
  EXPECT_EQ(names, (std::set<std::string>{"WorkloadIdentity/web", "Service/db"}));
  uint64_t snapshot_revision = msg.revision();
  EXPECT_GT(snapshot_revision, 0u);
  EXPECT_NE(registry_.Render().find("sigil_agents_connected 1"), std::string::npos);

  auto t0 = std::chrono::steady_clock::now();
  Put("AccessPolicy", "allow-web");
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_FALSE(msg.snapshot());
  EXPECT_GT(msg.revision(), snapshot_revision);
  ASSERT_EQ(msg.upserts_size(), 1);
  EXPECT_EQ(msg.upserts(0).kind(), "AccessPolicy");
  EXPECT_EQ(msg.upserts(0).name(), "allow-web");
  EXPECT_EQ(msg.upserts(0).spec_json(), "{}");
  EXPECT_TRUE(msg.trust_bundle_jwks().empty());

  // A CredentialSource is never sent, only its name, so agents drop the grants it backs.
  Put("CredentialSource", "gcp");
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_FALSE(msg.snapshot());
  EXPECT_EQ(msg.upserts_size(), 0);
  EXPECT_EQ(msg.deletes_size(), 0);
  ASSERT_EQ(msg.changed_credential_sources_size(), 1);
  EXPECT_EQ(msg.changed_credential_sources(0), "gcp");

  Delete("Service", "db");
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_EQ(msg.upserts_size(), 0);
  EXPECT_EQ(msg.changed_credential_sources_size(), 0);
  ASSERT_EQ(msg.deletes_size(), 1);
  EXPECT_EQ(msg.deletes(0).kind(), "Service");
  EXPECT_EQ(msg.deletes(0).name(), "db");
  uint64_t last = msg.revision();

  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // Resume from the last revision: the bundle first, then only newer changes.
  grpc::ClientContext ctx2;
  SetDeadline(ctx2, std::chrono::seconds(30));
  req.set_from_revision(last);
  auto reader2 = stub->Sync(&ctx2, req);
  ASSERT_TRUE(reader2->Read(&msg));
  EXPECT_FALSE(msg.snapshot());
  EXPECT_FALSE(msg.trust_bundle_jwks().empty());
  EXPECT_EQ(msg.upserts_size(), 0);
  Put("Service", "cache");
  ASSERT_TRUE(reader2->Read(&msg));
  ASSERT_EQ(msg.upserts_size(), 1);
  EXPECT_EQ(msg.upserts(0).name(), "cache");
  ctx2.TryCancel();
  while (reader2->Read(&msg)) {
  }
  (void)reader2->Finish();

  // A revision this store never had: a fresh snapshot.
  grpc::ClientContext ctx3;
  SetDeadline(ctx3, std::chrono::seconds(30));
  req.set_from_revision(last + 1000);
  auto reader3 = stub->Sync(&ctx3, req);
  ASSERT_TRUE(reader3->Read(&msg));
  EXPECT_TRUE(msg.snapshot());
  names.clear();
  for (const auto& r : msg.upserts()) names.insert(r.kind() + "/" + r.name());
  EXPECT_EQ(names, (std::set<std::string>{"WorkloadIdentity/web", "AccessPolicy/allow-web",
                                          "Service/cache"}));
  ctx3.TryCancel();
  while (reader3->Read(&msg)) {
  }
  (void)reader3->Finish();
}

TEST_F(AgentApiTest, SyncFromACompactedRevisionGetsASnapshot) {
  NodeCredential node = JoinNode("node-a");
  ASSERT_FALSE(node.chain_pem.empty());
  Put("Service", "a");
  Put("Service", "b");
  Put("Service", "c");
  ASSERT_TRUE(cp_->store().CompactChanges(1).ok());
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  pb::SyncRequest req;
  req.set_from_revision(1);
  auto reader = Client(&node)->Sync(&ctx, req);
  pb::SyncResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_TRUE(msg.snapshot());
  EXPECT_EQ(msg.upserts_size(), 3);
  EXPECT_EQ(msg.revision(), *cp_->store().CurrentRevision());
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  (void)reader->Finish();
}

// Streams that start at the same revision share one snapshot (the store is read once); a
// commit makes the next stream's snapshot new.
TEST_F(AgentApiTest, SnapshotsAtOneRevisionAreBuiltOnce) {
  NodeCredential a = JoinNode("node-a");
  NodeCredential b = JoinNode("node-b");
  ASSERT_FALSE(a.chain_pem.empty());
  ASSERT_FALSE(b.chain_pem.empty());
  Put("WorkloadIdentity", "web");
  Put("Service", "db");
  struct Opened {
    pb::SyncResponse snapshot;
    uint64_t queries = 0;  // store statements while the stream opened
  };
  auto open = [&](const NodeCredential& node) {
    Opened out;
    auto stub = Client(&node);
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    const uint64_t q0 = store::QueriesExecuted();
    auto reader = stub->Sync(&ctx, pb::SyncRequest{});
    EXPECT_TRUE(reader->Read(&out.snapshot));
    out.queries = store::QueriesExecuted() - q0;
    ctx.TryCancel();
    pb::SyncResponse msg;
    while (reader->Read(&msg)) {
    }
    (void)reader->Finish();
    return out;
  };
  Opened first = open(a);
  Opened second = open(b);
  ASSERT_TRUE(first.snapshot.snapshot());
  ASSERT_TRUE(second.snapshot.snapshot());
  EXPECT_EQ(second.snapshot.SerializeAsString(), first.snapshot.SerializeAsString());
  EXPECT_EQ(first.snapshot.upserts_size(), 2);
  // The first read every synced kind (a read transaction each); the second only the revision
  // (plus the node lookup both do, and at most a few polls of the change feed).
  EXPECT_GE(first.queries, second.queries + 10) << first.queries << " vs " << second.queries;

  Put("Service", "cache");
  Opened third = open(a);
  ASSERT_TRUE(third.snapshot.snapshot());
  EXPECT_EQ(third.snapshot.revision(), *cp_->store().CurrentRevision());
  EXPECT_GT(third.snapshot.revision(), first.snapshot.revision());
  std::set<std::string> names;
  for (const auto& r : third.snapshot.upserts()) names.insert(r.kind() + "/" + r.name());
  EXPECT_EQ(names, (std::set<std::string>{"WorkloadIdentity/web", "Service/db", "Service/cache"}));
}

TEST_F(AgentApiTest, SyncWithoutClientCertIsUnauthenticated) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  auto reader = Client(nullptr)->Sync(&ctx, pb::SyncRequest{});
  pb::SyncResponse msg;
  EXPECT_FALSE(reader->Read(&msg));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace sigil::server
