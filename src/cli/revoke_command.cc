// `sigil revoke node|identity|svid|binding TARGET --reason TEXT`, `sigil revoke list`,
// `sigil revoke lift identity|svid|binding TARGET --reason TEXT`: admin API clients of
// /api/v1/revocations (src/server/admin_revocations.cc).
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/admin_client.h"
#include "cli/commands.h"
#include "common/clock.h"
#include "common/duration.h"

namespace sigil::cli {

namespace {

constexpr std::string_view kRevocationsPath = "/api/v1/revocations";

std::string Str(const nlohmann::json& j, const char* key) { return JsonField(j, key); }

std::string TimeOf(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return "-";
  return FormatRfc3339(FromUnixSeconds(it->get<int64_t>()));
}

int Usage(const FlagSet& flags, const std::string& message) {
  std::cerr << "sigil: " << message << "\n\n" << flags.Help();
  return kExitUsage;
}

bool KnownKind(std::string_view kind, bool lift) {
  for (std::string_view k : {"node", "identity", "svid", "binding"}) {
    if (kind == k) return !(lift && k == "node");
  }
  return false;
}

// `revoke KIND TARGET --reason TEXT` and `revoke lift KIND TARGET --reason TEXT`.
int RevokeOrLift(std::span<const std::string> args, bool lift) {
  AdminEndpoint ep;
  std::string reason;
  std::vector<std::string> pos;
  const std::string cmd = lift ? "revoke lift" : "revoke";
  FlagSet flags(
      lift ? "revoke lift identity|svid|binding TARGET --reason TEXT [--server URL] "
             "[--credentials DIR]"
           : "revoke node|identity|svid|binding TARGET --reason TEXT [--server URL] "
             "[--credentials DIR]",
      lift ? "Lift a revocation: the identity may get SVIDs again, the binding grants credentials "
             "again, the certificate is accepted again (until it expires). Agents learn it over "
             "Sync. A node revocation cannot be lifted: join the machine under a new node name. "
             "Audited as revoke.lift."
           : "Revoke a node (its node SVID and every SVID issued to it that may still be valid; "
             "it cannot join again under this name), a workload identity (SPIFFE ID: no SVID, "
             "JWT or credential for it until lifted), one certificate (svid SERIAL, lowercase "
             "or uppercase hex as `openssl x509 -serial` prints it) or a CredentialBinding. The "
             "server refuses at once; agents learn it over Sync and close connections that use "
             "a revoked certificate. Audited as revoke.<kind>; revoking again updates the "
             "reason.");
  flags.String("reason", &reason, "why: recorded in the audit trail and shown to agents", true);
  flags.Positional(lift ? "identity|svid|binding TARGET" : "node|identity|svid|binding TARGET",
                   &pos, "what to revoke: node name, SPIFFE ID, certificate serial or binding");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (pos.size() != 2) {
    return Usage(flags, "sigil " + cmd + ": want KIND and TARGET, got " +
                            std::to_string(pos.size()) + " arguments");
  }
  const std::string& kind = pos[0];
  const std::string& target = pos[1];
  if (!KnownKind(kind, lift)) {
    if (lift && kind == "node") {
      std::cerr << "sigil revoke lift: a revoked node stays revoked; join the machine under a "
                   "new node name\n";
      return kExitFailure;
    }
    return Usage(
        flags, "sigil " + cmd + ": unknown kind \"" + kind + "\" (" +
                   (lift ? "identity, svid or binding" : "node, identity, svid or binding") + ")");
  }
  nlohmann::json body = {{"kind", kind}, {"target", target}, {"reason", reason}};
  std::string path(kRevocationsPath);
  if (lift) path += "/lift";
  auto j = AdminCall(cmd, ep, "POST", path,
                     body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  if (!j) return kExitFailure;
  if (lift) {
    std::cout << "lifted the revocation of " << Str(*j, "kind") << " " << Str(*j, "target")
              << " (reason: " << reason << "); agents are told over Sync\n";
    return kExitOk;
  }
  std::cout << "revoked " << Str(*j, "kind") << " " << Str(*j, "target")
            << " (reason: " << Str(*j, "reason") << ") at " << TimeOf(*j, "revokedAt");
  if (Str(*j, "kind") == "node") {
    auto serials = j->find("serials");
    size_t n = serials != j->end() && serials->is_array() ? serials->size() : 0;
    std::cout << " with " << n << " certificate" << (n == 1 ? "" : "s");
  }
  std::cout << "; agents are told over Sync\n";
  return kExitOk;
}

int List(std::span<const std::string> args) {
  AdminEndpoint ep;
  bool json = false;
  FlagSet flags("revoke list [--json] [--server URL] [--credentials DIR]",
                "List what is revoked: kind, target, when, by whom, why. --json prints every "
                "field, with the certificate serials and SPIFFE IDs each revocation covers.");
  flags.Bool("json", &json, "print JSON");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto j = AdminCall("revoke list", ep, "GET", std::string(kRevocationsPath), "");
  if (!j) return kExitFailure;
  const nlohmann::json items = j->value("items", nlohmann::json::array());
  if (json) {
    std::cout << items.dump(2) << "\n";
    return kExitOk;
  }
  std::cout << "KIND\tTARGET\tREVOKED-AT\tBY\tREASON\n";
  for (const auto& r : items) {
    std::cout << Str(r, "kind") << "\t" << Str(r, "target") << "\t" << TimeOf(r, "revokedAt")
              << "\t" << Str(r, "revokedBy") << "\t" << Str(r, "reason") << "\n";
  }
  return kExitOk;
}

void PrintUsage(std::ostream& os) {
  os << "Usage: sigil revoke node|identity|svid|binding TARGET --reason TEXT\n"
        "       sigil revoke list [--json]\n"
        "       sigil revoke lift identity|svid|binding TARGET --reason TEXT\n\n"
        "Run 'sigil revoke node --help', 'sigil revoke list --help' or 'sigil revoke lift "
        "--help' for details.\n";
}

}  // namespace

int RunRevoke(std::span<const std::string> args) {
  if (args.empty()) {
    PrintUsage(std::cerr);
    return kExitUsage;
  }
  if (args[0] == "-h" || args[0] == "--help") {
    PrintUsage(std::cout);
    return kExitOk;
  }
  if (args[0] == "list") return List(args.subspan(1));
  if (args[0] == "lift") return RevokeOrLift(args.subspan(1), /*lift=*/true);
  return RevokeOrLift(args, /*lift=*/false);
}

}  // namespace sigil::cli
