// Internal to the admin API: shared helpers of admin_api.cc, admin_resources.cc, admin_ops.cc,
// admin_credentials.cc, admin_revocations.cc.
#pragma once

#include <optional>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "common/result.h"
#include "server/control_plane.h"
#include "server/log.h"

namespace sigil::server::admin {

struct Caller {
  std::string spiffe_id;
  bool read_only = true;
};

// The verified client's role, or nullopt when its SPIFFE ID is not an admin identity.
std::optional<Caller> Authenticate(const httplib::Request& req, const core::TrustDomain& td);

// Wraps a route handler with the role check: 403 unless the caller is an admin identity, and
// unless it is read-write when `write` is set. Runs after the body was read (a pre-routing
// check would answer before reading it, and the client would see a broken pipe).
using GuardedHandler =
    std::function<void(const httplib::Request&, httplib::Response&, const Caller&)>;
httplib::Server::Handler Guarded(const core::TrustDomain& td, bool write, GuardedHandler handler);

int HttpStatus(ErrorCode code);
void SendJson(httplib::Response& res, int status, const nlohmann::json& body);
void SendError(httplib::Response& res, int status, std::string_view code, std::string message);
void SendError(httplib::Response& res, const Error& error);
// Parses a JSON request body; on failure sends 400 and returns nullopt.
std::optional<nlohmann::json> JsonBody(const httplib::Request& req, httplib::Response& res);

void RegisterResourceRoutes(httplib::Server& server, ControlPlane& cp, Logger& log);
void RegisterOpsRoutes(httplib::Server& server, ControlPlane& cp, Logger& log);
void RegisterCredentialRoutes(httplib::Server& server, ControlPlane& cp, Logger& log);
void RegisterRevocationRoutes(httplib::Server& server, ControlPlane& cp, Logger& log);
void RegisterCaRoutes(httplib::Server& server, ControlPlane& cp, Logger& log);  // admin_ca.cc

}  // namespace sigil::server::admin
