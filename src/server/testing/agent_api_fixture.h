// AgentApiTest: an in-process ControlPlane + AgentApi over real gRPC and TLS on 127.0.0.1
// (ephemeral port), with helpers to join nodes and call the API as them. Shared by the agent
// API test files; no mocks.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/certificate.h"
#include "core/csr.h"
#include "core/x509_svid.h"
#include "resources/parse.h"
#include "server/agent_api.h"
#include "store/sqlite_store.h"

namespace sigil::server::testing {

namespace pb = sigil::agent::v1;
using core::PrivateKey;

inline constexpr auto kRpcDeadline = std::chrono::seconds(10);

inline void SetDeadline(grpc::ClientContext& ctx, std::chrono::seconds d = kRpcDeadline) {
  ctx.set_deadline(std::chrono::system_clock::now() + d);
}

struct NodeCredential {
  std::string chain_pem;
  std::string key_pem;
};

class AgentApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = store::SqliteStore::Open(":memory:");
    ASSERT_TRUE(store.ok()) << store.error().ToString();
    auto kek = core::Kek::FromBytes(SecretBytes(32));
    ASSERT_TRUE(kek.ok());
    ControlPlaneOptions options{{*core::TrustDomain::Parse("example.org")}, {}, {}};
    auto cp = ControlPlane::Open(options, std::move(store).value(), std::move(kek).value(),
                                 Clock::System());
    ASSERT_TRUE(cp.ok()) << cp.error().ToString();
    cp_ = std::move(cp).value();
    api_ = std::make_unique<AgentApi>(*cp_);
    auto cred = cp_->IssueServerCredential({"localhost"});
    ASSERT_TRUE(cred.ok()) << cred.error().ToString();
    roots_pem_ = cp_->Bundle().X509AuthoritiesPem();
    ServerTlsIdentity tls{cred->chain_pem, std::move(cred->key_pem), roots_pem_};
    auto server = StartAgentApi(*api_, "127.0.0.1:0", tls, &port_);
    ASSERT_TRUE(server.ok()) << server.error().ToString();
    ASSERT_GT(port_, 0);
    server_ = std::move(server).value();
  }

  void TearDown() override {
    if (api_) api_->Shutdown();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  std::unique_ptr<pb::AgentService::Stub> Client(const NodeCredential* cred) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = roots_pem_;
    if (cred != nullptr) {
      ssl.pem_private_key = cred->key_pem;
      ssl.pem_cert_chain = cred->chain_pem;
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port_),
                                             grpc::SslCredentials(ssl), args);
    return pb::AgentService::NewStub(channel);
  }

  // Joins `node` through the API; returns its SVID chain (PEM) and key.
  NodeCredential JoinNode(const std::string& node) {
    auto token = cp_->CreateJoinToken(node, Seconds(3600), "admin");
    EXPECT_TRUE(token.ok());
    auto key = PrivateKey::Generate(core::KeyType::kEcP256);
    pb::JoinRequest req;
    req.set_token(std::string(token->text.view()));
    req.set_node_name(node);
    auto csr = *core::CreateCsrDer(*key);
    req.set_csr(std::string(csr.begin(), csr.end()));
    pb::JoinResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    grpc::Status st = Client(nullptr)->Join(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
    last_token_ = std::string(token->text.view());
    auto chain = core::ParseCertificatesDer(
        {reinterpret_cast<const uint8_t*>(resp.svid_chain().data()), resp.svid_chain().size()});
    EXPECT_TRUE(chain.ok());
    if (!chain.ok()) return {};
    return {core::CertificatesToPem(*chain), std::string((*key->ToPkcs8Pem()).view())};
  }

  std::string VerifyChainDer(const std::string& der) {
    auto chain =
        core::ParseCertificatesDer({reinterpret_cast<const uint8_t*>(der.data()), der.size()});
    if (!chain.ok()) return "parse: " + chain.error().ToString();
    core::BundleSet bundles;
    bundles.Put(std::make_shared<core::TrustBundle>(cp_->Bundle()));
    auto id = core::VerifyX509Svid(*chain, bundles, Clock::System().Now());
    return id.ok() ? id->str() : id.error().ToString();
  }

  grpc::Status Renew(const NodeCredential* cred, pb::NodeSVIDResponse* resp) {
    auto key = PrivateKey::Generate(core::KeyType::kEcP256);
    auto csr = *core::CreateCsrDer(*key);
    pb::RenewNodeSVIDRequest req;
    req.set_csr(std::string(csr.begin(), csr.end()));
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    return Client(cred)->RenewNodeSVID(&ctx, req, resp);
  }

  void Put(const std::string& kind, const std::string& name) {
    store::ResourceWrite w{kind, name, "{}", store::WriteOp::kUpsert, std::nullopt};
    auto r = cp_->store().Apply(std::span(&w, 1), {});
    ASSERT_TRUE(r.ok()) << r.error().ToString();
  }
  void Delete(const std::string& kind, const std::string& name) {
    store::ResourceWrite w{kind, name, "", store::WriteOp::kDelete, std::nullopt};
    auto r = cp_->store().Apply(std::span(&w, 1), {});
    ASSERT_TRUE(r.ok()) << r.error().ToString();
  }

  // Stores every resource of `yaml` the way the admin API does (ControlPlane::ApplyResources:
  // canonical specs, secrets sealed in the same transaction).
  void ApplyYaml(const std::string& yaml) {
    auto parsed = resources::ParseDocuments(yaml);
    ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
    auto applied = cp_->ApplyResources(*parsed, "test", "resource.apply");
    ASSERT_TRUE(applied.ok()) << applied.error().ToString();
  }

  static pb::AttestedProcess WebProcess(std::vector<std::string> selectors) {
    pb::AttestedProcess p;
    p.set_pid(4242);
    p.set_uid(1000);
    p.set_gid(1000);
    p.set_exe_path("/usr/bin/web");
    p.set_exe_sha256(std::string(64, 'a'));
    p.set_cgroup("/system.slice/web.service");
    for (auto& s : selectors) p.add_selectors(std::move(s));
    return p;
  }

  grpc::Status SignWorkload(const NodeCredential& node, const std::string& id,
                            const pb::AttestedProcess& process, const PrivateKey& key,
                            pb::SignWorkloadSVIDResponse* resp) {
    auto csr = *core::CreateCsrDer(key);
    pb::SignWorkloadSVIDRequest req;
    req.set_csr(std::string(csr.begin(), csr.end()));
    req.set_spiffe_id(id);
    *req.mutable_process() = process;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    return Client(&node)->SignWorkloadSVID(&ctx, req, resp);
  }

  std::vector<store::AuditRecord> Audit(const std::string& type) {
    store::AuditFilter f;
    f.type = type;
    auto records = cp_->store().QueryAudit(f);
    EXPECT_TRUE(records.ok());
    return records.ok() ? *records : std::vector<store::AuditRecord>{};
  }

  std::unique_ptr<ControlPlane> cp_;
  // Declared before api_ so they outlive every stream that reports to them.
  metrics::Registry registry_;
  metrics::ServerMetrics metrics_{registry_};
  std::unique_ptr<AgentApi> api_;
  std::unique_ptr<grpc::Server> server_;
  std::string roots_pem_;
  std::string last_token_;
  int port_ = 0;
};

}  // namespace sigil::server::testing
