// Node rejoin after expiry (node_rejoin.h): every check of ControlPlane::RejoinNode with a fake
// clock, the audit records, and the Rejoin RPC over real gRPC + TLS without a client
// certificate. Real SQLite, real OpenSSL; no mocks.
#include "server/node_rejoin.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

#include "common/encoding.h"
#include "common/ossl.h"
#include "core/certificate.h"
#include "core/csr.h"
#include "core/rejoin_proof.h"
#include "core/x509_svid.h"
#include "server/agent_api.h"
#include "server/control_plane.h"
#include "store/sqlite_store.h"

namespace sigil::server {
namespace {

namespace pb = sigil::agent::v1;
using core::PrivateKey;

constexpr std::string_view kAdmin = "spiffe://example.org/sigil/admin";

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// --- The proof itself (core/rejoin_proof.h) ---------------------------------------------------

TEST(RejoinProof, SignsAndVerifiesForEveryKeyTypeAndBindsEveryField) {
  auto td = *core::TrustDomain::Parse("example.org");
  auto csr_key = *PrivateKey::Generate(core::KeyType::kEcP256);
  auto csr = *core::CreateCsrDer(csr_key);
  const std::string message = core::RejoinMessage(td, "node-a", "3fa9", csr, 1796398545);
  EXPECT_EQ(message.substr(0, 16), "sigil-rejoin-v1\n");
  EXPECT_NE(message.find("\nexample.org\nnode-a\n3fa9\n" + Sha256Hex(csr) + "\n1796398545"),
            std::string::npos)
      << message;
  for (auto type : {core::KeyType::kEcP256, core::KeyType::kEcP384, core::KeyType::kRsa2048,
                    core::KeyType::kEd25519}) {
    SCOPED_TRACE(std::string(core::KeyTypeName(type)));
    auto key = *PrivateKey::Generate(type);
    auto sig = core::SignRejoin(key, message);
    ASSERT_TRUE(sig.ok()) << sig.error().ToString();
    EXPECT_TRUE(core::VerifyRejoin(key.Public(), message, *sig).ok());
    // Any other node, serial, CSR or time: a different message.
    auto other_csr = *core::CreateCsrDer(*PrivateKey::Generate(core::KeyType::kEcP256));
    for (const std::string& other :
         {core::RejoinMessage(td, "node-b", "3fa9", csr, 1796398545),
          core::RejoinMessage(td, "node-a", "3fa8", csr, 1796398545),
          core::RejoinMessage(td, "node-a", "3fa9", other_csr, 1796398545),
          core::RejoinMessage(td, "node-a", "3fa9", csr, 1796398546),
          core::RejoinMessage(*core::TrustDomain::Parse("other.org"), "node-a", "3fa9", csr,
                              1796398545)}) {
      EXPECT_EQ(core::VerifyRejoin(key.Public(), other, *sig).error().code(),
                ErrorCode::kUnauthenticated);
    }
    auto stranger = *PrivateKey::Generate(type);
    EXPECT_FALSE(core::VerifyRejoin(stranger.Public(), message, *sig).ok());
    EXPECT_FALSE(core::VerifyRejoin(key.Public(), message, {}).ok());
  }
}

// --- ControlPlane::RejoinNode -----------------------------------------------------------------

struct Node {
  std::string name;
  std::unique_ptr<PrivateKey> key;
  std::vector<core::Certificate> chain;
  std::string serial() const { return chain.front().SerialHex(); }
};

// A Rejoin request and the storage its spans point into.
struct Proof {
  std::string node_name;
  std::vector<uint8_t> chain_der, csr, signature;
  int64_t timestamp = 0;
  std::unique_ptr<PrivateKey> new_key;
  NodeRejoinRequest Request() const { return {node_name, chain_der, csr, timestamp, signature}; }
};

class NodeRejoinTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(kDefaultNodeRejoinGrace); }

  void Open(Seconds grace) {
    cp_.reset();
    auto store = store::SqliteStore::Open(":memory:");
    ASSERT_TRUE(store.ok()) << store.error().ToString();
    auto kek = core::Kek::FromBytes(SecretBytes(32));
    ASSERT_TRUE(kek.ok());
    ControlPlaneOptions options{{*core::TrustDomain::Parse("example.org")}, {}, {}};
    options.node_rejoin_grace = grace;
    // The fake clock moves days ahead and nothing rotates the CA here: keep it valid.
    options.ca.ttl = Seconds(30 * 24 * 3600);
    auto cp = ControlPlane::Open(options, std::move(store).value(), std::move(kek).value(), clock_);
    ASSERT_TRUE(cp.ok()) << cp.error().ToString();
    cp_ = std::move(cp).value();
  }

