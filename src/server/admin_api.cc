#include "server/admin_api.h"

#include <sys/socket.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <thread>

#include "common/ossl.h"
#include "core/certificate.h"
#include "server/admin_internal.h"
#include "server/server_identity.h"

namespace sigil::server {
namespace admin {

std::optional<Caller> Authenticate(const httplib::Request& req, const core::TrustDomain& td) {
  if (req.ssl == nullptr) return std::nullopt;
  X509* peer = SSL_get1_peer_certificate(req.ssl);
  if (peer == nullptr) return std::nullopt;
  auto cert = core::Certificate::Adopt(X509Ptr(peer));
  // The handshake already verified the chain (SSL_VERIFY_FAIL_IF_NO_PEER_CERT); a failed
  // verification never reaches a handler. Double-check anyway.
  if (SSL_get_verify_result(req.ssl) != X509_V_OK) return std::nullopt;
  auto uris = cert.UriSans();
  if (uris.size() != 1) return std::nullopt;
  std::string base = td.IdString() + "/sigil/admin";
  if (uris[0] == base) return Caller{uris[0], false};
  if (uris[0] == base + "/readonly") return Caller{uris[0], true};
  return std::nullopt;
}

httplib::Server::Handler Guarded(const core::TrustDomain& td, bool write, GuardedHandler handler) {
  return [td, write, handler = std::move(handler)](const httplib::Request& req,
                                                   httplib::Response& res) {
    auto caller = Authenticate(req, td);
    if (!caller) {
      SendError(res, 403, "PermissionDenied",
                "client certificate is not an admin identity of " + td.name());
      return;
    }
    if (write && caller->read_only) {
      SendError(res, 403, "PermissionDenied",
                caller->spiffe_id + " is read-only: " + req.method + " is not allowed");
      return;
    }
    handler(req, res, *caller);
  };
}

int HttpStatus(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kFailedPrecondition:
      return 400;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kAborted:
      return 409;
    case ErrorCode::kResourceExhausted:
      return 413;
    case ErrorCode::kUnimplemented:
      return 501;
    case ErrorCode::kUnavailable:
    case ErrorCode::kDeadlineExceeded:
      return 503;
    case ErrorCode::kInternal:
      break;
  }
  return 500;
}

void SendJson(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                  "application/json");
}

void SendError(httplib::Response& res, int status, std::string_view code, std::string message) {
  SendJson(res, status, {{"error", std::move(message)}, {"code", code}});
}

void SendError(httplib::Response& res, const Error& error) {
  SendError(res, HttpStatus(error.code()), ErrorCodeName(error.code()), error.message());
}

std::optional<nlohmann::json> JsonBody(const httplib::Request& req, httplib::Response& res) {
  auto j = nlohmann::json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    SendError(res, 400, "InvalidArgument", "request body must be a JSON object");
    return std::nullopt;
  }
  return j;
}

}  // namespace admin

struct AdminApi::Impl {
  std::unique_ptr<ServerIdentity> own_identity;  // when options.identity was not given
  std::unique_ptr<httplib::SSLServer> server;
  std::thread thread;
  std::string host;
  int port = 0;
  bool stopped = false;
};

namespace {

bool ConfigureTls(SSL_CTX& ctx, ServerIdentity& identity) {
  SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(
      &ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_set_cipher_list(&ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) return false;
  // Certificate, key and client-verification roots come from `identity` per handshake, so a
  // renewed certificate or a rotated CA takes effect without restarting the listener.
  if (!identity.InstallOn(ctx)) return false;
  SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_verify_depth(&ctx, 4);
  return true;
}

}  // namespace

AdminApi::AdminApi(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AdminApi::~AdminApi() { Stop(); }
const std::string& AdminApi::host() const { return impl_->host; }
int AdminApi::port() const { return impl_->port; }

void AdminApi::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->server->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<AdminApi>> AdminApi::Start(ControlPlane& cp, Logger& log,
                                                  const AdminApiOptions& options) {
  auto impl = std::make_unique<Impl>();
  ServerIdentity* identity = options.identity;
  if (identity == nullptr) {
    SIGIL_ASSIGN_OR_RETURN(impl->own_identity, ServerIdentity::Create(cp, options.dns_names, ""));
    identity = impl->own_identity.get();
  }
  impl->host = options.host;
  impl->server = std::make_unique<httplib::SSLServer>(
      [identity](SSL_CTX& ctx) { return ConfigureTls(ctx, *identity); });
  if (!impl->server->is_valid()) return Internal("admin API: TLS setup failed");
  httplib::Server& s = *impl->server;
  s.set_payload_max_length(options.max_body_bytes);
  s.set_read_timeout(30);
  s.set_write_timeout(30);
  const core::TrustDomain td = cp.trust_domain();
  s.set_keep_alive_timeout(2);
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      admin::SendError(res, 404, "NotFound", "no route for " + req.method + " " + req.path);
    } else if (res.status == 413) {
      admin::SendError(res, 413, "ResourceExhausted", "request body is too large");
    } else {
      admin::SendError(res, res.status, "Error", "request failed");
    }
  });
  s.set_exception_handler(
      [&log](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        log.Error("admin.exception");
        admin::SendError(res, 500, "Internal", "internal error");
      });
  s.set_logger(
      [&log, td, m = options.metrics](const httplib::Request& req, const httplib::Response& res) {
        if (m != nullptr) m->admin_requests.Inc({req.method, std::to_string(res.status)});
        auto caller = admin::Authenticate(req, td);
        log.Info("admin.request", {{"method", req.method},
                                   {"path", req.path},
                                   {"status", res.status},
                                   {"caller", caller ? caller->spiffe_id : ""}});
      });
  admin::RegisterResourceRoutes(s, cp, log);
  admin::RegisterOpsRoutes(s, cp, log);
  admin::RegisterCredentialRoutes(s, cp, log);
  admin::RegisterRevocationRoutes(s, cp, log);
  admin::RegisterCaRoutes(s, cp, log);
  // httplib's default also sets SO_REUSEPORT, which would let a second process bind the same
  // admin port and receive part of the connections. SO_REUSEADDR only.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });

  if (options.port == 0) {
    impl->port = s.bind_to_any_port(options.host);
    if (impl->port <= 0) return Unavailable("admin API: cannot bind " + options.host + ":0");
  } else {
    if (!s.bind_to_port(options.host, options.port)) {
      return Unavailable("admin API: cannot bind " + options.host + ":" +
                         std::to_string(options.port));
    }
    impl->port = options.port;
  }
  httplib::Server* raw = impl->server.get();
  impl->thread = std::thread([raw] { raw->listen_after_bind(); });
  return std::unique_ptr<AdminApi>(new AdminApi(std::move(impl)));
}

}  // namespace sigil::server
