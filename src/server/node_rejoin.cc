// ControlPlane::RejoinNode and the agent API's Rejoin RPC (see node_rejoin.h).
#include "server/node_rejoin.h"

#include <nlohmann/json.hpp>

#include "core/csr.h"
#include "core/rejoin_proof.h"
#include "core/x509_svid.h"
#include "server/agent_api.h"
#include "server/control_plane.h"

namespace sigil::server {
namespace {

int64_t WholeSeconds(TimePoint::duration d) {
  return std::chrono::duration_cast<Seconds>(d).count();
}

// Whether the newest of the revoke.svid / revoke.lift records of `serial` is a revocation.
Result<bool> SerialWasRevoked(store::Store& store, const std::string& serial) {
  store::AuditFilter f;
  f.serial = serial;
  f.newest_first = true;
  f.limit = store::kMaxAuditQueryLimit;
  SIGIL_ASSIGN_OR_RETURN(auto records, store.QueryAudit(f));
  for (const auto& record : records) {
    if (record.event.type == "revoke.svid") return true;
    if (record.event.type == "revoke.lift") return false;
  }
  return false;
}

}  // namespace

Result<core::IssuedX509Svid> ControlPlane::RejoinNode(const NodeRejoinRequest& request,
                                                      const std::string& peer) {
  const TimePoint now = clock_.Now();
  // Filled in as the checks establish them, for the refusal's audit record.
  std::string node_name;         // only once it is a valid name
  std::string presented_serial;  // the expired leaf's
  auto refuse = [&](const std::string& reason) -> Error {
    store::AuditEvent e = Event("node.rejoin.denied", peer);
    e.node = node_name;
    if (!node_name.empty()) e.identity = trust_domain().IdString() + "/sigil/node/" + node_name;
    nlohmann::json details{{"reason", reason}};
    // Not "serial": that member names certificates this server issued (`sigil revoke svid`).
    if (!presented_serial.empty()) details["presented_serial"] = presented_serial;
    e.details_json = details.dump();
    (void)store_->AppendAudit(std::span(&e, 1));  // best effort: the refusal stands anyway
    return PermissionDenied(std::string(kRejoinRefused));
  };

  const Seconds grace = options_.node_rejoin_grace;
  if (!ValidNodeName(request.node_name)) return refuse("node_name is not a valid node name");
  node_name = request.node_name;
  if (grace <= Seconds(0)) return refuse("rejoin is disabled (--node-rejoin-grace 0s)");

  // The expired SVID.
  auto chain = core::ParseCertificatesDer(request.expired_chain_der);
  if (!chain.ok()) return refuse("expired_chain: " + chain.error().message());
  if (chain->empty()) return refuse("expired_chain: empty");
  const core::Certificate& leaf = chain->front();
  presented_serial = leaf.SerialHex();
  auto leaf_id = core::CheckLeafProfile(leaf);
  if (!leaf_id.ok()) return refuse("expired_chain: " + leaf_id.error().message());
  SIGIL_ASSIGN_OR_RETURN(auto id,
                         core::SpiffeId::FromPath(trust_domain(), "/sigil/node/" + node_name));
  if (leaf_id->str() != id.str()) {
    return refuse("expired_chain: the leaf is " + leaf_id->str() + ", not " + id.str());
  }

  // The node: registered, not revoked, and this is the last SVID it was issued.
  auto node = store_->GetNode(node_name);
  if (!node.ok()) {
    if (node.error().code() == ErrorCode::kNotFound) return refuse("node is not registered");
    return std::move(node).error();
  }
  if (node->revoked) return refuse("node is revoked: " + node->revocation_reason);
  if (node->spiffe_id != id.str()) return refuse("node is registered as " + node->spiffe_id);
  if (node->svid_serial != presented_serial) {
    return refuse("superseded: the node's last SVID is " + node->svid_serial + ", not " +
                  presented_serial);
  }
  SIGIL_ASSIGN_OR_RETURN(RevocationIndex::SnapshotPtr revoked, Revocations());
  if (const Revocation* r = revoked->BySerial(presented_serial); r != nullptr) {
    return refuse("the SVID is revoked (" + r->name + ": " + r->reason + ")");
  }
  if (const Revocation* r = revoked->ByIdentity(id.str()); r != nullptr) {
    return refuse("the node is revoked (" + r->name + ": " + r->reason + ")");
  }

  // Expired, within the grace period, and it was a valid SVID of a CA still in the bundle.
  const TimePoint not_after = leaf.NotAfter();
  if (now < not_after) {
    return refuse("the SVID has not expired yet (expires in " +
                  std::to_string(WholeSeconds(not_after - now)) + " s): renew it instead");
  }
  const int64_t expired_for = WholeSeconds(now - not_after);
  if (now - not_after > grace) {
    return refuse("the SVID expired " + std::to_string(expired_for) +
                  " s ago, longer than the grace period (" + std::to_string(grace.count()) + " s)");
  }
  core::BundleSet bundles;
  bundles.Put(BundlePtr());
  if (auto valid = core::VerifyX509Svid(*chain, bundles, not_after - Seconds(1)); !valid.ok()) {
    return refuse("expired_chain does not validate against the current trust bundle: " +
                  valid.error().message());
  }

  // Proof of possession of the expired SVID's key, fresh.
  const int64_t skew = request.timestamp - ToUnixSeconds(now);
  if (skew > kRejoinMaxClockSkew.count() || skew < -kRejoinMaxClockSkew.count()) {
    return refuse("timestamp is " + std::to_string(skew) + " s off the server's clock (at most " +
                  std::to_string(kRejoinMaxClockSkew.count()) + " s)");
  }
  SIGIL_ASSIGN_OR_RETURN(core::PublicKey old_key, leaf.PublicKeyOf());
  const std::string message = core::RejoinMessage(trust_domain(), node_name, presented_serial,
                                                  request.csr_der, request.timestamp);
  if (auto ok = core::VerifyRejoin(old_key, message, request.signature); !ok.ok()) {
    return refuse("signature: " + ok.error().message() + " (the expired SVID's key)");
  }
  auto csr = core::Csr::ParseDer(request.csr_der);
  if (!csr.ok()) return refuse("csr: " + csr.error().message());
  auto new_key = csr->Verify(core::KeyPolicy{});
  if (!new_key.ok()) return refuse("csr: " + new_key.error().message());
  if (new_key->Equals(old_key)) return refuse("csr: the new key is the expired SVID's key");
  // An svid revocation is pruned from the Revocation list once its certificate expired
  // (revoke.expired), which is exactly when a rejoin could make it useful again: the audit
  // trail decides (the newest revoke.svid / revoke.lift of this serial). After the proof, so
  // only a holder of the key costs this query.
  SIGIL_ASSIGN_OR_RETURN(bool was_revoked, SerialWasRevoked(*store_, presented_serial));
  if (was_revoked)
    return refuse("the SVID was revoked (sigil revoke svid " + presented_serial + ")");

  SIGIL_ASSIGN_OR_RETURN(auto svid, Issue({id, *new_key, {}, options_.node_svid_ttl}));
  const std::string serial = svid.leaf.SerialHex();
  const TimePoint expiry = svid.leaf.NotAfter();
  store::AuditEvent e = Event("node.rejoin", id.str());
  e.node = node_name;
  e.identity = id.str();
  e.details_json = nlohmann::json{
      {"serial", serial},
      {"previous_serial", presented_serial},
      {"expires", ToUnixSeconds(expiry)},
      {"expired_for_s", expired_for},
      {"peer", peer}}.dump();
  // Only while the node still has the presented serial and is not revoked, checked inside the
  // store transaction: of two concurrent rejoins with the same SVID one wins, and a revocation
  // that landed after the checks above still wins.
  auto recorded =
      store_->RecordNodeSvid(node_name, serial, expiry, now, std::span(&e, 1), presented_serial);
  if (!recorded.ok()) {
    if (recorded.error().code() == ErrorCode::kAborted) {
      return refuse("superseded: the node's SVID changed during the rejoin");
    }
    if (recorded.error().code() == ErrorCode::kPermissionDenied) {
      return refuse("node is revoked (during the rejoin)");
    }
    return std::move(recorded).error();
  }
  return svid;
}

grpc::Status AgentApi::Rejoin(grpc::ServerContext* context,
                              const sigil::agent::v1::RejoinRequest* request,
                              sigil::agent::v1::NodeSVIDResponse* response) {
  auto bytes = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  NodeRejoinRequest in{request->node_name(), bytes(request->expired_chain()), bytes(request->csr()),
                       request->timestamp(), bytes(request->signature())};
  auto svid = cp_.RejoinNode(in, context->peer());
  if (!svid.ok()) {
    if (svid.error().code() == ErrorCode::kPermissionDenied ||
        svid.error().code() == ErrorCode::kUnauthenticated) {
      // Never say which check failed (the control plane audits the reason).
      return {grpc::StatusCode::PERMISSION_DENIED, std::string(kRejoinRefused)};
    }
    return ToGrpcStatus(svid.error());
  }
  std::vector<uint8_t> der = core::CertificatesToDer(svid->chain);
  response->set_svid_chain(std::string(der.begin(), der.end()));
  response->set_expires_at(ToUnixSeconds(svid->leaf.NotAfter()));
  return grpc::Status::OK;
}

}  // namespace sigil::server
