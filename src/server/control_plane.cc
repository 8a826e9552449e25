#include "server/control_plane.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/csr.h"
#include "core/join_token.h"
#include "core/jwt_svid.h"
#include "resources/workload_identity.h"

namespace sigil::server {

bool ValidNodeName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return name.front() != '-' && name.front() != '.';
}

store::AuditEvent ControlPlane::Event(std::string type, std::string actor) const {
  store::AuditEvent e;
  e.time = clock_.Now();
  e.type = std::move(type);
  e.actor = std::move(actor);
  return e;
}

Result<std::unique_ptr<ControlPlane>> ControlPlane::Open(ControlPlaneOptions options,
                                                         std::unique_ptr<store::Store> store,
                                                         core::Kek kek, const Clock& clock) {
  std::unique_ptr<ControlPlane> cp(
      new ControlPlane(std::move(options), std::move(store), std::move(kek), clock));
  SIGIL_TRY(cp->LoadOrCreateAuthorities());  // authority_store.cc
  return cp;
}

core::TrustBundle ControlPlane::Bundle() const { return *BundlePtr(); }

std::shared_ptr<const core::TrustBundle> ControlPlane::BundlePtr() const {
  std::lock_guard lock(mu_);
  return bundle_;
}

core::Certificate ControlPlane::Root() const {
  std::lock_guard lock(mu_);
  return authorities_->active().ca.root();
}

