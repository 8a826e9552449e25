// `sigil ca rotate [--activate-after DURATION] [--force]`, `sigil ca status [--json]`: admin API
// clients of /api/v1/ca (src/server/admin_ca.cc). docs/operations.md, "CA rotation".
#include <iostream>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/admin_client.h"
#include "cli/commands.h"
#include "common/duration.h"
#include "server/control_plane.h"

namespace sigil::cli {

namespace {

std::string Str(const nlohmann::json& j, const char* key) { return JsonField(j, key, "-"); }

void PrintGenerations(const nlohmann::json& status) {
  std::cout << "ROLE\tCA SHA-256\tNOT BEFORE\tNOT AFTER\tACTIVATES\tX509 ISSUED UNTIL\t"
               "JWT ISSUED UNTIL\tLEAVES BUNDLE\n";
  auto gens = status.find("generations");
  if (gens == status.end() || !gens->is_array()) return;
  for (const auto& g : *gens) {
    if (!g.is_object()) continue;
    std::string activates = Str(g, "activateAt");
    if (activates != "-") {
      activates += g.value("activationScheduled", false) ? " (ca rotate)" : " (schedule)";
    }
    std::cout << Str(g, "role") << "\t" << Str(g, "caSha256") << "\t" << Str(g, "notBefore") << "\t"
              << Str(g, "notAfter") << "\t" << activates << "\t" << Str(g, "x509IssuedUntil")
              << "\t" << Str(g, "jwtIssuedUntil") << "\t" << Str(g, "leavesBundleAt") << "\n";
  }
}

int Rotate(std::span<const std::string> args) {
  AdminEndpoint ep;
  Seconds activate_after = server::kDefaultCaActivateAfter;
  bool force = false, json = false;
  FlagSet flags(
      "ca rotate [--activate-after DURATION] [--force] [--json] [--server URL] "
      "[--credentials DIR]",
      "Prepare a new CA and publish it in the trust bundle now; it starts signing after "
      "--activate-after (the propagation delay). The old CA stays in the bundle until every "
      "certificate it signed has expired. Refused while a rotation is pending, unless --force, "
      "which reschedules the pending activation.");
  flags.Duration("activate-after", &activate_after,
                 "propagation delay before the new CA signs (0s: on the server's next tick)");
  flags.Bool("force", &force, "reschedule a pending rotation's activation instead of refusing");
  flags.Bool("json", &json, "print JSON");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  nlohmann::json body = {{"activateAfter", activate_after.count()}, {"force", force}};
  auto j = AdminCall("ca rotate", ep, "POST", "/api/v1/ca/rotate", body.dump());
  if (!j) return kExitFailure;
  if (json) {
    std::cout << j->dump(2) << "\n";
    return kExitOk;
  }
  const nlohmann::json prepared = j->value("prepared", nlohmann::json::object());
  std::cout << "prepared CA " << Str(prepared, "caSha256") << " (in the trust bundle now)\n"
            << "activates at " << Str(prepared, "activateAt") << "\n"
            << "the CA it replaces leaves the bundle once every certificate it signed has "
               "expired; follow with `sigil ca status`\n\n";
  PrintGenerations(j->value("status", nlohmann::json::object()));
  return kExitOk;
}

int Status(std::span<const std::string> args) {
  AdminEndpoint ep;
  bool json = false;
  FlagSet flags("ca status [--json] [--server URL] [--credentials DIR]",
                "Show every CA generation: prepared (published, not signing yet), active, "
                "retiring (no longer signing, in the bundle until what it signed expired).");
  flags.Bool("json", &json, "print JSON");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto j = AdminCall("ca status", ep, "GET", "/api/v1/ca", "");
  if (!j) return kExitFailure;
  if (json) {
    std::cout << j->dump(2) << "\n";
    return kExitOk;
  }
  std::cout << "now " << Str(*j, "now") << ", bundle sequence " << Str(*j, "bundleSequence")
            << "\n";
  PrintGenerations(*j);
  return kExitOk;
}

}  // namespace

int RunCa(std::span<const std::string> args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    (args.empty() ? std::cerr : std::cout)
        << "Usage: sigil ca rotate|status [flags]\n\n"
           "  rotate   prepare a new CA, publish it, activate it after a propagation delay\n"
           "  status   the CA generations and when each activates or leaves the bundle\n\n"
           "Run 'sigil ca rotate --help' for details.\n";
    return args.empty() ? kExitUsage : kExitOk;
  }
  if (args[0] == "rotate") return Rotate(args.subspan(1));
  if (args[0] == "status") return Status(args.subspan(1));
  std::cerr << "sigil ca: unknown subcommand \"" << args[0] << "\" (try rotate or status)\n";
  return kExitUsage;
}

}  // namespace sigil::cli
