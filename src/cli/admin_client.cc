#include "cli/admin_client.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>

#include <iostream>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "common/ossl.h"
#include "core/certificate.h"

namespace sigil::cli {
namespace {

// Accepts only a server leaf whose single URI SAN is spiffe://TD/sigil/server.
int VerifyServer(int preverify_ok, X509_STORE_CTX* ctx) {
  if (preverify_ok != 1) return 0;
  if (X509_STORE_CTX_get_error_depth(ctx) != 0) return 1;
  X509* leaf = X509_STORE_CTX_get_current_cert(ctx);
  if (leaf == nullptr || X509_up_ref(leaf) != 1) return 0;
  auto uris = core::Certificate::Adopt(X509Ptr(leaf)).UriSans();
  if (uris.size() != 1 || !uris[0].starts_with("spiffe://") ||
      !uris[0].ends_with("/sigil/server")) {
    X509_STORE_CTX_set_error(ctx, X509_V_ERR_HOSTNAME_MISMATCH);
    return 0;
  }
  return 1;
}

struct Target {
  std::string host;
  int port = 0;
};

Result<Target> ParseServer(const std::string& url) {
  constexpr std::string_view kScheme = "https://";
  if (!url.starts_with(kScheme)) {
    return InvalidArgument("--server: \"" + url + "\" must start with https://");
  }
  std::string rest = url.substr(kScheme.size());
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  size_t colon = rest.rfind(':');
  Target t;
  if (colon == std::string::npos) {
    t.host = rest;
    t.port = 443;
  } else {
    t.host = rest.substr(0, colon);
    try {
      t.port = std::stoi(rest.substr(colon + 1));
    } catch (...) {
      t.port = -1;
    }
  }
  if (t.host.starts_with("[") && t.host.ends_with("]"))
    t.host = t.host.substr(1, t.host.size() - 2);
  if (t.host.empty() || t.port <= 0 || t.port > 65535) {
    return InvalidArgument("--server: \"" + url + "\" is not https://HOST:PORT");
  }
  return t;
}

}  // namespace

void AdminEndpoint::AddFlags(FlagSet& flags) {
  flags.String("server", &server,
               "admin API URL (default " + std::string(kDefaultAdminServer) + ")");
  flags.String("credentials", &credentials,
               "directory with cert.pem, key.pem, bundle.pem (default " +
                   std::string(kDefaultAdminCredentials) + ")");
}

Result<AdminResponse> AdminRequest(const AdminEndpoint& endpoint, const std::string& method,
                                   const std::string& path, const std::string& body,
                                   const std::string& content_type) {
  SIGIL_ASSIGN_OR_RETURN(Target target, ParseServer(endpoint.server));
  ::signal(SIGPIPE, SIG_IGN);  // a server that closes early must be an error, not a crash
  const std::string cert = endpoint.credentials + "/cert.pem";
  const std::string key = endpoint.credentials + "/key.pem";
  const std::string bundle = endpoint.credentials + "/bundle.pem";
  httplib::SSLClient client(target.host, target.port);
  SSL_CTX* ctx = client.ssl_context();
  if (ctx == nullptr) return Internal("TLS client setup failed");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    return InvalidArgument("--credentials: cannot load client certificate " + cert);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    return InvalidArgument("--credentials: cannot load private key " + key);
  }
  if (SSL_CTX_load_verify_locations(ctx, bundle.c_str(), nullptr) != 1) {
    return InvalidArgument("--credentials: cannot load CA bundle " + bundle);
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, VerifyServer);
  client.enable_server_certificate_verification(false);  // done by VerifyServer above
  client.set_connection_timeout(10);
  client.set_read_timeout(60);
  client.set_write_timeout(60);

  auto send = [&]() -> Result<httplib::Result> {
    if (method == "GET") return client.Get(path);
    if (method == "DELETE") return client.Delete(path);
    if (method == "POST") return client.Post(path, body, content_type);
    if (method == "PUT") return client.Put(path, body, content_type);
    return InvalidArgument("unsupported method " + method);
  };
  SIGIL_ASSIGN_OR_RETURN(httplib::Result result, send());
  if (!result) {
    std::string detail = httplib::to_string(result.error());
    long verify = client.get_openssl_verify_result();
    if (verify != X509_V_OK) detail += ": " + std::string(X509_verify_cert_error_string(verify));
    return Unavailable("cannot reach the admin API at " + endpoint.server + ": " + detail);
  }
  return AdminResponse{result->status, result->body};
}

std::string AdminErrorText(const AdminResponse& response) {
  auto j = nlohmann::json::parse(response.body, nullptr, false);
  std::string out;
  if (j.is_object() && j.contains("errors") && j["errors"].is_array()) {
    for (const auto& e : j["errors"])
      out += (e.is_string() ? e.get<std::string>() : e.dump()) + "\n";
  } else if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    out = j["error"].get<std::string>() + "\n";
  } else {
    out = response.body.empty() ? "HTTP " + std::to_string(response.status) + "\n" : response.body;
    if (!out.ends_with("\n")) out += "\n";
  }
  return out;
}

std::optional<nlohmann::json> AdminCall(std::string_view cmd, const AdminEndpoint& ep,
                                        const std::string& method, const std::string& path,
                                        const std::string& body, const std::string& content_type) {
  auto res = AdminRequest(ep, method, path, body, content_type);
  if (!res.ok()) {
    std::cerr << "sigil " << cmd << ": " << res.error().message() << "\n";
    return std::nullopt;
  }
  if (res->status < 200 || res->status > 299) {
    std::cerr << "sigil " << cmd << ": server answered " << res->status << ":\n"
              << AdminErrorText(*res);
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (j.is_discarded()) {
    std::cerr << "sigil " << cmd << ": the server's answer is not JSON\n";
    return std::nullopt;
  }
  return j;
}

std::string JsonField(const nlohmann::json& j, const char* key, std::string_view missing) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::string(missing);
  return it->is_string() ? it->get<std::string>() : it->dump();
}

}  // namespace sigil::cli
