// The HTTPS exchange with an OAuth 2.0 token endpoint (cpp-httplib over OpenSSL): one POST
// per call, no connection reuse, no redirects, no compression.
#pragma once

#include <chrono>
#include <cstddef>

#include "common/result.h"
#include "server/oauth2_token.h"

namespace sigil::server::oauth2 {

struct ClientOptions {
  // Bounds the whole exchange (connect, handshake, request, answer); connect and each read
  // or write also time out on their own after this long.
  std::chrono::milliseconds timeout{10000};
  size_t max_response_bytes = kMaxResponseBytes;  // the body; longer answers are refused
};

// POSTs `request` to its token URL and parses the answer (ParseTokenResponse). TLS 1.2 or
// newer; the server certificate must chain to the request's CA bundle (only it) or, without
// one, to the system roots, and must name the URL's host (DNS name or IP address). Transport
// failures are Unavailable with `failure->http_status` 0. `failure` never holds the secret.
Result<AccessToken> FetchToken(const TokenRequest& request, const ClientOptions& options,
                               EndpointFailure* failure);

}  // namespace sigil::server::oauth2
