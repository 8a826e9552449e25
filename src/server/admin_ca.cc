// Admin API: CA rotation routes.
//   GET  /api/v1/ca         every generation of the authority set (read-only role allowed)
//   POST /api/v1/ca/rotate  {"activateAfter": "10m" | seconds, "force": bool}
#include "common/duration.h"
#include "server/admin_internal.h"
#include "server/ca_state.h"

namespace sigil::server::admin {
namespace {

nlohmann::json StatusJson(const CaRotationStatus& status) {
  nlohmann::json out = CaGenerationsJson(status.bundle_sequence, status.generations);
  out["now"] = FormatRfc3339(status.now);
  return out;
}

void Rotate(ControlPlane& cp, Logger& log, const httplib::Request& req, httplib::Response& res,
            const Caller& caller) {
  auto body = JsonBody(req, res);
  if (!body) return;
  if (!body->is_object()) return SendError(res, 400, "InvalidArgument", "body: must be an object");
  for (const auto& [key, value] : body->items()) {
    if (key != "activateAfter" && key != "force") {
      return SendError(res, 400, "InvalidArgument",
                       "body: unknown member \"" + key + "\" (activateAfter, force)");
    }
  }
  Seconds activate_after = kDefaultCaActivateAfter;
  if (auto a = body->find("activateAfter"); a != body->end() && !a->is_null()) {
    if (a->is_string()) {
      auto parsed = ParseDuration(a->get<std::string>());
      if (!parsed.ok()) {
        return SendError(res, 400, "InvalidArgument", "activateAfter: " + parsed.error().message());
      }
      activate_after = *parsed;
    } else if (a->is_number_integer()) {
      activate_after = Seconds(a->get<int64_t>());
    } else {
      return SendError(res, 400, "InvalidArgument",
                       "activateAfter: must be a duration string like \"10m\" or seconds");
    }
  }
  bool force = false;
  if (auto f = body->find("force"); f != body->end() && !f->is_null()) {
    if (!f->is_boolean()) return SendError(res, 400, "InvalidArgument", "force: must be a boolean");
    force = f->get<bool>();
  }
  auto prepared = cp.RotateCa(activate_after, force, caller.spiffe_id);
  if (!prepared.ok()) return SendError(res, prepared.error());
  log.Info("ca.rotate.prepare",
           {{"ca_sha256", prepared->ca_sha256},
            {"activate_at", prepared->activate_at ? FormatRfc3339(*prepared->activate_at) : ""},
            {"actor", caller.spiffe_id}});
  SendJson(res, 200,
           {{"prepared", CaGenerationJson(*prepared)}, {"status", StatusJson(cp.CaStatus())}});
}

}  // namespace

void RegisterCaRoutes(httplib::Server& s, ControlPlane& cp, Logger& log) {
  const core::TrustDomain& td = cp.trust_domain();
  s.Get("/api/v1/ca",
        Guarded(td, false, [&cp](const httplib::Request&, httplib::Response& res, const Caller&) {
          SendJson(res, 200, StatusJson(cp.CaStatus()));
        }));
  s.Post("/api/v1/ca/rotate",
         Guarded(td, true,
                 [&cp, &log](const httplib::Request& req, httplib::Response& res, const Caller& c) {
                   Rotate(cp, log, req, res, c);
                 }));
}

}  // namespace sigil::server::admin
