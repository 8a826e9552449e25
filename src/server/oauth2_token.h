// OAuth 2.0 client credentials grant (RFC 6749 section 4.4), transport-free parts: the token
// URL, the request body and client authentication, the token endpoint's answer, and how long
// the server keeps an access token. The HTTPS exchange is oauth2_client.h; the cache is
// oauth2_broker.h.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/secret_bytes.h"

namespace sigil::server::oauth2 {

using Millis = std::chrono::milliseconds;

// How the client authenticates at the token endpoint (RFC 6749 section 2.3.1; the names are
// those of RFC 7591's token_endpoint_auth_method).
enum class ClientAuth {
  kBasic,  // "client_secret_basic": Authorization: Basic, the default
  kPost,   // "client_secret_post": client_id and client_secret in the form body
};
// "client_secret_basic" / "client_secret_post"; nullopt for anything else.
std::optional<ClientAuth> ClientAuthFromName(std::string_view name);

// Everything one token request needs. Built per fetch from the CredentialSource and its
// sealed secret; the secret stays in SecretBytes.
struct TokenRequest {
  std::string token_url;
  std::string client_id;
  SecretBytes client_secret;
  std::vector<std::string> scopes;
  ClientAuth auth = ClientAuth::kBasic;
  std::string ca_bundle_pem;  // empty: the system's roots
};

struct HttpsUrl {
  std::string host;  // without brackets for IPv6 literals
  int port = 443;
  std::string target;  // path and query, at least "/"
  bool host_is_ip = false;
};
// https://host[:port][/path][?query] (the resource validation already refused userinfo,
// fragments, spaces and http://).
Result<HttpsUrl> ParseHttpsUrl(std::string_view url);

// application/x-www-form-urlencoded request body: grant_type, scope (space-separated) when
// scopes are configured, and for kPost client_id and client_secret.
SecretBytes FormBody(const TokenRequest& request);
// The Authorization header value for kBasic: "Basic " + base64(enc(id) ":" enc(secret)), where
// enc is the form encoding, as RFC 6749 section 2.3.1 asks.
SecretBytes BasicAuthorization(std::string_view client_id, const SecretBytes& client_secret);

// What the token endpoint said when it did not give a token. Goes into the audit record and
// error messages, so it never holds the client secret (ScrubSecret).
struct EndpointFailure {
  int http_status = 0;      // 0 when there was no HTTP answer (DNS, connect, TLS, timeout)
  std::string oauth_error;  // the answer's "error" code (RFC 6749 section 5.2), if any
  std::string detail;       // error_description, or what failed on the way
};
// Replaces every occurrence of `secret` in the failure's text fields with "[redacted]" (an
// endpoint may echo what it was sent).
void ScrubSecret(EndpointFailure& failure, const SecretBytes& secret);

struct AccessToken {
  SecretBytes value;
  std::string token_type;  // as the endpoint spelled it ("Bearer", "bearer")
  // expires_in; when the answer has none, kDefaultLifetime and lifetime_defaulted.
  Millis lifetime{0};
  bool lifetime_defaulted = false;
};

inline constexpr Millis kDefaultLifetime{300 * 1000};
inline constexpr size_t kMaxAccessTokenBytes = size_t{32} * 1024;
inline constexpr size_t kMaxResponseBytes = size_t{64} * 1024;

// Reads the token endpoint's answer (`status`, `body`). 200 with a JSON object holding a
// non-empty printable access_token, a token_type of "Bearer" (any case; absent is taken as
// Bearer) and a positive expires_in (number or numeric string; absent: kDefaultLifetime) is a
// token. Anything else is an error with `failure` filled: FailedPrecondition for a 4xx
// rejection (wrong client secret, unknown scope), Unavailable for 5xx, 429, 408, redirects
// and unusable 200 answers. Messages start with "token endpoint ".
Result<AccessToken> ParseTokenResponse(int status, std::string_view body, EndpointFailure* failure);

// How long a token with `lifetime` is served from the cache: the lifetime minus a margin of
// max(30 s, 10 %), the margin never more than half the lifetime (a 2 s token is kept 1 s),
// and at most 24 h.
Millis CacheDuration(Millis lifetime);

}  // namespace sigil::server::oauth2
