// Admin API: operational routes (/api/v1/tokens, nodes, audit).
#include <charconv>
#include <ctime>

#include "common/duration.h"
#include "server/admin_internal.h"

namespace sigil::server::admin {
namespace {

// "2026-01-02T03:04:05Z", optional fraction, "Z" or "+hh:mm"/"-hh:mm" offset.
std::optional<TimePoint> ParseRfc3339(std::string_view s) {
  int y, mo, d, h, mi, sec;
  char tail[32] = {};
  std::string text(s);
  if (text.size() > 40) return std::nullopt;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%31s", &y, &mo, &d, &h, &mi, &sec, tail) <
      6) {
    return std::nullopt;
  }
  std::string_view rest(tail);
  int64_t micros = 0;
  if (rest.starts_with(".")) {
    size_t i = 1;
    int64_t scale = 100000;
    while (i < rest.size() && std::isdigit(static_cast<unsigned char>(rest[i]))) {
      micros += (rest[i] - '0') * scale;
      scale /= 10;
      ++i;
    }
    rest.remove_prefix(i);
  }
  int64_t offset = 0;
  if (rest == "Z" || rest == "z") {
    offset = 0;
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    int oh = 0, om = 0;
    if (std::sscanf(std::string(rest).c_str() + 1, "%2d:%2d", &oh, &om) != 2) return std::nullopt;
    offset = (oh * 3600 + om * 60) * (rest[0] == '+' ? 1 : -1);
  } else {
    return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  time_t t = timegm(&tm);
  return TimePoint(std::chrono::seconds(t - offset)) + std::chrono::microseconds(micros);
}

std::optional<int64_t> ParseInt(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string Time(TimePoint t) { return FormatRfc3339(t); }

nlohmann::json NodeJson(const store::NodeRecord& n) {
  return {{"name", n.name},
          {"spiffeId", n.spiffe_id},
          {"svidSerial", n.svid_serial},
          {"svidExpiry", Time(n.svid_expiry)},
          {"joinedAt", Time(n.joined_at)},
          {"lastSeen", Time(n.last_seen)},
          {"revoked", n.revoked},
          {"revocationReason", n.revocation_reason}};
}

nlohmann::json AuditJson(const store::AuditRecord& r) {
  auto details = nlohmann::json::parse(
      r.event.details_json.empty() ? std::string("{}") : r.event.details_json, nullptr, false);
  nlohmann::json j = {
      {"seq", r.seq},
      {"time", Time(r.event.time)},
      {"type", r.event.type},
      {"actor", r.event.actor},
      {"node", r.event.node},
      {"identity", r.event.identity},
      {"exe", r.event.exe},
      {"details", details.is_discarded() ? nlohmann::json(r.event.details_json) : details},
      {"hash", r.hash}};
  j["pid"] = r.event.pid ? nlohmann::json(*r.event.pid) : nlohmann::json(nullptr);
  return j;
}

void CreateToken(ControlPlane& cp, Logger& log, const httplib::Request& req, httplib::Response& res,
                 const Caller& caller) {
  auto body = JsonBody(req, res);
  if (!body) return;
  auto node = body->find("node");
  if (node == body->end() || !node->is_string()) {
    return SendError(res, 400, "InvalidArgument", "node: required string");
  }
  Seconds ttl = kDefaultJoinTokenTtl;
  if (auto t = body->find("ttl"); t != body->end()) {
    if (t->is_string()) {
      auto parsed = ParseDuration(t->get<std::string>());
      if (!parsed.ok())
        return SendError(res, 400, "InvalidArgument", "ttl: " + parsed.error().message());
      ttl = *parsed;
    } else if (t->is_number_integer()) {
      ttl = Seconds(t->get<int64_t>());
    } else {
      return SendError(res, 400, "InvalidArgument", "ttl: must be a duration string like \"1h\"");
    }
  }
  auto token = cp.CreateJoinToken(node->get<std::string>(), ttl, caller.spiffe_id);
  if (!token.ok()) return SendError(res, token.error());
  log.Info("token.create", {{"node", node->get<std::string>()}, {"token_id", token->id}});
  SendJson(res, 200,
           {{"token", std::string(token->text.view())},
            {"id", token->id},
            {"node", node->get<std::string>()},
            {"expires", Time(token->expires_at)}});
}

void QueryAudit(ControlPlane& cp, const httplib::Request& req, httplib::Response& res) {
  store::AuditFilter f;
  f.limit = 1000;
  if (req.has_param("since") && !req.get_param_value("since").empty()) {
    auto t = ParseRfc3339(req.get_param_value("since"));
    if (!t) return SendError(res, 400, "InvalidArgument", "since: not an RFC 3339 time");
    f.since = *t;
  }
  for (auto [key, field] : {std::pair{"identity", &f.identity}, std::pair{"node", &f.node},
                            std::pair{"type", &f.type}, std::pair{"binding", &f.binding}}) {
    if (req.has_param(key) && !req.get_param_value(key).empty()) {
      *field = req.get_param_value(key);
    }
  }
  if (req.has_param("pid") && !req.get_param_value("pid").empty()) {
    auto pid = ParseInt(req.get_param_value("pid"));
    if (!pid) return SendError(res, 400, "InvalidArgument", "pid: not an integer");
    f.pid = *pid;
  }
  if (req.has_param("limit") && !req.get_param_value("limit").empty()) {
    auto limit = ParseInt(req.get_param_value("limit"));
    if (!limit || *limit < 1 || *limit > store::kMaxAuditQueryLimit) {
      return SendError(res, 400, "InvalidArgument",
                       "limit: must be 1.." + std::to_string(store::kMaxAuditQueryLimit));
    }
    f.limit = static_cast<uint32_t>(*limit);
  }
  f.newest_first = true;  // the newest `limit` records, returned oldest first
  auto records = cp.store().QueryAudit(f);
  if (!records.ok()) return SendError(res, records.error());
  nlohmann::json out = nlohmann::json::array();
  for (auto it = records->rbegin(); it != records->rend(); ++it) out.push_back(AuditJson(*it));
  SendJson(res, 200, {{"records", out}});
}

}  // namespace

void RegisterOpsRoutes(httplib::Server& s, ControlPlane& cp, Logger& log) {
  const core::TrustDomain& td = cp.trust_domain();
  s.Post("/api/v1/tokens",
         Guarded(td, true,
                 [&cp, &log](const httplib::Request& req, httplib::Response& res, const Caller& c) {
                   CreateToken(cp, log, req, res, c);
                 }));
  s.Get("/api/v1/nodes",
        Guarded(td, false, [&cp](const httplib::Request&, httplib::Response& res, const Caller&) {
          auto nodes = cp.store().ListNodes();
          if (!nodes.ok()) return SendError(res, nodes.error());
          nlohmann::json out = nlohmann::json::array();
          for (const auto& n : *nodes) out.push_back(NodeJson(n));
          SendJson(res, 200, {{"nodes", out}});
        }));
  s.Get("/api/v1/audit", Guarded(td, false,
                                 [&cp](const httplib::Request& req, httplib::Response& res,
                                       const Caller&) { QueryAudit(cp, req, res); }));
  s.Get("/api/v1/audit/verify",
        Guarded(td, false, [&cp](const httplib::Request&, httplib::Response& res, const Caller&) {
          auto report = cp.store().VerifyAudit();
          if (!report.ok()) return SendError(res, report.error());
          nlohmann::json j = {{"ok", report->ok}, {"recordsChecked", report->records_checked}};
          if (report->first_bad_seq) j["firstBadSeq"] = *report->first_bad_seq;
          if (!report->reason.empty()) j["reason"] = report->reason;
          SendJson(res, 200, j);
        }));
}

}  // namespace sigil::server::admin
