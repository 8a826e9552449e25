// Admin API: revocation (`sigil revoke`). See docs/control-plane.md, "Revocation".
//
//   POST /api/v1/revocations        {"kind", "target", "reason"}  -> 201 + the revocation
//   GET  /api/v1/revocations                                      -> {"items": [...]}
//   POST /api/v1/revocations/lift   {"kind", "target", "reason"}  -> 200 + the lifted revocation
//
// A revocation is the Revocation resource's spec plus "name" and "resourceVersion". The
// generic resource routes cannot write the kind: they only know the kinds of the resource
// parser, which Revocation is not one of.
#include "server/admin_internal.h"
#include "server/revocations.h"

namespace sigil::server::admin {
namespace {

struct RevocationRequest {
  RevocationKind kind = RevocationKind::kSvid;
  std::string target;
  std::string reason;
};

// Reads {"kind", "target", "reason"}; on a malformed body sends 400 naming the field.
std::optional<RevocationRequest> ReadRequest(const httplib::Request& req, httplib::Response& res) {
  auto body = JsonBody(req, res);
  if (!body) return std::nullopt;
  RevocationRequest out;
  auto kind = body->find("kind");
  if (kind == body->end() || !kind->is_string()) {
    SendError(res, 400, "InvalidArgument",
              "kind: required string (node, identity, svid or binding)");
    return std::nullopt;
  }
  auto parsed = RevocationKindFromName(kind->get<std::string>());
  if (!parsed) {
    SendError(res, 400, "InvalidArgument",
              "kind: unknown kind " +
                  kind->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                  " (node, identity, svid or binding)");
    return std::nullopt;
  }
  out.kind = *parsed;
  for (auto [key, field] : {std::pair{"target", &out.target}, std::pair{"reason", &out.reason}}) {
    auto it = body->find(key);
    if (it == body->end() || !it->is_string()) {
      SendError(res, 400, "InvalidArgument", std::string(key) + ": required string");
      return std::nullopt;
    }
    *field = it->get<std::string>();
  }
  return out;
}

nlohmann::json ApiJson(const Revocation& r) { return nlohmann::json::parse(r.ApiJson()); }

void Revoke(ControlPlane& cp, Logger& log, const httplib::Request& req, httplib::Response& res,
            const Caller& caller) {
  auto request = ReadRequest(req, res);
  if (!request) return;
  auto revoked = cp.Revoke(request->kind, request->target, request->reason, caller.spiffe_id);
  if (!revoked.ok()) return SendError(res, revoked.error());
  log.Info("revoke", {{"kind", RevocationKindName(revoked->kind)},
                      {"target", revoked->target},
                      {"serials", revoked->serials.size()},
                      {"resource_version", revoked->resource_version},
                      {"caller", caller.spiffe_id}});
  SendJson(res, 201, ApiJson(*revoked));
}

void Lift(ControlPlane& cp, Logger& log, const httplib::Request& req, httplib::Response& res,
          const Caller& caller) {
  auto request = ReadRequest(req, res);
  if (!request) return;
  auto lifted =
      cp.LiftRevocation(request->kind, request->target, request->reason, caller.spiffe_id);
  if (!lifted.ok()) return SendError(res, lifted.error());
  log.Info("revoke.lift", {{"kind", RevocationKindName(lifted->kind)},
                           {"target", lifted->target},
                           {"caller", caller.spiffe_id}});
  nlohmann::json out = ApiJson(*lifted);
  out["lifted"] = true;
  out["liftReason"] = request->reason;
  SendJson(res, 200, out);
}

}  // namespace

void RegisterRevocationRoutes(httplib::Server& s, ControlPlane& cp, Logger& log) {
  const core::TrustDomain& td = cp.trust_domain();
  s.Post("/api/v1/revocations",
         Guarded(td, true,
                 [&cp, &log](const httplib::Request& req, httplib::Response& res, const Caller& c) {
                   Revoke(cp, log, req, res, c);
                 }));
  s.Post("/api/v1/revocations/lift",
         Guarded(td, true,
                 [&cp, &log](const httplib::Request& req, httplib::Response& res, const Caller& c) {
                   Lift(cp, log, req, res, c);
                 }));
  s.Get("/api/v1/revocations",
        Guarded(td, false, [&cp](const httplib::Request&, httplib::Response& res, const Caller&) {
          auto items = cp.ListRevocations();
          if (!items.ok()) return SendError(res, items.error());
          nlohmann::json out = nlohmann::json::array();
          for (const auto& r : *items) out.push_back(ApiJson(r));
          SendJson(res, 200, {{"items", out}});
        }));
}

}  // namespace sigil::server::admin