  Node Join(const std::string& name) {
    Node n{name, std::make_unique<PrivateKey>(*PrivateKey::Generate(core::KeyType::kEcP256)), {}};
    auto token = cp_->CreateJoinToken(name, Seconds(3600), std::string(kAdmin));
    EXPECT_TRUE(token.ok());
    auto joined = cp_->JoinNode(token->text.view(), name, *core::CreateCsrDer(*n.key), "peer");
    EXPECT_TRUE(joined.ok()) << joined.error().ToString();
    if (joined.ok()) n.chain = joined->svid.chain;
    return n;
  }

  // Renews through the control plane (what RenewNodeSVID does for an authenticated node).
  Node Renew(const Node& node) {
    Node n{
        node.name, std::make_unique<PrivateKey>(*PrivateKey::Generate(core::KeyType::kEcP256)), {}};
    auto renewed = cp_->RenewNodeSvid(node.name, *core::CreateCsrDer(*n.key));
    EXPECT_TRUE(renewed.ok()) << renewed.error().ToString();
    if (renewed.ok()) n.chain = renewed->chain;
    return n;
  }

  // What an agent sends: `node`'s chain, a CSR for a new key, signed by `signer` (default: the
  // node's key) at `timestamp` (default: now).
  Proof MakeProof(const Node& node, const PrivateKey* signer = nullptr,
                  std::optional<int64_t> timestamp = std::nullopt) {
    Proof p;
    p.node_name = node.name;
    p.chain_der = core::CertificatesToDer(node.chain);
    p.new_key = std::make_unique<PrivateKey>(*PrivateKey::Generate(core::KeyType::kEcP256));
    p.csr = *core::CreateCsrDer(*p.new_key);
    p.timestamp = timestamp.value_or(ToUnixSeconds(clock_.Now()));
    const std::string message =
        core::RejoinMessage(cp_->trust_domain(), node.name, node.serial(), p.csr, p.timestamp);
    p.signature = *core::SignRejoin(signer != nullptr ? *signer : *node.key, message);
    return p;
  }

  // The node after a successful rejoin (its new key and SVID).
  Node MustRejoin(const Node& node) {
    Proof p = MakeProof(node);
    auto svid = cp_->RejoinNode(p.Request(), "peer");
    EXPECT_TRUE(svid.ok()) << svid.error().ToString();
    if (!svid.ok()) return {};
    return {node.name, std::move(p.new_key), svid->chain};
  }

  // Refused as PermissionDenied with the generic message; returns the audited reason.
  std::string Refused(const Proof& p) {
    const size_t before = Audit("node.rejoin.denied").size();
    auto svid = cp_->RejoinNode(p.Request(), "peer");
    EXPECT_FALSE(svid.ok());
    if (svid.ok()) return "";
    EXPECT_EQ(svid.error().code(), ErrorCode::kPermissionDenied);
    EXPECT_EQ(svid.error().message(), kRejoinRefused);
    auto denied = Audit("node.rejoin.denied");
    EXPECT_EQ(denied.size(), before + 1);
    if (denied.size() != before + 1) return "";
    auto details = nlohmann::json::parse(denied.back().event.details_json);
    EXPECT_FALSE(details.contains("serial"));  // only issuance records carry "serial"
    return details.value("reason", "");
  }

  std::vector<store::AuditRecord> Audit(const std::string& type) {
    store::AuditFilter f;
    f.type = type;
    auto records = cp_->store().QueryAudit(f);
    EXPECT_TRUE(records.ok());
    return records.ok() ? *records : std::vector<store::AuditRecord>{};
  }

  // Past the node SVID's expiry (24 h) by `by`.
  void ExpireBy(const Node& node, Seconds by) { clock_.Set(node.chain.front().NotAfter() + by); }

  FakeClock clock_{Clock::System().Now()};
  std::unique_ptr<ControlPlane> cp_;
};

