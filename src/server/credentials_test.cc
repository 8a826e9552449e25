// FetchCredential over the real agent API (gRPC + TLS on loopback, real SQLite store).
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "core/jwt_svid.h"
#include "server/testing/agent_api_fixture.h"

namespace sigil::server {
namespace {

using testing::AgentApiTest;
using testing::NodeCredential;
using testing::SetDeadline;
namespace pb = sigil::agent::v1;

constexpr std::string_view kResources = R"(apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {name: web}
spec:
  spiffeId: spiffe://example.org/ns/web
  selectors: ["unix:uid:1000", "unix:path:/usr/bin/web"]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {name: batch}
spec:
  spiffeId: spiffe://example.org/ns/batch
  selectors: ["unix:uid:2000"]
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
spec: {type: static, value: sk-live-TOPSECRET-1}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {name: web-openai}
spec:
  source: openai-key
  service: openai
  identities: ["spiffe://example.org/ns/*"]
  delivery: {header: {name: Authorization, template: "Bearer {{secret}}"}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {name: batch-only}
spec:
  source: openai-key
  service: openai
  identities: [spiffe://example.org/ns/batch]
  delivery: {header: {name: x-api-key}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {name: web-pem}
spec:
  identities: [spiffe://example.org/ns/web]
  delivery: {file: {fileName: svid.pem, format: svid-pem}}
)";

class CredentialsTest : public AgentApiTest {
 protected:
  grpc::Status Fetch(const NodeCredential& node, const std::string& binding,
                     const pb::AttestedProcess& process, pb::FetchCredentialResponse* resp) {
    pb::FetchCredentialRequest req;
    req.set_binding(binding);
    *req.mutable_process() = process;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    return Client(&node)->FetchCredential(&ctx, req, resp);
  }
  static pb::AttestedProcess Web() {
    return WebProcess({"unix:uid:1000", "unix:path:/usr/bin/web"});
  }
};

TEST_F(CredentialsTest, StaticSecretForAnAllowedIdentityIsGrantedAndAudited) {
  NodeCredential node = JoinNode("node-a");
  ApplyYaml(std::string(kResources));
  pb::FetchCredentialResponse resp;
  grpc::Status st = Fetch(node, "web-openai", Web(), &resp);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(resp.secret(), "sk-live-TOPSECRET-1");
  EXPECT_EQ(resp.spiffe_id(), "spiffe://example.org/ns/web");
  EXPECT_EQ(resp.source_type(), "static");
  int64_t now = ToUnixSeconds(Clock::System().Now());
  EXPECT_GT(resp.expires_at(), now);
  EXPECT_LE(resp.expires_at(), now + kCredentialGrantTtl.count() + 1);

  auto grants = Audit("credential.grant");
  ASSERT_EQ(grants.size(), 1u);
  EXPECT_EQ(grants[0].event.node, "node-a");
  EXPECT_EQ(grants[0].event.pid, 4242);
  EXPECT_EQ(grants[0].event.exe, "/usr/bin/web");
  EXPECT_EQ(grants[0].event.identity, "spiffe://example.org/ns/web");
  EXPECT_NE(grants[0].event.details_json.find("\"binding\":\"web-openai\""), std::string::npos);
  // The value is in no audit record.
  store::AuditFilter all;
  auto records = cp_->store().QueryAudit(all);
  ASSERT_TRUE(records.ok());
  for (const auto& r : *records) {
    EXPECT_EQ(r.event.details_json.find("TOPSECRET"), std::string::npos) << r.event.type;
  }
}

TEST_F(CredentialsTest, RefusalsAreAuditedWithTheirReason) {
  NodeCredential node = JoinNode("node-a");
  ApplyYaml(std::string(kResources));
  pb::FetchCredentialResponse resp;
  // web holds spiffe://example.org/ns/web, which batch-only does not list.
  EXPECT_EQ(Fetch(node, "batch-only", Web(), &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // A process that holds no identity at all.
  EXPECT_EQ(Fetch(node, "web-openai", WebProcess({"unix:uid:3000"}), &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Fetch(node, "nope", Web(), &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  // svid-pem bindings have no source: the agent serves the process's own SVID.
  EXPECT_EQ(Fetch(node, "web-pem", Web(), &resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(resp.secret().empty());
  auto denied = Audit("credential.denied");
  ASSERT_EQ(denied.size(), 4u);
  EXPECT_NE(denied[0].event.details_json.find("batch-only.identities"), std::string::npos)
      << denied[0].event.details_json;
  EXPECT_NE(denied[1].event.details_json.find("holds no identity"), std::string::npos);
  EXPECT_TRUE(Audit("credential.grant").empty());

  // The batch process may use batch-only.
  pb::AttestedProcess batch = WebProcess({"unix:uid:2000"});
  grpc::Status st = Fetch(node, "batch-only", batch, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.spiffe_id(), "spiffe://example.org/ns/batch");
}

TEST_F(CredentialsTest, WithoutANodeSvidIsUnauthenticated) {
  ApplyYaml(std::string(kResources));
  pb::FetchCredentialRequest req;
  req.set_binding("web-openai");
  pb::FetchCredentialResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  EXPECT_EQ(Client(nullptr)->FetchCredential(&ctx, req, &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(CredentialsTest, AwsSourceReturnsKeyPairAndSessionToken) {
  NodeCredential node = JoinNode("node-a");
  ApplyYaml(std::string(kResources) + R"(---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: s3}
spec:
  mode: inject
  addresses: ["s3.eu-west-1.amazonaws.com:443"]
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {name: aws-prod}
spec:
  type: aws
  accessKeyId: AKIAEXAMPLE123
  secretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
  sessionToken: FwoGZXIvYXdzEXAMPLETOKEN
  region: eu-west-1
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {name: web-s3}
spec:
  source: aws-prod
  service: s3
  identities: [spiffe://example.org/ns/web]
  delivery: {sigv4: {region: eu-west-1, service: s3}}
)");
  pb::FetchCredentialResponse resp;
  grpc::Status st = Fetch(node, "web-s3", Web(), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.source_type(), "aws");
  EXPECT_EQ(resp.secret(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
  EXPECT_EQ(resp.attributes().at("accessKeyId"), "AKIAEXAMPLE123");
  EXPECT_EQ(resp.attributes().at("region"), "eu-west-1");
  EXPECT_EQ(resp.extra_secrets().at("sessionToken"), "FwoGZXIvYXdzEXAMPLETOKEN");
}

TEST_F(CredentialsTest, JwtSourceMintsAJwtSvidForTheProcessIdentity) {
  NodeCredential node = JoinNode("node-a");
  ApplyYaml(std::string(kResources) + R"(---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {name: partner-jwt}
spec: {type: jwt, audience: partner.example.com, ttl: 2m}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {name: web-partner}
spec:
  source: partner-jwt
  service: openai
  identities: [spiffe://example.org/ns/web]
  delivery: {header: {name: Authorization, template: "Bearer {{secret}}"}}
)");
  pb::FetchCredentialResponse resp;
  grpc::Status st = Fetch(node, "web-partner", Web(), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  core::BundleSet bundles;
  bundles.Put(std::make_shared<core::TrustBundle>(cp_->Bundle()));
  std::vector<std::string> audience{"partner.example.com"};
  auto jwt = core::ValidateJwtSvid(resp.secret(), bundles, audience, Clock::System().Now());
  ASSERT_TRUE(jwt.ok()) << jwt.error().ToString();
  EXPECT_EQ(jwt->id.str(), "spiffe://example.org/ns/web");
  EXPECT_EQ(resp.expires_at(), ToUnixSeconds(jwt->expiry));
  EXPECT_LE(resp.expires_at(), ToUnixSeconds(Clock::System().Now()) + 120 + 1);
}

TEST_F(CredentialsTest, SecretIsSealedWithItsSourceAndErasedWithIt) {
  ApplyYaml(std::string(kResources));
  auto sealed = cp_->store().GetBlob(std::string(kCredentialSecretBlobPrefix) + "openai-key");
  ASSERT_TRUE(sealed.ok());
  std::string bytes(sealed->begin(), sealed->end());
  EXPECT_EQ(bytes.find("TOPSECRET"), std::string::npos);
  auto spec = cp_->store().Get("CredentialSource", "openai-key");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->spec_json.find("TOPSECRET"), std::string::npos);
  auto opened = cp_->OpenSealedBlob(std::string(kCredentialSecretBlobPrefix) + "openai-key");
  ASSERT_TRUE(opened.ok());
  EXPECT_NE(opened->view().find("sk-live-TOPSECRET-1"), std::string::npos);
  // A batch that fails (stale resourceVersion) writes neither the resource nor the secret.
  auto parsed = resources::ParseDocuments(R"(apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {name: other-key, resourceVersion: "7"}
spec: {type: static, value: never-stored}
)");
  ASSERT_TRUE(parsed.ok());
  EXPECT_FALSE(cp_->ApplyResources(*parsed, "test", "resource.apply").ok());
  EXPECT_EQ(
      cp_->store().GetBlob(std::string(kCredentialSecretBlobPrefix) + "other-key").error().code(),
      ErrorCode::kNotFound);
}

}  // namespace
}  // namespace sigil::server
