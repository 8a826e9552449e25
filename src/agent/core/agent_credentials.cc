// Agent::FetchCredential and friends: credential grants for attested processes (issue 6).
// See agent.h and creds/grant_cache.h.
#include "agent/core/agent.h"
#include "core/certificate.h"

namespace sigil::agent {
namespace {

namespace pb = sigil::agent::v1;

}  // namespace

std::shared_ptr<const creds::BindingSet> Agent::CredentialBindings() const {
  return bindings_.Get(state_.revision(),
                       [this] { return state_.ResourcesOfKind("CredentialBinding"); });
}

std::vector<std::string> Agent::BindingIdentities(const creds::BindingInfo& binding,
                                                  const attest::AttestedProcess& process) const {
  auto identities = state_.identities();
  std::vector<std::string> out;
  for (const auto& m : MatchIdentities(*identities, node_.node_name, trust_domain_, process.uid,
                                       process.Selectors())) {
    if (binding.Allows(m.id)) out.push_back(m.id.str());
  }
  return out;
}

Result<std::shared_ptr<const creds::CredentialGrant>> Agent::CallFetchCredential(
    const std::string& binding, const pb::AttestedProcess& process) {
  pb::FetchCredentialRequest req;
  req.set_binding(binding);
  *req.mutable_process() = process;
  pb::FetchCredentialResponse resp;
  // Repeated once on the next replica when the server is unreachable (a grant is not consumed).
  grpc::Status st = CallServer("FetchCredential", Repeat::kAlsoAfterDeadline,
                               [&](ServerConnection& conn, std::chrono::seconds timeout) {
                                 creds::WipeResponse(resp);  // a first attempt's answer, if any
                                 resp.Clear();
                                 auto ctx = ServerConnection::Context(timeout);
                                 return conn.stub().FetchCredential(ctx.get(), req, &resp);
                               });
  if (!st.ok()) {
    creds::WipeResponse(resp);
    return FromGrpcStatus(st, "FetchCredential " + binding);
  }
  return creds::GrantFromResponse(binding, resp, options_.clock->Now());
}

Result<creds::CredentialGrantHandle> Agent::OwnSvidGrant(const std::string& binding,
                                                         const attest::AttestedProcess& process) {
  auto bindings = CredentialBindings();
  auto it = bindings->find(binding);
  auto identities = state_.identities();  // keeps the specs MatchIdentities points into alive
  pb::AttestedProcess proto = ToProto(process);
  for (const auto& m : MatchIdentities(*identities, node_.node_name, trust_domain_, process.uid,
                                       process.Selectors())) {
    if (it == bindings->end() || !it->second.Allows(m.id)) continue;
    SIGIL_ASSIGN_OR_RETURN(auto held, svids_->Get(*m.spec, m.id, proto));
    SIGIL_ASSIGN_OR_RETURN(SecretBytes key, held->key->ExportPkcs8Der());
    creds::GrantInfo info;
    info.binding = binding;
    info.source_type = "x509-svid";
    info.spiffe_id = held->id.str();
    info.chain_pem = core::CertificatesToPem(held->chain);
    info.fetched_at = options_.clock->Now();
    info.expires_at = held->not_after;
    auto grant = std::make_shared<const creds::CredentialGrant>(
        std::move(info), std::move(key), std::vector<std::pair<std::string, SecretBytes>>{});
    return creds::CredentialGrantHandle(std::move(grant), false);
  }
  // Refused here; the server re-checks and records the refusal (credential.denied) with the
  // process's pid, exe and identity. Its answer is a refusal too (no identity the binding
  // allows, or "no source" for an svid-pem binding).
  auto asked = CallFetchCredential(binding, proto);
  if (!asked.ok() && asked.error().code() != ErrorCode::kPermissionDenied &&
      asked.error().code() != ErrorCode::kFailedPrecondition &&
      asked.error().code() != ErrorCode::kNotFound) {
    return std::move(asked).error();
  }
  return PermissionDenied("credential binding \"" + binding + "\" denied for pid " +
                          std::to_string(process.pid) +
                          ": the process holds no identity the binding allows");
}

Result<creds::CredentialGrantHandle> Agent::FetchCredential(
    const std::string& binding, const attest::AttestedProcess& process) {
  SIGIL_TRY(CheckNotRevoked());
  SIGIL_TRY(CheckSynced());
  auto bindings = CredentialBindings();
  auto it = bindings->find(binding);
  if (it != bindings->end() && it->second.file &&
      it->second.file->format == creds::FileFormat::kSvidPem) {
    // Served from the agent's own SVIDs without a server call: the revocation is checked here.
    // (Other bindings go to the server, which refuses and audits a revoked one.)
    if (const auto* e = state_.revocations()->FindBinding(binding)) {
      return PermissionDenied(core::RevocationSet::Describe(*e));
    }
    return OwnSvidGrant(binding, process);
  }
  std::vector<std::string> allowed;
  if (it != bindings->end()) allowed = BindingIdentities(it->second, process);
  // Not allowed by the synced view, or an unknown binding: no cache lookup, the server
  // decides (and audits the refusal).
  pb::AttestedProcess proto = ToProto(process);
  return grants_.Get(binding, allowed, [&] { return CallFetchCredential(binding, proto); });
}

}  // namespace sigil::agent
