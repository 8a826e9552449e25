// Fuzzes what the server reads from an OAuth 2.0 token endpoint (src/server/oauth2_token.h):
// the answer body under a status chosen by the first input byte, and the token URL parser on
// the same bytes. Checks the promises callers rely on: a token is non-empty printable ASCII
// within the size bound with a positive lifetime, failures carry the status, and the cache
// time never exceeds the lifetime.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/oauth2_token.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using sigil::server::oauth2::CacheDuration;
  using sigil::server::oauth2::Millis;
  if (size == 0) return 0;
  static constexpr int kStatuses[] = {200, 200, 200, 400, 401, 403, 408, 429, 500, 503, 302, 0};
  const int status = kStatuses[data[0] % (sizeof kStatuses / sizeof kStatuses[0])];
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

  sigil::server::oauth2::EndpointFailure failure;
  auto token = sigil::server::oauth2::ParseTokenResponse(status, body, &failure);
  if (token.ok()) {
    const std::string_view v = token->value.view();
    if (status != 200 || v.empty() || v.size() > sigil::server::oauth2::kMaxAccessTokenBytes) {
      std::abort();
    }
    for (unsigned char c : v) {
      if (c <= 0x20 || c >= 0x7f) std::abort();
    }
    if (token->lifetime <= Millis(0)) std::abort();
    const Millis cached = CacheDuration(token->lifetime);
    if (cached < Millis(0) || cached > token->lifetime) std::abort();
  } else if (failure.http_status != status ||
             token.error().message().find('\n') != std::string::npos) {
    std::abort();
  }

  auto url = sigil::server::oauth2::ParseHttpsUrl(body);
  if (url.ok() &&
      (url->host.empty() || url->port < 1 || url->port > 65535 || !url->target.starts_with("/"))) {
    std::abort();
  }
  return 0;
}
