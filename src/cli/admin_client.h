// Client side of the admin API for the `sigil` CLI commands: mTLS with the credentials in
// --credentials DIR (cert.pem, key.pem, bundle.pem). The server must present a certificate
// that chains to bundle.pem and names spiffe://<any TD>/sigil/server.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cli/flags.h"
#include "common/result.h"

namespace sigil::cli {

inline constexpr std::string_view kDefaultAdminServer = "https://127.0.0.1:8443";
inline constexpr std::string_view kDefaultAdminCredentials = "/var/lib/sigil/admin";

struct AdminEndpoint {
  std::string server = std::string(kDefaultAdminServer);
  std::string credentials = std::string(kDefaultAdminCredentials);
  // Registers --server and --credentials.
  void AddFlags(FlagSet& flags);
};

struct AdminResponse {
  int status = 0;
  std::string body;
};

// One request. A transport failure (connect, TLS) is an Error; any HTTP status is a response.
Result<AdminResponse> AdminRequest(const AdminEndpoint& endpoint, const std::string& method,
                                   const std::string& path, const std::string& body = "",
                                   const std::string& content_type = "application/json");

// The server's error text: the "errors" list one per line, or "error", or the raw body.
std::string AdminErrorText(const AdminResponse& response);

// One request for the command `sigil CMD`: the JSON answer of a 2xx response, else nullopt
// after printing "sigil CMD: ..." (transport error, the server's error text, or a non-JSON
// answer) to stderr.
std::optional<nlohmann::json> AdminCall(std::string_view cmd, const AdminEndpoint& ep,
                                        const std::string& method, const std::string& path,
                                        const std::string& body = "",
                                        const std::string& content_type = "application/json");

// A field of an answer as text: strings as they are, other values as JSON, `missing` when the
// field is absent or null.
std::string JsonField(const nlohmann::json& j, const char* key, std::string_view missing = "");

}  // namespace sigil::cli