Result<core::IssuedX509Svid> ControlPlane::Issue(const core::X509SvidRequest& request,
                                                 std::optional<core::Certificate>* root) {
  auto start = std::chrono::steady_clock::now();
  Result<core::IssuedX509Svid> svid = [&]() -> Result<core::IssuedX509Svid> {
    std::lock_guard lock(mu_);
    SIGIL_ASSIGN_OR_RETURN(auto issued, authorities_->IssueX509Svid(request, clock_.Now()));
    if (root != nullptr) root->emplace(authorities_->active().ca.root());
    SIGIL_TRY(KeepIssuanceDurableLocked());  // the store covers its notAfter before it leaves
    return issued;
  }();
  if (metrics_ != nullptr && svid.ok()) {
    metrics_->svid_issued.Inc();
    metrics_->svid_issue_seconds.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return svid;
}

Result<AdminCredential> ControlPlane::IssueAdminCredential(bool read_only, const std::string& actor,
                                                           const core::PrivateKey* key) {
  SIGIL_ASSIGN_OR_RETURN(
      auto id, core::SpiffeId::FromPath(trust_domain(),
                                        read_only ? "/sigil/admin/readonly" : "/sigil/admin"));
  std::optional<core::PrivateKey> fresh;
  if (key == nullptr) {
    SIGIL_ASSIGN_OR_RETURN(fresh, core::PrivateKey::Generate(core::KeyType::kEcP256));
    key = &*fresh;
  }
  SIGIL_ASSIGN_OR_RETURN(auto svid, Issue({id, key->Public(), {}, options_.admin_svid_ttl}));
  SIGIL_ASSIGN_OR_RETURN(SecretBytes key_pem, key->ToPkcs8Pem());
  store::AuditEvent e = Event("admin.credential.create", actor);
  e.identity = id.str();
  e.details_json = nlohmann::json{
      {"serial", svid.leaf.SerialHex()},
      {"expires", ToUnixSeconds(svid.leaf.NotAfter())},
      {"read_only",
       read_only}}.dump();
  SIGIL_TRY(store_->AppendAudit(std::span(&e, 1)));
  return AdminCredential{id.str(), core::CertificatesToPem(svid.chain), std::move(key_pem)};
}

Result<IssuedJoinToken> ControlPlane::CreateJoinToken(const std::string& node_name, Seconds ttl,
                                                      const std::string& actor) {
  if (!ValidNodeName(node_name)) {
    return InvalidArgument("node name \"" + node_name +
                           "\": use 1-63 of [a-z0-9-._], not starting with '-' or '.'");
  }
  if (ttl <= Seconds(0) || ttl > kMaxJoinTokenTtl) {
    return InvalidArgument("token ttl must be between 1s and 7d");
  }
  SIGIL_ASSIGN_OR_RETURN(auto token, core::JoinToken::Generate(Root()));
  TimePoint now = clock_.Now();
  store::JoinTokenRecord record;
  record.token_hash = token.StorageHash();
  record.node_name = node_name;
  record.created_by = actor;
  record.created_at = now;
  record.expires_at = now + ttl;
  store::AuditEvent e = Event("token.create", actor);
  e.node = node_name;
  e.details_json =
      nlohmann::json{{"token_id", token.id()}, {"expires", ToUnixSeconds(record.expires_at)}}
          .dump();
  SIGIL_TRY(store_->CreateJoinToken(record, std::span(&e, 1)));
  return IssuedJoinToken{token.id(), token.Text(), record.expires_at};
}

Result<NodeJoin> ControlPlane::JoinNode(std::string_view token_text, const std::string& node_name,
                                        std::span<const uint8_t> csr_der, const std::string& peer) {
  auto refuse = [&](std::string type, std::string reason, std::string token_id) -> Error {
    store::AuditEvent e = Event(std::move(type), peer);
    e.node = node_name;
    e.details_json = nlohmann::json{{"reason", reason}, {"token_id", token_id}}.dump();
    (void)store_->AppendAudit(std::span(&e, 1));  // best effort: the refusal stands anyway
    return PermissionDenied("join refused: token is invalid, expired or already used");
  };
  auto token = core::JoinToken::Parse(token_text);
  if (!token.ok()) return refuse("token.invalid", token.error().message(), "");
  // Any root of the current bundle: a token created before a CA rotation stays usable.
  core::TrustBundle bundle = Bundle();
  bool pinned = false;
  for (const auto& root : bundle.x509_authorities()) pinned = pinned || token->PinsCa(root);
  if (!pinned) return refuse("token.invalid", "token pins a different CA", token->id());
  if (!ValidNodeName(node_name)) return InvalidArgument("node name is not valid");
  auto csr = core::Csr::ParseDer(csr_der);
  if (!csr.ok()) return std::move(csr).error();
  SIGIL_ASSIGN_OR_RETURN(core::PublicKey pub, csr->Verify(core::KeyPolicy{}));
  SIGIL_ASSIGN_OR_RETURN(auto id,
                         core::SpiffeId::FromPath(trust_domain(), "/sigil/node/" + node_name));

  TimePoint now = clock_.Now();
  store::AuditEvent used = Event("token.use", peer);
  used.node = node_name;
  used.identity = id.str();
  used.details_json = nlohmann::json{{"token_id", token->id()}}.dump();
  SIGIL_ASSIGN_OR_RETURN(auto consumed,
                         store_->ConsumeJoinToken(token->StorageHash(), now, std::span(&used, 1)));
  switch (consumed.status) {
    case store::ConsumeStatus::kConsumed:
      break;
    case store::ConsumeStatus::kUnknown:
      return refuse("token.unknown", "no such token", token->id());
    case store::ConsumeStatus::kAlreadyUsed:
      return refuse("token.reuse", "token was already used", token->id());
    case store::ConsumeStatus::kExpired:
      return refuse("token.expired", "token expired", token->id());
  }
  if (consumed.token->node_name != node_name) {
    // The token is spent either way: a token is bound to the node it was created for.
    return refuse("token.mismatch",
                  "token was created for node \"" + consumed.token->node_name + "\"", token->id());
  }
  SIGIL_ASSIGN_OR_RETURN(auto svid, Issue({id, pub, {}, options_.node_svid_ttl}));
  store::NodeRecord node;
  node.name = node_name;
  node.spiffe_id = id.str();
  node.svid_serial = svid.leaf.SerialHex();
  node.svid_expiry = svid.leaf.NotAfter();
  node.joined_at = now;
  node.last_seen = now;
  store::AuditEvent joined = Event("node.join", peer);
  joined.node = node_name;
  joined.identity = id.str();
  joined.details_json =
      nlohmann::json{{"serial", node.svid_serial}, {"expires", ToUnixSeconds(node.svid_expiry)}}
          .dump();
  SIGIL_TRY(store_->UpsertNode(node, std::span(&joined, 1)));
  return NodeJoin{id.str(), std::move(svid), Bundle().ToJwks()};
}

Result<size_t> ControlPlane::SweepExpiredTokens() {
  SIGIL_ASSIGN_OR_RETURN(
      auto expired, store_->ExpireJoinTokens(clock_.Now(), [this](const store::JoinTokenRecord& t) {
        store::AuditEvent e = Event("token.expired", "server");
        e.node = t.node_name;
        e.details_json = nlohmann::json{{"expired_at", ToUnixSeconds(t.expires_at)}}.dump();
        return e;
      }));
  return expired.size();
}

Result<core::IssuedX509Svid> ControlPlane::RenewNodeSvid(const std::string& node_name,
                                                         std::span<const uint8_t> csr_der) {
  SIGIL_ASSIGN_OR_RETURN(store::NodeRecord node, store_->GetNode(node_name));
  if (node.revoked) return PermissionDenied("node \"" + node_name + "\" is revoked");
  SIGIL_ASSIGN_OR_RETURN(auto csr, core::Csr::ParseDer(csr_der));
  SIGIL_ASSIGN_OR_RETURN(core::PublicKey pub, csr.Verify(core::KeyPolicy{}));
  SIGIL_ASSIGN_OR_RETURN(auto id,
                         core::SpiffeId::FromPath(trust_domain(), "/sigil/node/" + node_name));
  SIGIL_ASSIGN_OR_RETURN(auto svid, Issue({id, pub, {}, options_.node_svid_ttl}));
  const std::string serial = svid.leaf.SerialHex();
  const TimePoint expiry = svid.leaf.NotAfter();
  store::AuditEvent e = Event("node.renew", node.spiffe_id);
  e.node = node_name;
  e.identity = id.str();
  e.details_json = nlohmann::json{{"serial", serial},
                                  {"previous_serial", node.svid_serial},
                                  {"expires", ToUnixSeconds(expiry)}}
                       .dump();
  // Conditional on "not revoked" inside the store transaction: a revocation that lands
  // between the check above and this write still wins, and the new SVID is never recorded.
  SIGIL_TRY(store_->RecordNodeSvid(node_name, serial, expiry, clock_.Now(), std::span(&e, 1)));
  return svid;
}

Result<AdminCredential> ControlPlane::IssueServerCredential(std::vector<std::string> dns_names,
                                                            const core::PrivateKey* key) {
  SIGIL_ASSIGN_OR_RETURN(auto id, core::SpiffeId::FromPath(trust_domain(), "/sigil/server"));
  std::optional<core::PrivateKey> fresh;
  if (key == nullptr) {
    SIGIL_ASSIGN_OR_RETURN(fresh, core::PrivateKey::Generate(core::KeyType::kEcP256));
    key = &*fresh;
  }
  nlohmann::json names = dns_names;
  std::optional<core::Certificate> root;
  SIGIL_ASSIGN_OR_RETURN(
      auto svid, Issue({id, key->Public(), std::move(dns_names), options_.server_svid_ttl}, &root));
  SIGIL_ASSIGN_OR_RETURN(SecretBytes key_pem, key->ToPkcs8Pem());
  store::AuditEvent e = Event("server.credential.create", "server");
  e.identity = id.str();
  e.details_json = nlohmann::json{
      {"serial", svid.leaf.SerialHex()},
      {"expires", ToUnixSeconds(svid.leaf.NotAfter())},
      {"dns_names",
       names}}.dump();
  SIGIL_TRY(store_->AppendAudit(std::span(&e, 1)));
  // The chain ends with the signing root, so an agent holding only a join token (which pins
  // the root's SHA-256) finds the root in the handshake itself.
  std::vector<core::Certificate> chain = svid.chain;
  if (chain.back().Fingerprint() != root->Fingerprint()) chain.push_back(*root);
  return AdminCredential{id.str(), core::CertificatesToPem(chain), std::move(key_pem)};
}

}  // namespace sigil::server