TEST_F(NodeRejoinTest, AnExpiredNodeRejoinsOnceWithANewKeyAndTheAuditSaysSo) {
  Node node = Join("node-a");
  ExpireBy(node, Seconds(3600));
  Proof p = MakeProof(node);
  auto svid = cp_->RejoinNode(p.Request(), "ipv4:10.0.0.7:40000");
  ASSERT_TRUE(svid.ok()) << svid.error().ToString();

  // A node SVID of the same node, for the new key, valid now against the bundle.
  EXPECT_TRUE(svid->leaf.PublicKeyOf()->Equals(p.new_key->Public()));
  core::BundleSet bundles;
  bundles.Put(cp_->BundlePtr());
  auto id = core::VerifyX509Svid(svid->chain, bundles, clock_.Now());
  ASSERT_TRUE(id.ok()) << id.error().ToString();
  EXPECT_EQ(id->str(), "spiffe://example.org/sigil/node/node-a");
  EXPECT_EQ(svid->leaf.NotAfter(), clock_.Now() + kDefaultNodeSvidTtl);
  auto record = cp_->store().GetNode("node-a");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->svid_serial, svid->leaf.SerialHex());

  auto audit = Audit("node.rejoin");
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0].event.node, "node-a");
  EXPECT_EQ(audit[0].event.identity, "spiffe://example.org/sigil/node/node-a");
  auto d = nlohmann::json::parse(audit[0].event.details_json);
  EXPECT_EQ(d["serial"], svid->leaf.SerialHex());
  EXPECT_EQ(d["previous_serial"], node.serial());
  EXPECT_EQ(d["expired_for_s"], 3600);
  EXPECT_EQ(d["expires"], ToUnixSeconds(svid->leaf.NotAfter()));
  EXPECT_EQ(d["peer"], "ipv4:10.0.0.7:40000");

  // The same expired SVID again (a replay, or a second machine with a copy of the key): the
  // serial was consumed.
  clock_.Advance(Seconds(5));
  EXPECT_NE(Refused(MakeProof(node)).find("superseded"), std::string::npos);

  // The new SVID renews as usual, and can itself rejoin once it expired.
  Node rejoined{"node-a", std::move(p.new_key), svid->chain};
  Node renewed = Renew(rejoined);
  ExpireBy(renewed, Seconds(60));
  Node again = MustRejoin(renewed);
  EXPECT_EQ(Audit("node.rejoin").size(), 2u);
  // A rejoined SVID is an issuance like any other: `sigil revoke svid` finds it, and so does a
  // node revocation after the node renewed it (it stays valid for a while).
  Node latest = Renew(again);
  auto svid_revoked =
      cp_->Revoke(RevocationKind::kSvid, again.serial(), "key copied", std::string(kAdmin));
  ASSERT_TRUE(svid_revoked.ok()) << svid_revoked.error().ToString();
  auto revoked = cp_->Revoke(RevocationKind::kNode, "node-a", "stolen", std::string(kAdmin));
  ASSERT_TRUE(revoked.ok()) << revoked.error().ToString();
  EXPECT_NE(std::find(revoked->serials.begin(), revoked->serials.end(), again.serial()),
            revoked->serials.end());
  EXPECT_NE(std::find(revoked->serials.begin(), revoked->serials.end(), latest.serial()),
            revoked->serials.end());
}

TEST_F(NodeRejoinTest, ASvidThatHasNotExpiredRenewsInstead) {
  Node node = Join("node-a");
  clock_.Advance(Seconds(3600));
  EXPECT_NE(Refused(MakeProof(node)).find("has not expired"), std::string::npos);
  EXPECT_EQ(cp_->store().GetNode("node-a")->svid_serial, node.serial());
}

TEST_F(NodeRejoinTest, RefusedPastTheGracePeriodAllowedAtIt) {
  Node node = Join("node-a");
  ExpireBy(node, kDefaultNodeRejoinGrace + Seconds(1));
  EXPECT_NE(Refused(MakeProof(node)).find("longer than the grace period"), std::string::npos);
  ExpireBy(node, kDefaultNodeRejoinGrace);
  MustRejoin(node);
}

TEST_F(NodeRejoinTest, GraceZeroDisablesRejoin) {
  Open(Seconds(0));
  Node node = Join("node-a");
  ExpireBy(node, Seconds(1));
  EXPECT_NE(Refused(MakeProof(node)).find("disabled"), std::string::npos);
  auto denied = Audit("node.rejoin.denied");
  ASSERT_EQ(denied.size(), 1u);
  EXPECT_EQ(denied[0].event.node, "node-a");
  EXPECT_EQ(denied[0].event.actor, "peer");
}

TEST_F(NodeRejoinTest, AnOlderSvidOfTheNodeIsUseless) {
  Node first = Join("node-a");
  Node second = Renew(first);  // the node's last SVID now
  ExpireBy(second, Seconds(10));
  const std::string reason = Refused(MakeProof(first));
  EXPECT_NE(reason.find("superseded"), std::string::npos) << reason;
  MustRejoin(second);
}

