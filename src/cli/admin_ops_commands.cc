// `sigil token create`, `sigil node list`, `sigil audit [verify]`: admin API clients.
#include <httplib.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/admin_client.h"
#include "cli/commands.h"
#include "common/duration.h"

namespace sigil::cli {

namespace {

std::string Str(const nlohmann::json& j, const char* key) { return JsonField(j, key); }

int TokenCreate(std::span<const std::string> args) {
  AdminEndpoint ep;
  std::string node;
  Seconds ttl{3600};
  FlagSet flags("token create --node NAME [--ttl 1h] [--server URL] [--credentials DIR]",
                "Create a single-use join token for a node. Printed once; the server keeps "
                "only its hash.");
  flags.String("node", &node, "node name the token admits", true);
  flags.Duration("ttl", &ttl, "token lifetime (default 1h, at most 7d)");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  nlohmann::json body = {{"node", node}, {"ttl", ttl.count()}};
  auto j = AdminCall("token create", ep, "POST", "/api/v1/tokens", body.dump());
  if (!j) return kExitFailure;
  std::cout << Str(*j, "token") << "\n";
  std::cerr << "token " << Str(*j, "id") << " for node " << Str(*j, "node") << " expires "
            << Str(*j, "expires") << "\n";
  return kExitOk;
}

int NodeList(std::span<const std::string> args) {
  AdminEndpoint ep;
  bool json = false;
  FlagSet flags("node list [--json] [--server URL] [--credentials DIR]", "List joined nodes.");
  flags.Bool("json", &json, "print JSON");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto j = AdminCall("node list", ep, "GET", "/api/v1/nodes", "");
  if (!j) return kExitFailure;
  if (json) {
    std::cout << (*j)["nodes"].dump(2) << "\n";
    return kExitOk;
  }
  std::cout << "NAME\tSPIFFE ID\tSVID EXPIRY\tLAST SEEN\tREVOKED\n";
  for (const auto& n : (*j)["nodes"]) {
    std::cout << Str(n, "name") << "\t" << Str(n, "spiffeId") << "\t" << Str(n, "svidExpiry")
              << "\t" << Str(n, "lastSeen") << "\t" << Str(n, "revoked") << "\n";
  }
  return kExitOk;
}

int AuditVerify(std::span<const std::string> args) {
  AdminEndpoint ep;
  FlagSet flags("audit verify [--server URL] [--credentials DIR]",
                "Walk the audit hash chain; exit 1 and name the first bad record if broken.");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto j = AdminCall("audit verify", ep, "GET", "/api/v1/audit/verify", "");
  if (!j) return kExitFailure;
  if (j->value("ok", false)) {
    std::cout << "audit chain ok: " << Str(*j, "recordsChecked") << " records\n";
    return kExitOk;
  }
  std::cout << "audit chain BROKEN at seq " << Str(*j, "firstBadSeq") << ": " << Str(*j, "reason")
            << "\n";
  return kExitFailure;
}

// Where a credential was used, from an injection record's details: "METHOD host/path".
std::string Endpoint(const nlohmann::json& details) {
  std::string host = Str(details, "host");
  if (host.empty()) return "";
  std::string method = Str(details, "method");
  return (method.empty() ? "" : method + " ") + host + Str(details, "path");
}

// "2026-12-05T13:42:03.123Z" for a Unix time in milliseconds.
std::string Rfc3339Millis(int64_t ms) {
  std::string s = FormatRfc3339(TimePoint(std::chrono::milliseconds(ms)));
  char frac[8];
  std::snprintf(frac, sizeof frac, ".%03d", static_cast<int>(ms % 1000));
  s.insert(s.size() - 1, frac);
  return s;
}

// `sigil audit --binding NAME`: who used the binding's credential, when, against what. A
// dataplane.inject record holds a connection's batch of requests: one line per request, at the
// time the agent forwarded it.
void PrintBindingRecords(const nlohmann::json& records) {
  auto cell = [](std::string v) { return v.empty() ? std::string("-") : v; };
  std::cout << "TIME\tTYPE\tNODE\tPID\tEXE\tIDENTITY\tENDPOINT\tDETAIL\n";
  for (const auto& r : records) {
    nlohmann::json details = r.value("details", nlohmann::json::object());
    if (!details.is_object()) details = nlohmann::json::object();
    if (const auto it = details.find("requests"); it != details.end() && it->is_array()) {
      for (const auto& req : *it) {
        if (!req.is_object()) continue;
        const auto ms = req.value("time_unix_ms", int64_t{0});
        const std::string when = ms > 0 ? Rfc3339Millis(ms) : Str(r, "time");
        std::cout << when << "\t" << Str(r, "type") << "\t" << cell(Str(r, "node")) << "\t"
                  << cell(Str(r, "pid")) << "\t" << cell(Str(r, "exe")) << "\t"
                  << cell(Str(r, "identity")) << "\t" << cell(Endpoint(req)) << "\t-\n";
      }
      continue;
    }
    std::string detail = Str(details, "reason");
    if (detail.empty() && !Str(details, "source").empty()) {
      detail = "source=" + Str(details, "source");
      if (details.contains("token_cached"))
        detail += " token_cached=" + Str(details, "token_cached");
    }
    if (!Str(details, "status").empty()) {
      detail += (detail.empty() ? "" : " ") + std::string("status=") + Str(details, "status");
    }
    std::cout << Str(r, "time") << "\t" << Str(r, "type") << "\t" << cell(Str(r, "node")) << "\t"
              << cell(Str(r, "pid")) << "\t" << cell(Str(r, "exe")) << "\t"
              << cell(Str(r, "identity")) << "\t" << cell(Endpoint(details)) << "\t" << cell(detail)
              << "\n";
  }
}

int Audit(std::span<const std::string> args) {
  if (!args.empty() && args[0] == "verify") return AuditVerify(args.subspan(1));
  AdminEndpoint ep;
  std::string since, identity, node, pid, type, binding, limit;
  bool json = false;
  FlagSet flags(
      "audit [verify] [--since RFC3339|DURATION] [--identity ID] [--node NAME] "
      "[--pid PID] [--type TYPE] [--binding NAME] [--limit N] [--json] [--server URL] "
      "[--credentials DIR]",
      "Show audit records (the newest --limit, oldest first). `sigil audit verify` "
      "checks the hash chain. With --binding, the records of one CredentialBinding (grants, "
      "denials, injections) as a table: time, type, node, pid, exe, identity, endpoint.");
  flags.String("since", &since, "RFC 3339 time, or a duration back from now (e.g. 1h)");
  flags.String("identity", &identity, "SPIFFE ID");
  flags.String("node", &node, "node name");
  flags.String("pid", &pid, "process id");
  flags.String("type", &type, "record type, e.g. token.create");
  flags.String("binding", &binding,
               "CredentialBinding name: records whose details name it (credential.grant, "
               "credential.denied, dataplane.inject)");
  flags.String("limit", &limit, "at most this many records (default 1000)");
  flags.Bool("json", &json, "print JSON");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (!since.empty()) {
    if (auto d = ParseDuration(since); d.ok()) since = FormatRfc3339(Clock::System().Now() - *d);
  }
  httplib::Params params;
  for (auto [k, v] : {std::pair{"since", &since}, std::pair{"identity", &identity},
                      std::pair{"node", &node}, std::pair{"pid", &pid}, std::pair{"type", &type},
                      std::pair{"binding", &binding}, std::pair{"limit", &limit}}) {
    if (!v->empty()) params.emplace(k, *v);
  }
  std::string path = "/api/v1/audit";
  if (!params.empty()) path += "?" + httplib::detail::params_to_query_str(params);
  auto j = AdminCall("audit", ep, "GET", path, "");
  if (!j) return kExitFailure;
  if (json) {
    std::cout << (*j)["records"].dump(2) << "\n";
    return kExitOk;
  }
  if (!binding.empty()) {
    PrintBindingRecords((*j)["records"]);
    return kExitOk;
  }
  for (const auto& r : (*j)["records"]) {
    std::cout << Str(r, "seq") << "\t" << Str(r, "time") << "\t" << Str(r, "type") << "\t"
              << "actor=" << Str(r, "actor");
    for (const char* key : {"node", "identity", "pid", "exe"}) {
      std::string v = Str(r, key);
      if (!v.empty()) std::cout << " " << key << "=" << v;
    }
    std::cout << " " << r.value("details", nlohmann::json::object()).dump() << "\n";
  }
  return kExitOk;
}

int Dispatch(std::string_view group, std::span<const std::string> args, std::string_view sub,
             int (*run)(std::span<const std::string>)) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    (args.empty() ? std::cerr : std::cout)
        << "Usage: sigil " << group << " " << sub << " [flags]\n\nRun 'sigil " << group << " "
        << sub << " --help' for details.\n";
    return args.empty() ? kExitUsage : kExitOk;
  }
  if (args[0] != sub) {
    std::cerr << "sigil " << group << ": unknown subcommand \"" << args[0] << "\" (try " << sub
              << ")\n";
    return kExitUsage;
  }
  return run(args.subspan(1));
}

}  // namespace

int RunToken(std::span<const std::string> args) {
  return Dispatch("token", args, "create", TokenCreate);
}
int RunNode(std::span<const std::string> args) { return Dispatch("node", args, "list", NodeList); }
int RunAudit(std::span<const std::string> args) { return Audit(args); }

}  // namespace sigil::cli
