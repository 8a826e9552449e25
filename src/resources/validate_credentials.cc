// CredentialSource and CredentialBinding specs. Secret values are never quoted in messages.
#include <algorithm>

#include "resources/kinds.h"
#include "resources/resource.h"
#include "resources/syntax.h"

namespace sigil::resources::internal {
namespace {

constexpr size_t kMaxSecretBytes = size_t{64} * 1024;

// Field names of every source type, so a field of another type reads "not allowed when
// type is ..." rather than "unknown field".
constexpr std::string_view kSourceFields[] = {
    "value",    "accessKeyId",  "secretAccessKey",  "sessionToken", "region",   "tokenUrl",
    "clientId", "clientSecret", "clientAuthMethod", "scopes",       "caBundle", "audience",
    "ttl"};

void ReadSecret(ObjectReader& obj, std::string_view key, Need need, nlohmann::json& out) {
  auto v = obj.String(key, need, "a string (the secret)");
  if (!v) return;
  if (v->empty()) {
    obj.Report(key, "must not be empty");
  } else if (v->size() > kMaxSecretBytes) {
    obj.Report(key, "is longer than 64 KiB");
  } else if (*v == kRedactedMarker) {
    obj.Report(key, "holds the redaction marker \"" + std::string(kRedactedMarker) +
                        "\"; supply the secret itself");
  } else {
    out[std::string(key)] = *v;
  }
}

// Non-empty printable text without spaces, at most `max` bytes.
void ReadToken(ObjectReader& obj, std::string_view key, size_t max, std::string_view what,
               nlohmann::json& out) {
  auto v = obj.String(key, Need::kRequired, what);
  if (!v) return;
  if (v->empty() || v->size() > max || !IsPrintable(*v) || v->find(' ') != std::string::npos) {
    obj.Report(key, Quote(*v) + " is not " + std::string(what) + " (1-" + std::to_string(max) +
                        " printable characters, no spaces)");
    return;
  }
  out[std::string(key)] = *v;
}

Result<void> CheckAwsRegion(std::string_view r) {
  bool ok = !r.empty() && r.size() <= 32 && r.front() != '-' && r.back() != '-' &&
            std::all_of(r.begin(), r.end(), [](char c) {
              return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
            });
  if (!ok) return InvalidArgument(Quote(r) + " is not an AWS region name (like \"eu-west-1\")");
  return Ok();
}

void ReadRegion(ObjectReader& obj, nlohmann::json& out) {
  if (auto r = obj.String("region", Need::kRequired)) {
    auto ok = CheckAwsRegion(*r);
    if (ok.ok()) {
      out["region"] = *r;
    } else {
      obj.Report("region", ok.error().message());
    }
  }
}

void ReadTokenUrl(ObjectReader& obj, nlohmann::json& out) {
  auto url = obj.String("tokenUrl", Need::kRequired, "an https:// URL");
  if (!url) return;
  if (!url->starts_with("https://")) {
    obj.Report("tokenUrl", Quote(*url) + " must use https:// (the client secret is sent to it)");
    return;
  }
  std::string_view rest = std::string_view(*url).substr(8);
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.empty() || authority.find('@') != std::string_view::npos ||
      url->find('#') != std::string::npos || !IsPrintable(*url) ||
      url->find(' ') != std::string::npos || url->size() > 2048) {
    obj.Report("tokenUrl", Quote(*url) +
                               " is not a valid https URL (host required; no "
                               "userinfo, fragment, spaces)");
    return;
  }
  out["tokenUrl"] = *url;
}

}  // namespace

nlohmann::json ValidateCredentialSource(ObjectReader& spec) {
  nlohmann::json out = nlohmann::json::object();
  auto type =
      spec.Enum("type", Need::kRequired, {"static", "aws", "oauth2-client-credentials", "jwt"});
  if (!type) {
    for (auto f : kSourceFields) spec.Get(f);
    spec.RejectUnknown();
    return out;
  }
  out["type"] = *type;
  if (*type == "static") {
    ReadSecret(spec, "value", Need::kRequired, out);
  } else if (*type == "aws") {
    ReadToken(spec, "accessKeyId", 128, "an AWS access key id", out);
    ReadSecret(spec, "secretAccessKey", Need::kRequired, out);
    ReadSecret(spec, "sessionToken", Need::kOptional, out);
    ReadRegion(spec, out);
  } else if (*type == "oauth2-client-credentials") {
    ReadTokenUrl(spec, out);
    ReadToken(spec, "clientId", 1024, "a client id", out);
    ReadSecret(spec, "clientSecret", Need::kRequired, out);
    // RFC 7591 names; basic (Authorization header) is what RFC 6749 asks servers to support.
    out["clientAuthMethod"] = spec.Enum("clientAuthMethod", Need::kOptional,
                                        {"client_secret_basic", "client_secret_post"})
                                  .value_or("client_secret_basic");
    auto scopes = spec.StringList("scopes", 0, "a scope").value_or(std::vector<std::string>{});
    if (CanonicalList(scopes, spec.PathOf("scopes"), spec.problems(), true,
                      [](const std::string& s) -> Result<std::string> {
                        // RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E
                        bool ok = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
                          return c >= 0x21 && c <= 0x7e && c != '"' && c != '\\';
                        });
                        if (!ok) return InvalidArgument(Quote(s) + " is not an OAuth2 scope");
                        return s;
                      })) {
      out["scopes"] = scopes;
    }
    ReadCaBundle(spec, "caBundle", out);
  } else {  // jwt
    ReadToken(spec, "audience", 256, "an audience", out);
    ReadDuration(spec, "ttl", Seconds(60), Seconds(24 * 3600), Seconds(300), out);
  }
  for (auto f : kSourceFields) spec.Forbid(f, "type is \"" + *type + "\"");
  spec.RejectUnknown();
  return out;
}

}  // namespace sigil::resources::internal