TEST_F(NodeRejoinTest, TheSignatureMustComeFromTheExpiredSvidsKey) {
  Node node = Join("node-a");
  ExpireBy(node, Seconds(10));
  auto stranger = *PrivateKey::Generate(core::KeyType::kEcP256);
  EXPECT_NE(Refused(MakeProof(node, &stranger)).find("signature"), std::string::npos);
  // Signed over another CSR than the one sent.
  Proof swapped = MakeProof(node);
  swapped.csr = *core::CreateCsrDer(*PrivateKey::Generate(core::KeyType::kEcP256));
  EXPECT_NE(Refused(swapped).find("signature"), std::string::npos);
  Proof empty = MakeProof(node);
  empty.signature.clear();
  EXPECT_NE(Refused(empty).find("signature"), std::string::npos);
  // The expired key itself as the "new" key.
  Proof same = MakeProof(node);
  same.csr = *core::CreateCsrDer(*node.key);
  same.signature = *core::SignRejoin(
      *node.key,
      core::RejoinMessage(cp_->trust_domain(), "node-a", node.serial(), same.csr, same.timestamp));
  EXPECT_NE(Refused(same).find("the new key is the expired SVID's key"), std::string::npos);
  // A garbage CSR, correctly signed.
  Proof garbage = MakeProof(node);
  garbage.csr = {0x30, 0x03, 0x02, 0x01, 0x01};
  garbage.signature =
      *core::SignRejoin(*node.key, core::RejoinMessage(cp_->trust_domain(), "node-a", node.serial(),
                                                       garbage.csr, garbage.timestamp));
  EXPECT_NE(Refused(garbage).find("csr"), std::string::npos);
  // None of these consumed the SVID.
  MustRejoin(node);
}

TEST_F(NodeRejoinTest, AStaleOrFutureTimestampIsRefused) {
  Node node = Join("node-a");
  ExpireBy(node, Seconds(10));
  const int64_t now = ToUnixSeconds(clock_.Now());
  EXPECT_NE(Refused(MakeProof(node, nullptr, now - 301)).find("timestamp"), std::string::npos);
  EXPECT_NE(Refused(MakeProof(node, nullptr, now + 301)).find("timestamp"), std::string::npos);
  Proof skewed = MakeProof(node, nullptr, now - 299);
  EXPECT_TRUE(cp_->RejoinNode(skewed.Request(), "peer").ok());
}

TEST_F(NodeRejoinTest, RevocationWins) {
  // The node revoked.
  Node a = Join("node-a");
  ASSERT_TRUE(cp_->Revoke(RevocationKind::kNode, "node-a", "stolen", std::string(kAdmin)).ok());
  ExpireBy(a, Seconds(10));
  EXPECT_NE(Refused(MakeProof(a)).find("revoked"), std::string::npos);

  // Its last SVID revoked (`sigil revoke svid`) while it was valid; still refused after the
  // expired revocation was pruned from the list.
  clock_.Set(Clock::System().Now());
  Node b = Join("node-b");
  ASSERT_TRUE(
      cp_->Revoke(RevocationKind::kSvid, b.serial(), "key copied", std::string(kAdmin)).ok());
  ExpireBy(b, Seconds(10));
  EXPECT_NE(Refused(MakeProof(b)).find("revoked"), std::string::npos);
  auto pruned = cp_->PruneExpiredRevocations();
  ASSERT_TRUE(pruned.ok());
  EXPECT_GE(*pruned, 1u);
  EXPECT_NE(Refused(MakeProof(b)).find("revoked"), std::string::npos);

  // A lifted svid revocation no longer blocks.
  clock_.Set(Clock::System().Now());
  Node c = Join("node-c");
  ASSERT_TRUE(cp_->Revoke(RevocationKind::kSvid, c.serial(), "oops", std::string(kAdmin)).ok());
  ASSERT_TRUE(
      cp_->LiftRevocation(RevocationKind::kSvid, c.serial(), "mistake", std::string(kAdmin)).ok());
  ExpireBy(c, Seconds(10));
  MustRejoin(c);
}

