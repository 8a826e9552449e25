// Revocation (issue 7): the Revocation resources ControlPlane writes, what the server refuses
// because of them, and what Sync delivers. Real gRPC + TLS on loopback, real SQLite; no mocks.
#include "server/revocations.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "core/certificate.h"
#include "core/csr.h"
#include "server/testing/agent_api_fixture.h"
#include "store/sqlite_store.h"

namespace sigil::server {
namespace {

namespace pb = sigil::agent::v1;
using core::PrivateKey;
using testing::AgentApiTest;
using testing::NodeCredential;
using testing::SetDeadline;

constexpr std::string_view kAdmin = "spiffe://example.org/sigil/admin";

constexpr std::string_view kResources = R"(apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {name: web}
spec:
  spiffeId: spiffe://example.org/ns/web
  selectors: ["unix:uid:1000", "unix:path:/usr/bin/web"]
  ttl: 30m
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {name: web-alt}
spec:
  spiffeId: spiffe://example.org/ns/web-alt
  selectors: ["unix:uid:1000"]
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: openai}
spec:
  mode: inject
  addresses: ["api.openai.com:443"]
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {name: openai-key}
spec: {type: static, value: sk-live-REVOKE-TEST}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {name: openai}
spec:
  source: openai-key
  service: openai
  identities: ["spiffe://example.org/ns/web"]
  delivery: {header: {name: Authorization, template: "Bearer {{secret}}"}}
)";

// --- Pure functions -------------------------------------------------------------------------

