#include "agent/creds/grant.h"

#include <openssl/crypto.h>

namespace sigil::agent::creds {
namespace {

namespace pb = sigil::agent::v1;

void Wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

}  // namespace

std::string_view SecretParts::secret() const { return grant_.secret_.view(); }

std::optional<std::string_view> SecretParts::extra(std::string_view name) const {
  for (const auto& [k, v] : grant_.extra_) {
    if (k == name) return v.view();
  }
  return std::nullopt;
}

void WipeResponse(pb::FetchCredentialResponse& response) {
  Wipe(*response.mutable_secret());
  for (auto& [k, v] : *response.mutable_extra_secrets()) Wipe(v);
  response.clear_extra_secrets();
}

Result<std::shared_ptr<const CredentialGrant>> GrantFromResponse(
    const std::string& binding, pb::FetchCredentialResponse& response, TimePoint now) {
  SecretBytes secret = SecretBytes::Copy(response.secret());
  std::vector<std::pair<std::string, SecretBytes>> extra;
  for (const auto& [k, v] : response.extra_secrets()) {
    extra.emplace_back(k, SecretBytes::Copy(v));
  }
  WipeResponse(response);
  GrantInfo info;
  info.binding = binding;
  info.source = response.source();
  info.source_type = response.source_type();
  info.spiffe_id = response.spiffe_id();
  for (const auto& [k, v] : response.attributes()) info.attributes.emplace(k, v);
  info.fetched_at = now;
  info.expires_at = FromUnixSeconds(response.expires_at());
  if (info.expires_at <= now) {
    return InvalidArgument("credential grant for binding " + binding +
                           ": the server's expires_at is not in the future");
  }
  return std::make_shared<const CredentialGrant>(std::move(info), std::move(secret),
                                                 std::move(extra));
}

}  // namespace sigil::agent::creds