TEST_F(NodeRejoinTest, TheChainMustBeThisNodesSvid) {
  Node a = Join("node-a");
  Node b = Join("node-b");
  ExpireBy(a, Seconds(10));
  // node-b's expired SVID presented as node-a's (signed by node-b's key).
  Proof as_a = MakeProof(b);
  as_a.node_name = "node-a";
  as_a.signature = *core::SignRejoin(
      *b.key,
      core::RejoinMessage(cp_->trust_domain(), "node-a", b.serial(), as_a.csr, as_a.timestamp));
  EXPECT_NE(Refused(as_a).find("not spiffe://example.org/sigil/node/node-a"), std::string::npos);
  // An unknown node, a bad name, garbage DER, nothing.
  Proof unknown = MakeProof(a);
  unknown.node_name = "node-z";
  EXPECT_NE(Refused(unknown).find("not spiffe://"), std::string::npos);
  Proof bad_name = MakeProof(a);
  bad_name.node_name = "../etc";
  EXPECT_NE(Refused(bad_name).find("node_name"), std::string::npos);
  Proof garbage = MakeProof(a);
  garbage.chain_der = {0x30, 0x82, 0xff};
  EXPECT_NE(Refused(garbage).find("expired_chain"), std::string::npos);
  Proof empty = MakeProof(a);
  empty.chain_der.clear();
  EXPECT_NE(Refused(empty).find("expired_chain"), std::string::npos);
  // A certificate of this CA that is not a node SVID (the admin credential).
  auto admin = cp_->IssueAdminCredential(false, "test");
  ASSERT_TRUE(admin.ok());
  Proof admin_proof = MakeProof(a);
  admin_proof.chain_der = core::CertificatesToDer(*core::ParseCertificatesPem(admin->chain_pem));
  EXPECT_NE(Refused(admin_proof).find("expired_chain"), std::string::npos);
  MustRejoin(a);
}

TEST_F(NodeRejoinTest, AnSvidFromAnotherCaIsRefused) {
  Node node = Join("node-a");
  // The node's own certificate (same serial, ID and key) re-signed by a key that is not a CA of
  // the bundle: only path validation can tell.
  auto foreign = *PrivateKey::Generate(core::KeyType::kEcP256);
  X509Ptr copy(X509_dup(node.chain.front().get()));
  ASSERT_TRUE(copy);
  ASSERT_GT(X509_sign(copy.get(), foreign.get(), EVP_sha256()), 0);
  Node forged{"node-a", std::move(node.key), {core::Certificate::Adopt(std::move(copy))}};
  ASSERT_EQ(forged.serial(), cp_->store().GetNode("node-a")->svid_serial);
  ExpireBy(forged, Seconds(10));
  const std::string reason = Refused(MakeProof(forged));
  EXPECT_NE(reason.find("does not validate against the current trust bundle"), std::string::npos)
      << reason;
}

// --- The RPC: no client certificate, and the answer never names the failed check -----------

TEST_F(NodeRejoinTest, RejoinRpcWorksWithoutAClientCertificate) {
  AgentApi api(*cp_);
  auto cred = cp_->IssueServerCredential({"localhost"});
  ASSERT_TRUE(cred.ok()) << cred.error().ToString();
  const std::string roots = cp_->Bundle().X509AuthoritiesPem();
  ServerTlsIdentity tls{cred->chain_pem, std::move(cred->key_pem), roots};
  int port = 0;
  auto server = StartAgentApi(api, "127.0.0.1:0", tls, &port);
  ASSERT_TRUE(server.ok()) << server.error().ToString();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = roots;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto stub = pb::AgentService::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(port), grpc::SslCredentials(ssl), args));
  auto call = [&](const Proof& p, pb::NodeSVIDResponse* resp) {
    pb::RejoinRequest req;
    req.set_node_name(p.node_name);
    req.set_expired_chain(std::string(p.chain_der.begin(), p.chain_der.end()));
    req.set_csr(std::string(p.csr.begin(), p.csr.end()));
    req.set_timestamp(p.timestamp);
    req.set_signature(std::string(p.signature.begin(), p.signature.end()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub->Rejoin(&ctx, req, resp);
  };

  // The node's SVID is still valid in real time (TLS is not what decides here: the fake clock
  // says it expired).
  Node node = Join("node-a");
  ExpireBy(node, Seconds(30));
  pb::NodeSVIDResponse resp;
  auto stale = MakeProof(node, nullptr, ToUnixSeconds(clock_.Now()) - 3600);
  grpc::Status st = call(stale, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(st.error_message(), kRejoinRefused);  // not "timestamp"

  Proof p = MakeProof(node);
  st = call(p, &resp);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  auto chain = core::ParseCertificatesDer(Bytes(resp.svid_chain()));
  ASSERT_TRUE(chain.ok());
  EXPECT_TRUE(chain->front().PublicKeyOf()->Equals(p.new_key->Public()));
  EXPECT_EQ(resp.expires_at(), ToUnixSeconds(chain->front().NotAfter()));
  EXPECT_EQ(cp_->store().GetNode("node-a")->svid_serial, chain->front().SerialHex());
  auto audit = Audit("node.rejoin");
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_NE(nlohmann::json::parse(audit[0].event.details_json)["peer"].get<std::string>().find(
                "127.0.0.1"),
            std::string::npos);

  api.Shutdown();
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace
}  // namespace sigil::server