TEST(RevocationFormat, KindsSerialsAndReasons) {
  for (auto kind : {RevocationKind::kNode, RevocationKind::kIdentity, RevocationKind::kSvid,
                    RevocationKind::kBinding}) {
    EXPECT_EQ(RevocationKindFromName(RevocationKindName(kind)), kind);
  }
  EXPECT_FALSE(RevocationKindFromName("Node").has_value());
  EXPECT_FALSE(RevocationKindFromName("").has_value());
  EXPECT_EQ(RevocationName(RevocationKind::kSvid, "3fa9"), "svid/3fa9");

  EXPECT_EQ(*NormalizeSerial("003FA9"), "3fa9");
  EXPECT_EQ(*NormalizeSerial("3fa9"), "3fa9");
  EXPECT_EQ(*NormalizeSerial("0000"), "0");
  EXPECT_EQ(*NormalizeSerial(std::string(40, 'F')), std::string(40, 'f'));
  EXPECT_EQ(*NormalizeSerial("00" + std::string(40, 'a')), std::string(40, 'a'));
  for (std::string_view bad : {"", "3f:a9", "0x3fa9", "xyz", " 3fa9", "3fa9\n"}) {
    auto r = NormalizeSerial(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(r.error().message().starts_with("target: ")) << r.error().message();
  }
  EXPECT_FALSE(NormalizeSerial(std::string(41, 'a')).ok());

  EXPECT_TRUE(ValidateRevocationReason("key leaked").ok());
  EXPECT_TRUE(ValidateRevocationReason(std::string(kMaxRevocationReasonBytes, 'x')).ok());
  EXPECT_TRUE(ValidateRevocationReason("cl\xc3\xa9 perdue").ok());
  for (const std::string& bad : {std::string(), std::string(kMaxRevocationReasonBytes + 1, 'x'),
                                 std::string("a\nb"), std::string("a\x7f"), std::string("\xc3"),
                                 std::string("\xed\xa0\x80"), std::string("\xc0\xaf")}) {
    auto r = ValidateRevocationReason(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(r.error().message().starts_with("reason: ")) << r.error().message();
  }
}

TEST(RevocationFormat, SpecIsCanonicalAndRoundTrips) {
  Revocation r;
  r.kind = RevocationKind::kNode;
  r.target = "web-1";
  r.reason = "stolen";
  r.revoked_at = 1796398545;
  r.revoked_by = std::string(kAdmin);
  r.serials = {"b2", "a1", "b2"};
  r.identities = {"spiffe://example.org/sigil/node/web-1"};
  EXPECT_EQ(r.SpecJson(),
            R"({"expiresAt":0,"identities":["spiffe://example.org/sigil/node/web-1"],)"
            R"("kind":"node","reason":"stolen","revokedAt":1796398545,)"
            R"("revokedBy":"spiffe://example.org/sigil/admin","serials":["a1","b2"],)"
            R"("target":"web-1"})");
  store::StoredResource stored{"Revocation", "node/web-1", 7, r.SpecJson()};
  auto back = Revocation::FromStored(stored);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(back->kind, RevocationKind::kNode);
  EXPECT_EQ(back->target, "web-1");
  EXPECT_EQ(back->serials, (std::vector<std::string>{"a1", "b2"}));
  EXPECT_EQ(back->resource_version, 7u);
  auto api = nlohmann::json::parse(back->ApiJson());
  EXPECT_EQ(api.at("name"), "node/web-1");
  EXPECT_EQ(api.at("resourceVersion"), "7");
  EXPECT_EQ(api.at("kind"), "node");

  // Malformed stored specs are refused, naming what is wrong.
  stored.name = "node/web-2";
  EXPECT_NE(Revocation::FromStored(stored).error().message().find("name"), std::string::npos);
  for (std::string_view bad :
       {R"([])", R"({"kind":"gizmo"})",
        R"({"kind":"svid","target":"1","reason":"r","revokedBy":"a","revokedAt":"1",)"
        R"("expiresAt":0,"serials":[],"identities":[]})",
        R"({"kind":"svid","target":"1","reason":"r","revokedBy":"a","revokedAt":1,)"
        R"("expiresAt":0,"serials":[1],"identities":[]})"}) {
    store::StoredResource s{"Revocation", "svid/1", 1, std::string(bad)};
    EXPECT_FALSE(Revocation::FromStored(s).ok()) << bad;
  }
}

// --- Over the agent API ---------------------------------------------------------------------

class RevocationTest : public AgentApiTest {
 protected:
  grpc::Status Fetch(const NodeCredential& node, const std::string& binding,
                     pb::FetchCredentialResponse* resp) {
    pb::FetchCredentialRequest req;
    req.set_binding(binding);
    *req.mutable_process() = Web();
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    return Client(&node)->FetchCredential(&ctx, req, resp);
  }
  grpc::Status Mint(const NodeCredential& node, const std::string& id) {
    pb::MintJWTSVIDRequest req;
    req.set_spiffe_id(id);
    req.add_audience("vault");
    *req.mutable_process() = Web();
    pb::MintJWTSVIDResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    return Client(&node)->MintJWTSVID(&ctx, req, &resp);
  }
  // Signs a workload SVID for `id`; returns the leaf's serial ("" on failure).
  std::string Sign(const NodeCredential& node, const std::string& id, grpc::Status* status) {
    auto key = PrivateKey::Generate(core::KeyType::kEcP256);
    pb::SignWorkloadSVIDResponse resp;
    *status = SignWorkload(node, id, Web(), *key, &resp);
    if (!status->ok()) return "";
    auto chain = core::ParseCertificatesDer(
        {reinterpret_cast<const uint8_t*>(resp.svid_chain().data()), resp.svid_chain().size()});
    return chain.ok() ? chain->front().SerialHex() : "";
  }
  static pb::AttestedProcess Web() {
    return WebProcess({"unix:uid:1000", "unix:path:/usr/bin/web"});
  }
  // Renews `node`'s SVID through the API; the new certificate and its key.
  NodeCredential Renewed(const NodeCredential& node) {
    auto key = PrivateKey::Generate(core::KeyType::kEcP256);
    auto csr = *core::CreateCsrDer(*key);
    pb::RenewNodeSVIDRequest req;
    req.set_csr(std::string(csr.begin(), csr.end()));
    pb::NodeSVIDResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    grpc::Status st = Client(&node)->RenewNodeSVID(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    auto chain = core::ParseCertificatesDer(
        {reinterpret_cast<const uint8_t*>(resp.svid_chain().data()), resp.svid_chain().size()});
    if (!st.ok() || !chain.ok()) return {};
    return {core::CertificatesToPem(*chain), std::string((*key->ToPkcs8Pem()).view())};
  }
  static std::string SerialOf(const NodeCredential& node) {
    auto chain = core::ParseCertificatesPem(node.chain_pem);
    return chain.ok() ? chain->front().SerialHex() : "";
  }
  std::string StoredSpec(const std::string& name) {
    auto got = cp_->store().Get("Revocation", name);
    return got.ok() ? got->spec_json : "missing: " + got.error().message();
  }
  nlohmann::json Details(const store::AuditRecord& r) {
    return nlohmann::json::parse(r.event.details_json);
  }
  Revocation MustRevoke(RevocationKind kind, const std::string& target, const std::string& reason) {
    auto r = cp_->Revoke(kind, target, reason, std::string(kAdmin));
    EXPECT_TRUE(r.ok()) << r.error().ToString();
    return r.ok() ? *r : Revocation{};
  }
};

TEST_F(RevocationTest, IdentityRevokedRefusesSvidsJwtsAndCredentialsUntilLifted) {
  NodeCredential node = JoinNode("node-a");
  ApplyYaml(std::string(kResources));
  const std::string web = "spiffe://example.org/ns/web";
  grpc::Status st;
  ASSERT_FALSE(Sign(node, web, &st).empty()) << st.error_message();

  const int64_t before = ToUnixSeconds(Clock::System().Now());
  Revocation r = MustRevoke(RevocationKind::kIdentity, web, "compromised host image");
  const int64_t after = ToUnixSeconds(Clock::System().Now());
  EXPECT_EQ(r.name, "identity/" + web);
  EXPECT_GE(r.revoked_at, before);
  EXPECT_LE(r.revoked_at, after);
  EXPECT_EQ(StoredSpec("identity/" + web),
            R"({"expiresAt":0,"identities":["spiffe://example.org/ns/web"],"kind":"identity",)"
            R"("reason":"compromised host image","revokedAt":)" +
                std::to_string(r.revoked_at) +
                R"(,"revokedBy":"spiffe://example.org/sigil/admin","serials":[],)"
                R"("target":"spiffe://example.org/ns/web"})");
  auto audited = Audit("revoke.identity");
  ASSERT_EQ(audited.size(), 1u);
  EXPECT_EQ(audited[0].event.actor, kAdmin);
  EXPECT_EQ(audited[0].event.identity, web);
  EXPECT_EQ(Details(audited[0]).at("target"), web);
  EXPECT_EQ(Details(audited[0]).at("reason"), "compromised host image");

  // X.509 and JWT: refused and audited with the reason; another identity still works.
  EXPECT_TRUE(Sign(node, web, &st).empty());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("revoked"), std::string::npos) << st.error_message();
  st = Mint(node, web);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  auto denied = Audit("svid.denied");
  ASSERT_EQ(denied.size(), 2u);
  EXPECT_EQ(Details(denied[0]).at("reason"), "identity revoked");
  EXPECT_EQ(Details(denied[0]).at("svid"), "x509");
  EXPECT_EQ(Details(denied[1]).at("reason"), "identity revoked");
  EXPECT_EQ(Details(denied[1]).at("svid"), "jwt");
  EXPECT_EQ(denied[1].event.identity, web);
  EXPECT_EQ(denied[1].event.pid, 4242);
  EXPECT_FALSE(Sign(node, "spiffe://example.org/ns/web-alt", &st).empty()) << st.error_message();

  // Credentials granted to that identity: refused.
  pb::FetchCredentialResponse resp;
  st = Fetch(node, "openai", &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_TRUE(resp.secret().empty());
  auto cred_denied = Audit("credential.denied");
  ASSERT_EQ(cred_denied.size(), 1u);
  EXPECT_EQ(Details(cred_denied[0]).at("reason"), "identity revoked");
  EXPECT_EQ(cred_denied[0].event.identity, web);

  // Re-revoking updates the reason and the version; no error.
  Revocation again = MustRevoke(RevocationKind::kIdentity, web, "still compromised");
  EXPECT_GT(again.resource_version, r.resource_version);
  EXPECT_NE(StoredSpec("identity/" + web).find("still compromised"), std::string::npos);
  EXPECT_EQ(Audit("revoke.identity").size(), 2u);

  // Lift: allowed again, audited, the resource is gone.
  auto lifted =
      cp_->LiftRevocation(RevocationKind::kIdentity, web, "image rebuilt", std::string(kAdmin));
  ASSERT_TRUE(lifted.ok()) << lifted.error().ToString();
  EXPECT_EQ(lifted->reason, "still compromised");
  EXPECT_EQ(cp_->store().Get("Revocation", "identity/" + web).error().code(), ErrorCode::kNotFound);
  auto lift_audit = Audit("revoke.lift");
  ASSERT_EQ(lift_audit.size(), 1u);
  EXPECT_EQ(lift_audit[0].event.actor, kAdmin);
  EXPECT_EQ(Details(lift_audit[0]).at("target"), web);
  EXPECT_EQ(Details(lift_audit[0]).at("reason"), "image rebuilt");
  EXPECT_FALSE(Sign(node, web, &st).empty()) << st.error_message();
  EXPECT_TRUE(Mint(node, web).ok());
  EXPECT_TRUE(Fetch(node, "openai", &resp).ok());
  EXPECT_EQ(resp.secret(), "sk-live-REVOKE-TEST");

  // Lifting what is not revoked: NotFound.
  auto again_lift = cp_->LiftRevocation(RevocationKind::kIdentity, web, "x", std::string(kAdmin));
  ASSERT_FALSE(again_lift.ok());
  EXPECT_EQ(again_lift.error().code(), ErrorCode::kNotFound);
}

TEST_F(RevocationTest, BindingRevokedRefusesFetchCredentialUntilLifted) {
  NodeCredential node = JoinNode("node-a");
  ApplyYaml(std::string(kResources));
  pb::FetchCredentialResponse resp;
  ASSERT_TRUE(Fetch(node, "openai", &resp).ok());

  Revocation r = MustRevoke(RevocationKind::kBinding, "openai", "key posted in a ticket");
  EXPECT_EQ(StoredSpec("binding/openai"),
            R"({"expiresAt":0,"identities":[],"kind":"binding","reason":"key posted in a ticket",)"
            R"("revokedAt":)" +
                std::to_string(r.revoked_at) +
                R"(,"revokedBy":"spiffe://example.org/sigil/admin","serials":[],)"
                R"("target":"openai"})");
  auto audited = Audit("revoke.binding");
  ASSERT_EQ(audited.size(), 1u);
  EXPECT_EQ(Details(audited[0]).at("binding"), "openai");  // `sigil audit --binding openai`

  resp.Clear();
  grpc::Status st = Fetch(node, "openai", &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_TRUE(resp.secret().empty());
  auto denied = Audit("credential.denied");
  ASSERT_EQ(denied.size(), 1u);
  EXPECT_EQ(Details(denied[0]).at("reason"), "binding revoked");
  EXPECT_EQ(Details(denied[0]).at("binding"), "openai");

  ASSERT_TRUE(
      cp_->LiftRevocation(RevocationKind::kBinding, "openai", "rotated", std::string(kAdmin)).ok());
  EXPECT_TRUE(Fetch(node, "openai", &resp).ok());

  auto unknown = cp_->Revoke(RevocationKind::kBinding, "nope", "x", std::string(kAdmin));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(unknown.error().message().find("nope"), std::string::npos);
}

TEST_F(RevocationTest, NodeRevocationListsItsCertificatesAndCannotBeLifted) {
  NodeCredential node = JoinNode("node-a");
  NodeCredential other = JoinNode("node-b");
  ApplyYaml(std::string(kResources));
  const std::string join_serial = SerialOf(node);
  grpc::Status st;
  const std::string web_serial = Sign(node, "spiffe://example.org/ns/web", &st);
  ASSERT_FALSE(web_serial.empty()) << st.error_message();
  const std::string other_serial = Sign(other, "spiffe://example.org/ns/web", &st);
  ASSERT_FALSE(other_serial.empty()) << st.error_message();
  pb::NodeSVIDResponse renewed;
  ASSERT_TRUE(Renew(&node, &renewed).ok());
  auto renewed_chain = core::ParseCertificatesDer(
      {reinterpret_cast<const uint8_t*>(renewed.svid_chain().data()), renewed.svid_chain().size()});
  ASSERT_TRUE(renewed_chain.ok());
  const std::string renewed_serial = renewed_chain->front().SerialHex();

  Revocation r = MustRevoke(RevocationKind::kNode, "node-a", "machine stolen");
  std::vector<std::string> expected = {join_serial, renewed_serial, web_serial};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(r.serials, expected);
  nlohmann::json stored_spec = nlohmann::json::parse(StoredSpec("node/node-a"));
  EXPECT_EQ(stored_spec.at("serials"), nlohmann::json(expected));
  EXPECT_EQ(stored_spec.at("identities"),
            nlohmann::json::array({"spiffe://example.org/sigil/node/node-a"}));
  EXPECT_EQ(stored_spec.at("expiresAt"), 0);
  EXPECT_EQ(stored_spec.at("kind"), "node");
  EXPECT_EQ(stored_spec.at("target"), "node-a");
  EXPECT_EQ(stored_spec.at("reason"), "machine stolen");
  EXPECT_EQ(stored_spec.at("revokedBy"), std::string(kAdmin));
  EXPECT_EQ(stored_spec.size(), 8u);
  auto record = cp_->store().GetNode("node-a");
  ASSERT_TRUE(record.ok());
  EXPECT_TRUE(record->revoked);
  EXPECT_EQ(record->revocation_reason, "machine stolen");
  auto audited = Audit("revoke.node");
  ASSERT_EQ(audited.size(), 1u);
  EXPECT_EQ(audited[0].event.node, "node-a");
  EXPECT_EQ(Details(audited[0]).at("serials"), 3);

  // The node is refused; the other node is not.
  EXPECT_EQ(Renew(&node, &renewed).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Renew(&other, &renewed).ok());

  // Cannot be lifted; re-revoking is fine.
  auto lift = cp_->LiftRevocation(RevocationKind::kNode, "node-a", "found", std::string(kAdmin));
  ASSERT_FALSE(lift.ok());
  EXPECT_EQ(lift.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(lift.error().message(),
            "a revoked node stays revoked; join the machine under a new node name");
  Revocation again = MustRevoke(RevocationKind::kNode, "node-a", "machine stolen, confirmed");
  EXPECT_GT(again.resource_version, r.resource_version);
  EXPECT_EQ(again.serials, expected);
  EXPECT_EQ(cp_->store().GetNode("node-a")->revocation_reason, "machine stolen, confirmed");

  auto unknown = cp_->Revoke(RevocationKind::kNode, "node-z", "x", std::string(kAdmin));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), ErrorCode::kNotFound);
}

TEST_F(RevocationTest, SvidRevocationOfANodeSvidRefusesThatCertificate) {
  NodeCredential node = JoinNode("node-a");
  const std::string serial = SerialOf(node);
  ASSERT_FALSE(serial.empty());
  NodeCredential renewed_node = Renewed(node);
  ASSERT_FALSE(renewed_node.chain_pem.empty());
  pb::NodeSVIDResponse renewed;

  // Upper case with leading zeros is the same serial.
  std::string typed = "00" + serial;
  for (char& c : typed) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Revocation r = MustRevoke(RevocationKind::kSvid, typed, "key copied off the box");
  EXPECT_EQ(r.target, serial);
  auto chain = core::ParseCertificatesPem(node.chain_pem);
  ASSERT_TRUE(chain.ok());
  const int64_t expires = ToUnixSeconds(chain->front().NotAfter());
  EXPECT_EQ(StoredSpec("svid/" + serial),
            R"({"expiresAt":)" + std::to_string(expires) +
                R"(,"identities":[],"kind":"svid","reason":"key copied off the box","revokedAt":)" +
                std::to_string(r.revoked_at) +
                R"(,"revokedBy":"spiffe://example.org/sigil/admin","serials":[")" + serial +
                R"("],"target":")" + serial + R"("})");
  auto audited = Audit("revoke.svid");
  ASSERT_EQ(audited.size(), 1u);
  EXPECT_EQ(audited[0].event.node, "node-a");
  EXPECT_EQ(audited[0].event.identity, "spiffe://example.org/sigil/node/node-a");

  // The revoked certificate no longer authenticates the node; the renewed one does.
  grpc::Status st = Renew(&node, &renewed);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("revoked"), std::string::npos) << st.error_message();
  st = Renew(&renewed_node, &renewed);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(cp_->store().GetNode("node-a")->revoked);

  ASSERT_TRUE(
      cp_->LiftRevocation(RevocationKind::kSvid, serial, "false alarm", std::string(kAdmin)).ok());
  EXPECT_TRUE(Renew(&node, &renewed).ok());
}

TEST_F(RevocationTest, BadInputsNameTheField) {
  JoinNode("node-a");
  ApplyYaml(std::string(kResources));
  struct Case {
    RevocationKind kind;
    std::string target;
    std::string reason;
    ErrorCode code;
    std::string field;
  };
  const std::vector<Case> cases = {
      {RevocationKind::kSvid, "abc", "", ErrorCode::kInvalidArgument, "reason: "},
      {RevocationKind::kSvid, "abc", "two\nlines", ErrorCode::kInvalidArgument, "reason: "},
      {RevocationKind::kSvid, "abc", std::string(1025, 'r'), ErrorCode::kInvalidArgument,
       "reason: "},
      {RevocationKind::kSvid, "not-hex", "r", ErrorCode::kInvalidArgument, "target: "},
      {RevocationKind::kSvid, "", "r", ErrorCode::kInvalidArgument, "target: "},
      {RevocationKind::kSvid, "abcdef0123", "r", ErrorCode::kNotFound,
       "no certificate with serial abcdef0123 was issued by this server"},
      {RevocationKind::kIdentity, "spiffe://other.org/ns/web", "r", ErrorCode::kInvalidArgument,
       "target: "},
      {RevocationKind::kIdentity, "spiffe://example.org/sigil/node/node-a", "r",
       ErrorCode::kInvalidArgument, "target: "},
      {RevocationKind::kIdentity, "spiffe://example.org", "r", ErrorCode::kInvalidArgument,
       "target: "},
      {RevocationKind::kIdentity, "web", "r", ErrorCode::kInvalidArgument, "target: "},
      {RevocationKind::kIdentity, "spiffe://example.org/" + std::string(300, 'a'), "r",
       ErrorCode::kInvalidArgument, "target: "},
      {RevocationKind::kNode, "Node_A!", "r", ErrorCode::kInvalidArgument, "target: "},
      {RevocationKind::kNode, "node-z", "r", ErrorCode::kNotFound, "target: "},
      {RevocationKind::kBinding, "a\tb", "r", ErrorCode::kInvalidArgument, "target: "},
  };
  for (const Case& c : cases) {
    auto r = cp_->Revoke(c.kind, c.target, c.reason, std::string(kAdmin));
    ASSERT_FALSE(r.ok()) << c.target;
    EXPECT_EQ(r.error().code(), c.code) << c.target << ": " << r.error().message();
    EXPECT_TRUE(r.error().message().starts_with(c.field))
        << c.target << ": " << r.error().message();
  }
  // Nothing was written or audited.
  EXPECT_TRUE(cp_->store().List("Revocation")->items.empty());
  for (const char* type : {"revoke.svid", "revoke.identity", "revoke.node", "revoke.binding"}) {
    EXPECT_TRUE(Audit(type).empty()) << type;
  }
  EXPECT_FALSE(cp_->store().GetNode("node-a")->revoked);

  // The admin credential's serial is in the audit trail, but it is not revocable this way.
  auto admin = cp_->IssueAdminCredential(false, "test");
  ASSERT_TRUE(admin.ok());
  auto admin_chain = core::ParseCertificatesPem(admin->chain_pem);
  ASSERT_TRUE(admin_chain.ok());
  auto r = cp_->Revoke(RevocationKind::kSvid, admin_chain->front().SerialHex(), "r",
                       std::string(kAdmin));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition) << r.error().message();
  EXPECT_NE(r.error().message().find("admin.credential.create"), std::string::npos);
}