namespace sigil::server {

Result<void> ControlPlane::PutSealedBlob(const std::string& name,
                                         std::span<const uint8_t> plaintext,
                                         std::span<const store::AuditEvent> audit) {
  SIGIL_ASSIGN_OR_RETURN(auto sealed, kek_.Seal(plaintext, name));
  return store_->PutBlob(name, sealed, audit);
}

Result<store::BlobWrite> ControlPlane::SealBlob(const std::string& name,
                                                std::span<const uint8_t> plaintext) const {
  SIGIL_ASSIGN_OR_RETURN(auto sealed, kek_.Seal(plaintext, name));
  return store::BlobWrite{name, std::move(sealed), false};
}

Result<SecretBytes> ControlPlane::OpenSealedBlob(const std::string& name) {
  SIGIL_ASSIGN_OR_RETURN(auto sealed, store_->GetBlob(name));
  return kek_.Open(sealed, name);
}

}  // namespace sigil::server

namespace sigil::server {

Result<std::vector<ControlPlane::WorkloadMatch>> ControlPlane::HeldIdentities(
    const std::string& node, const AttestedProcessInfo& process) {
  SIGIL_ASSIGN_OR_RETURN(WorkloadCatalog::Snapshot identities, catalog_.Current());
  std::vector<WorkloadMatch> held;
  for (const resources::WorkloadIdentitySpec& spec : *identities) {
    auto id = spec.IdFor(node, process.uid, trust_domain(), process.selectors);
    if (id) held.push_back(WorkloadMatch{spec, std::move(*id)});
  }
  return held;
}

store::AuditEvent ControlPlane::WorkloadEvent(std::string type, const std::string& node,
                                              const AttestedProcessInfo& process) const {
  store::AuditEvent e =
      Event(std::move(type), "spiffe://" + trust_domain().name() + "/sigil/node/" + node);
  e.node = node;
  e.pid = process.pid;
  e.exe = process.exe_path;
  return e;
}

Result<ControlPlane::WorkloadMatch> ControlPlane::MatchWorkload(const std::string& node,
                                                                const std::string& requested_id,
                                                                const AttestedProcessInfo& process,
                                                                std::string_view svid_kind) {
  SIGIL_ASSIGN_OR_RETURN(WorkloadCatalog::Snapshot identities, catalog_.Current());
  // Why the closest candidate (one rendering to requested_id) failed, for the audit record.
  std::string reason = "no WorkloadIdentity renders to the requested ID";
  for (const resources::WorkloadIdentitySpec& spec : *identities) {
    auto id = spec.Render({node, process.uid});
    if (!id.ok() || id->str() != requested_id) continue;
    if (id->trust_domain() != trust_domain()) {  // Render already refused /sigil paths
      reason = "WorkloadIdentity " + spec.name + " renders outside this trust domain's workloads";
      continue;
    }
    if (!spec.AllowsNode(node)) {
      reason = "WorkloadIdentity " + spec.name + " is not allowed on this node";
      continue;
    }
    if (!spec.Matches(process.selectors)) {
      reason = "WorkloadIdentity " + spec.name + ": selectors not satisfied";
      continue;
    }
    return WorkloadMatch{spec, std::move(id).value()};
  }
  store::AuditEvent e = WorkloadEvent("svid.denied", node, process);
  e.identity = requested_id;
  e.details_json =
      nlohmann::json{
          {"reason", reason},   {"svid", svid_kind},        {"exe_sha256", process.exe_sha256},
          {"uid", process.uid}, {"cgroup", process.cgroup}, {"selectors", process.selectors}}
          .dump();
  (void)store_->AppendAudit(std::span(&e, 1));  // best effort: the refusal stands anyway
  return PermissionDenied("no WorkloadIdentity matches " + requested_id + " for pid " +
                          std::to_string(process.pid) + " on node " + node);
}

Result<core::IssuedX509Svid> ControlPlane::SignWorkloadSvid(const std::string& node,
                                                            const std::string& requested_id,
                                                            std::span<const uint8_t> csr_der,
                                                            const AttestedProcessInfo& process) {
  SIGIL_ASSIGN_OR_RETURN(WorkloadMatch match, MatchWorkload(node, requested_id, process, "x509"));
  SIGIL_TRY(RefuseRevokedIdentity(node, match.id.str(), process, "x509"));
  SIGIL_ASSIGN_OR_RETURN(auto csr, core::Csr::ParseDer(csr_der));
  SIGIL_ASSIGN_OR_RETURN(core::PublicKey pub, csr.Verify(core::KeyPolicy{}));
  SIGIL_ASSIGN_OR_RETURN(auto svid, Issue({match.id, pub, match.spec.dns_names, match.spec.ttl}));
  store::AuditEvent e = WorkloadEvent("svid.issue", node, process);
  e.identity = match.id.str();
  e.details_json = nlohmann::json{{"workload_identity", match.spec.name},
                                  {"exe_sha256", process.exe_sha256},
                                  {"uid", process.uid},
                                  {"gid", process.gid},
                                  {"cgroup", process.cgroup},
                                  {"container_id", process.container_id},
                                  {"serial", svid.leaf.SerialHex()},
                                  {"expires", ToUnixSeconds(svid.leaf.NotAfter())}}
                       .dump();
  // No SVID leaves the server unaudited (group commit with concurrent issuances).
  SIGIL_TRY(audit_.Append(std::move(e)));
  return svid;
}

Result<std::pair<std::string, TimePoint>> ControlPlane::MintWorkloadJwt(
    const std::string& node, const std::string& requested_id,
    const std::vector<std::string>& audience, const AttestedProcessInfo& process) {
  if (audience.empty()) return InvalidArgument("a JWT-SVID needs at least one audience");
  for (const auto& aud : audience) {
    if (aud.empty()) return InvalidArgument("a JWT-SVID audience must not be empty");
  }
  SIGIL_ASSIGN_OR_RETURN(WorkloadMatch match, MatchWorkload(node, requested_id, process, "jwt"));
  SIGIL_TRY(RefuseRevokedIdentity(node, match.id.str(), process, "jwt"));
  const auto& allowed = match.spec.jwt_audiences;
  if (!allowed.empty()) {
    for (const auto& aud : audience) {
      if (std::find(allowed.begin(), allowed.end(), aud) == allowed.end()) {
        store::AuditEvent e = WorkloadEvent("svid.denied", node, process);
        e.identity = requested_id;
        e.details_json = nlohmann::json{
            {"reason", "audience " + aud + " is not in " + match.spec.name + ".jwtAudiences"},
            {"svid", "jwt"},
            {"exe_sha256", process.exe_sha256},
            {"uid",
             process.uid}}.dump();
        (void)store_->AppendAudit(std::span(&e, 1));
        return PermissionDenied("WorkloadIdentity " + match.spec.name +
                                " does not allow audience \"" + aud + "\"");
      }
    }
  }
  std::string token;
  {
    std::lock_guard lock(mu_);
    SIGIL_ASSIGN_OR_RETURN(token, authorities_->MintJwtSvid(match.id, audience, clock_.Now(),
                                                            core::kDefaultJwtSvidTtl));
    SIGIL_TRY(KeepIssuanceDurableLocked());
  }
  SIGIL_ASSIGN_OR_RETURN(core::JwtSvid parsed, core::ParseJwtSvidInsecure(token));
  store::AuditEvent e = WorkloadEvent("jwt.issue", node, process);
  e.identity = match.id.str();
  e.details_json = nlohmann::json{{"workload_identity", match.spec.name},
                                  {"audience", audience},
                                  {"exe_sha256", process.exe_sha256},
                                  {"uid", process.uid},
                                  {"gid", process.gid},
                                  {"cgroup", process.cgroup},
                                  {"container_id", process.container_id},
                                  {"expires", ToUnixSeconds(parsed.expiry)}}
                       .dump();
  SIGIL_TRY(audit_.Append(std::move(e)));
  return std::pair{std::move(token), parsed.expiry};
}

}  // namespace sigil::server
