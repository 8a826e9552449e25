// ControlPlane::FetchCredential: credential grants for attested processes (agent API).
#include <openssl/crypto.h>

#include <algorithm>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/duration.h"
#include "core/jwt_svid.h"
#include "resources/identity_pattern.h"
#include "server/control_plane.h"
#include "server/oauth2_client.h"

namespace sigil::server {
namespace {

// The sealed secret fields of a source, as SecretBytes; the parsed JSON copies are wiped.
Result<std::vector<std::pair<std::string, SecretBytes>>> SecretFields(const SecretBytes& plain,
                                                                      const std::string& source) {
  nlohmann::json fields = nlohmann::json::parse(plain.view(), nullptr, false);
  if (!fields.is_object()) {
    return Internal("credential source " + source + ": sealed secret is not a JSON object");
  }
  std::vector<std::pair<std::string, SecretBytes>> out;
  for (auto& [key, value] : fields.items()) {
    if (!value.is_string()) continue;
    auto& text = value.get_ref<std::string&>();
    out.emplace_back(key, SecretBytes::Copy(text));
    OPENSSL_cleanse(text.data(), text.size());
  }
  return out;
}

SecretBytes* FindField(std::vector<std::pair<std::string, SecretBytes>>& fields,
                       std::string_view key) {
  for (auto& [k, v] : fields) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::string StringField(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

oauth2::Fetcher ControlPlane::HttpsTokenFetcher() {
  return [](const oauth2::TokenRequest& request, oauth2::EndpointFailure* failure) {
    return oauth2::FetchToken(request, oauth2::ClientOptions{}, failure);
  };
}

Result<oauth2::TokenRequest> ControlPlane::OAuth2Request(const std::string& source,
                                                         const std::string& spec_json) {
  nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, false);
  if (!spec.is_object())
    return Internal("credential source " + source + ": stored spec unreadable");
  oauth2::TokenRequest request;
  request.token_url = StringField(spec, "tokenUrl");
  request.client_id = StringField(spec, "clientId");
  request.ca_bundle_pem = StringField(spec, "caBundle");
  if (auto scopes = spec.find("scopes"); scopes != spec.end() && scopes->is_array()) {
    for (const auto& scope : *scopes) {
      if (scope.is_string()) request.scopes.push_back(scope.get<std::string>());
    }
  }
  if (auto method = StringField(spec, "clientAuthMethod"); !method.empty()) {
    auto auth = oauth2::ClientAuthFromName(method);
    if (!auth) {
      return Internal("credential source " + source + ": clientAuthMethod \"" + method +
                      "\" is not client_secret_basic or client_secret_post");
    }
    request.auth = *auth;
  }
  auto plain = OpenSealedBlob(std::string(kCredentialSecretBlobPrefix) + source);
  if (!plain.ok()) {
    return plain.error().WithContext("credential source " + source + ": sealed secret");
  }
  SIGIL_ASSIGN_OR_RETURN(auto fields, SecretFields(*plain, source));
  SecretBytes* secret = FindField(fields, "spec.clientSecret");
  if (secret == nullptr) {
    return Internal("credential source " + source + ": sealed secret lacks spec.clientSecret");
  }
  request.client_secret = std::move(*secret);
  return request;
}

Result<CredentialGrant> ControlPlane::FetchCredential(const std::string& node,
                                                      const std::string& binding,
                                                      const AttestedProcessInfo& process) {
  auto deny = [&](Error error, const std::string& identity,
                  const nlohmann::json& extra = nlohmann::json::object()) -> Error {
    store::AuditEvent e = WorkloadEvent("credential.denied", node, process);
    e.identity = identity;
    nlohmann::json details = {{"binding", binding},
                              {"reason", error.message()},
                              {"exe_sha256", process.exe_sha256},
                              {"uid", process.uid},
                              {"cgroup", process.cgroup}};
    details.update(extra);
    e.details_json = details.dump();
    (void)store_->AppendAudit(std::span(&e, 1));  // best effort: the refusal stands anyway
    return error;
  };

  SIGIL_ASSIGN_OR_RETURN(RevocationIndex::SnapshotPtr revoked, revocations_.Current());
  if (const Revocation* r = revoked->ByBinding(binding); r != nullptr) {
    return deny(
        PermissionDenied("credential binding \"" + binding + "\" is revoked (" + r->reason + ")"),
        "", {{"reason", "binding revoked"}, {"revocation_reason", r->reason}});
  }

  auto stored = store_->Get("CredentialBinding", binding);
  if (!stored.ok()) {
    if (stored.error().code() != ErrorCode::kNotFound) return std::move(stored).error();
    return deny(NotFound("credential binding \"" + binding + "\" not found"), "");
  }
  nlohmann::json spec = nlohmann::json::parse(stored->spec_json, nullptr, false);
  if (!spec.is_object())
    return Internal("credential binding " + binding + ": stored spec unreadable");

  // The identity the process holds that the binding allows.
  std::vector<resources::IdentityPattern> patterns;
  if (auto ids = spec.find("identities"); ids != spec.end() && ids->is_array()) {
    for (const auto& p : *ids) {
      if (!p.is_string()) continue;
      auto pattern = resources::IdentityPattern::Parse(p.get<std::string>());
      if (pattern.ok()) patterns.push_back(std::move(pattern).value());
    }
  }
  SIGIL_ASSIGN_OR_RETURN(std::vector<WorkloadMatch> held, HeldIdentities(node, process));
  const WorkloadMatch* granted = nullptr;
  const WorkloadMatch* revoked_match = nullptr;  // allowed, but its identity is revoked
  for (const WorkloadMatch& m : held) {
    if (std::none_of(patterns.begin(), patterns.end(),
                     [&m](const resources::IdentityPattern& p) { return p.Matches(m.id); })) {
      continue;
    }
    if (revoked->ByIdentity(m.id.str()) != nullptr) {
      if (revoked_match == nullptr) revoked_match = &m;
      continue;
    }
    granted = &m;
    break;
  }
  if (granted == nullptr && revoked_match != nullptr) {
    const Revocation* r = revoked->ByIdentity(revoked_match->id.str());
    return deny(PermissionDenied("credential binding \"" + binding + "\" denied for pid " +
                                 std::to_string(process.pid) + ": identity " +
                                 revoked_match->id.str() + " is revoked (" + r->reason + ")"),
                revoked_match->id.str(),
                {{"reason", "identity revoked"}, {"revocation_reason", r->reason}});
  }
  if (granted == nullptr) {
    std::string why = held.empty() ? "the process holds no identity on node " + node
                                   : "none of the process's " + std::to_string(held.size()) +
                                         " identities is in binding " + binding + ".identities";
    return deny(PermissionDenied("credential binding \"" + binding + "\" denied for pid " +
                                 std::to_string(process.pid) + ": " + why),
                held.empty() ? "" : held.front().id.str());
  }
  const std::string identity = granted->id.str();

  const std::string source = StringField(spec, "source");
  if (source.empty()) {
    return deny(FailedPrecondition("credential binding \"" + binding +
                                   "\" has no source: it delivers the process's own SVID, "
                                   "which the agent serves without the server"),
                identity);
  }
  auto source_stored = store_->Get("CredentialSource", source);
  if (!source_stored.ok()) {
    if (source_stored.error().code() != ErrorCode::kNotFound) {
      return std::move(source_stored).error();
    }
    return deny(
        NotFound("credential binding \"" + binding + "\": source \"" + source + "\" not found"),
        identity);
  }
  nlohmann::json source_spec = nlohmann::json::parse(source_stored->spec_json, nullptr, false);
  if (!source_spec.is_object()) {
    return Internal("credential source " + source + ": stored spec unreadable");
  }

  CredentialGrant grant;
  grant.binding = binding;
  grant.source = source;
  grant.source_type = StringField(source_spec, "type");
  grant.spiffe_id = identity;
  const TimePoint now = clock_.Now();
  grant.expires_at = now + kCredentialGrantTtl;
  std::optional<bool> token_cached;  // oauth2: served from the server's token cache

  if (grant.source_type == "static" || grant.source_type == "aws") {
    auto plain = OpenSealedBlob(std::string(kCredentialSecretBlobPrefix) + source);
    if (!plain.ok()) {
      return deny(plain.error().WithContext("credential source " + source + ": sealed secret"),
                  identity);
    }
    SIGIL_ASSIGN_OR_RETURN(auto fields, SecretFields(*plain, source));
    const char* primary = grant.source_type == "static" ? "spec.value" : "spec.secretAccessKey";
    SecretBytes* value = FindField(fields, primary);
    if (value == nullptr) {
      return deny(Internal("credential source " + source + ": sealed secret lacks " + primary),
                  identity);
    }
    grant.secret = std::move(*value);
    if (grant.source_type == "aws") {
      grant.attributes.emplace_back("accessKeyId", StringField(source_spec, "accessKeyId"));
      if (auto region = StringField(source_spec, "region"); !region.empty()) {
        grant.attributes.emplace_back("region", region);
      }
      if (SecretBytes* token = FindField(fields, "spec.sessionToken")) {
        grant.extra_secrets.emplace_back("sessionToken", std::move(*token));
      }
    }
  } else if (grant.source_type == "jwt") {
    const std::string audience = StringField(source_spec, "audience");
    Seconds ttl = core::kDefaultJwtSvidTtl;
    if (auto it = source_spec.find("ttl"); it != source_spec.end() && it->is_string()) {
      auto parsed = ParseDuration(it->get<std::string>());
      if (parsed.ok()) ttl = *parsed;
    }
    std::string token;
    {
      std::lock_guard lock(mu_);
      SIGIL_ASSIGN_OR_RETURN(token, authorities_->MintJwtSvid(granted->id, {audience}, now, ttl));
      if (auto kept = KeepIssuanceDurableLocked(); !kept.ok()) {  // ca_rotation.cc
        OPENSSL_cleanse(token.data(), token.size());
        return std::move(kept).error();
      }
    }
    SIGIL_ASSIGN_OR_RETURN(core::JwtSvid parsed, core::ParseJwtSvidInsecure(token));
    grant.expires_at = parsed.expiry;
    grant.attributes.emplace_back("audience", audience);
    grant.secret = SecretBytes::Copy(token);
    OPENSSL_cleanse(token.data(), token.size());
  } else if (grant.source_type == "oauth2-client-credentials") {
    oauth2::EndpointFailure failure;
    const std::string& source_spec_json = source_stored->spec_json;
    auto token = oauth2_.Get(
        source, source_stored->resource_version,
        [&] { return OAuth2Request(source, source_spec_json); }, &failure);
    if (!token.ok()) {
      nlohmann::json extra = {{"source", source}, {"type", grant.source_type}};
      if (failure.http_status != 0) extra["http_status"] = failure.http_status;
      if (!failure.oauth_error.empty()) extra["oauth_error"] = failure.oauth_error;
      return deny(token.error().WithContext("credential source " + source), identity, extra);
    }
    grant.secret = std::move(token->token);
    grant.expires_at = std::min(grant.expires_at, token->refresh_at);
    grant.attributes.emplace_back("tokenType", token->token_type);
    token_cached = token->cached;
  } else {
    return deny(Error(ErrorCode::kUnimplemented, "credential source " + source + ": type \"" +
                                                     grant.source_type +
                                                     "\" is not served by FetchCredential"),
                identity);
  }

  store::AuditEvent e = WorkloadEvent("credential.grant", node, process);
  e.identity = identity;
  nlohmann::json details = {{"binding", binding},
                            {"source", source},
                            {"type", grant.source_type},
                            {"workload_identity", granted->spec.name},
                            {"exe_sha256", process.exe_sha256},
                            {"uid", process.uid},
                            {"cgroup", process.cgroup},
                            {"container_id", process.container_id},
                            {"expires", ToUnixSeconds(grant.expires_at)}};
  if (token_cached) details["token_cached"] = *token_cached;
  e.details_json = details.dump();
  // No secret leaves the server unaudited.
  SIGIL_TRY(audit_.Append(std::move(e)));
  return grant;
}

}  // namespace sigil::server