// Reads a Sync stream on its own thread so a test can wait for a message with a deadline.
class SyncReader {
 public:
  explicit SyncReader(pb::AgentService::Stub& stub, uint64_t from_revision = 0) {
    SetDeadline(ctx_, std::chrono::seconds(30));
    pb::SyncRequest req;
    req.set_from_revision(from_revision);
    reader_ = stub.Sync(&ctx_, req);
  }
  ~SyncReader() {
    if (finished_) return;
    ctx_.TryCancel();
    pb::SyncResponse msg;
    while (reader_->Read(&msg)) {
    }
    (void)reader_->Finish();
  }
  // The next message (false when the stream ended).
  bool Next(pb::SyncResponse* msg) { return reader_->Read(msg); }
  // After Next returned false: how the stream ended.
  grpc::Status Finish() {
    finished_ = true;
    return reader_->Finish();
  }

 private:
  bool finished_ = false;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<pb::SyncResponse>> reader_;
};

TEST_F(RevocationTest, SyncDeliversRevocationsAsResources) {
  NodeCredential node = JoinNode("node-a");
  NodeCredential other = JoinNode("node-b");
  ApplyYaml(std::string(kResources));
  MustRevoke(RevocationKind::kBinding, "openai", "before the stream");
  auto stub = Client(&node);
  pb::SyncResponse msg;
  {
    SyncReader sync(*stub);
    ASSERT_TRUE(sync.Next(&msg));
    ASSERT_TRUE(msg.snapshot());
    std::set<std::string> names;
    for (const auto& r : msg.upserts()) names.insert(r.kind() + "/" + r.name());
    EXPECT_TRUE(names.contains("Revocation/binding/openai"));
    EXPECT_FALSE(names.contains("CredentialSource/openai-key"));

    const std::string serial = SerialOf(other);
    Revocation r = MustRevoke(RevocationKind::kSvid, serial, "other node's key");
    ASSERT_TRUE(sync.Next(&msg));
    EXPECT_FALSE(msg.snapshot());
    ASSERT_EQ(msg.upserts_size(), 1);
    EXPECT_EQ(msg.upserts(0).kind(), "Revocation");
    EXPECT_EQ(msg.upserts(0).name(), "svid/" + serial);
    EXPECT_EQ(msg.upserts(0).resource_version(), r.resource_version);
    EXPECT_EQ(msg.upserts(0).spec_json(), StoredSpec("svid/" + serial));

    ASSERT_TRUE(
        cp_->LiftRevocation(RevocationKind::kSvid, serial, "mistake", std::string(kAdmin)).ok());
    ASSERT_TRUE(sync.Next(&msg));
    EXPECT_EQ(msg.upserts_size(), 0);
    ASSERT_EQ(msg.deletes_size(), 1);
    EXPECT_EQ(msg.deletes(0).kind(), "Revocation");
    EXPECT_EQ(msg.deletes(0).name(), "svid/" + serial);
  }
}

TEST_F(RevocationTest, RevokedNodesOpenSyncStreamEnds) {
  NodeCredential node = JoinNode("node-a");
  NodeCredential other = JoinNode("node-b");
  auto stub = Client(&node);
  auto other_stub = Client(&other);
  SyncReader sync(*stub);
  SyncReader other_sync(*other_stub);
  pb::SyncResponse msg;
  ASSERT_TRUE(sync.Next(&msg));
  ASSERT_TRUE(msg.snapshot());
  ASSERT_TRUE(other_sync.Next(&msg));

  auto t0 = std::chrono::steady_clock::now();
  MustRevoke(RevocationKind::kNode, "node-a", "decommissioned badly");
  // The delta carrying the revocation, then the end of the stream.
  while (sync.Next(&msg)) {
  }
  grpc::Status st = sync.Finish();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_EQ(st.error_message(), "node node-a is revoked: decommissioned badly");

  // Another node's stream carries on and sees the revocation as a resource.
  ASSERT_TRUE(other_sync.Next(&msg));
  ASSERT_EQ(msg.upserts_size(), 1);
  EXPECT_EQ(msg.upserts(0).name(), "node/node-a");

  // And it cannot open a new one.
  SyncReader again(*stub);
  EXPECT_FALSE(again.Next(&msg));
  EXPECT_EQ(again.Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

// --- Expiry, with a fake clock ------------------------------------------------------------

TEST(RevocationExpiry, ExpiredSvidRevocationsArePruned) {
  FakeClock clock{FromUnixSeconds(1796398545)};
  auto store = store::SqliteStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  auto kek = core::Kek::FromBytes(SecretBytes(32));
  ASSERT_TRUE(kek.ok());
  ControlPlaneOptions options{{*core::TrustDomain::Parse("example.org")}, {}, {}};
  options.node_svid_ttl = Seconds(3600);
  auto cp = ControlPlane::Open(options, std::move(store).value(), std::move(kek).value(), clock);
  ASSERT_TRUE(cp.ok()) << cp.error().ToString();
  auto join = [&](const std::string& name) {
    auto token = (*cp)->CreateJoinToken(name, Seconds(600), "admin");
    EXPECT_TRUE(token.ok());
    auto key = PrivateKey::Generate(core::KeyType::kEcP256);
    auto joined = (*cp)->JoinNode(token->text.view(), name, *core::CreateCsrDer(*key), "peer");
    EXPECT_TRUE(joined.ok()) << joined.error().ToString();
    return joined->svid.leaf.SerialHex();
  };
  const std::string short_lived = join("node-a");
  clock.Advance(std::chrono::minutes(30));
  const std::string later = join("node-b");
  ASSERT_TRUE((*cp)->Revoke(RevocationKind::kSvid, short_lived, "r1", "admin").ok());
  ASSERT_TRUE((*cp)->Revoke(RevocationKind::kSvid, later, "r2", "admin").ok());
  ASSERT_TRUE((*cp)->Revoke(RevocationKind::kNode, "node-b", "r3", "admin").ok());
  EXPECT_EQ(*(*cp)->PruneExpiredRevocations(), 0u);

  // node-a's SVID expires (1 h after its join); its revocation goes, the others stay.
  clock.Advance(std::chrono::minutes(31));
  EXPECT_EQ(*(*cp)->PruneExpiredRevocations(), 1u);
  auto left = (*cp)->ListRevocations();
  ASSERT_TRUE(left.ok());
  std::set<std::string> names;
  for (const auto& r : *left) names.insert(r.name);
  EXPECT_EQ(names, (std::set<std::string>{"svid/" + later, "node/node-b"}));
  store::AuditFilter f;
  f.type = "revoke.expired";
  auto expired = (*cp)->store().QueryAudit(f);
  ASSERT_TRUE(expired.ok());
  ASSERT_EQ(expired->size(), 1u);
  EXPECT_EQ(expired->front().event.actor, "server");
  EXPECT_EQ(nlohmann::json::parse(expired->front().event.details_json).at("target"), short_lived);
  EXPECT_EQ(*(*cp)->PruneExpiredRevocations(), 0u);

  // An expired certificate is not revoked anew; a node revocation never expires.
  auto stale = (*cp)->Revoke(RevocationKind::kSvid, short_lived, "late", "admin");
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code(), ErrorCode::kFailedPrecondition);
  clock.Advance(std::chrono::hours(24 * 30));
  EXPECT_EQ(*(*cp)->PruneExpiredRevocations(), 1u);
  left = (*cp)->ListRevocations();
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ(left->front().name, "node/node-b");
}

}  // namespace
}  // namespace sigil::server
