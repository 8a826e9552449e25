// `sigil whoami`: asks the local agent (Workload API socket) what it attests about this process
// and which identities it would get, with the selectors that matched.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/workloadapi/explain_client.h"
#include "cli/commands.h"
#include "cli/flags.h"

namespace sigil::cli {

int RunWhoami(std::span<const std::string> args) {
  std::string socket, output = "text";
  Seconds wait{10};
  FlagSet flags("whoami [--socket PATH] [-o text|json] [--wait DURATION]",
                "Show the identities the local agent gives this process and why (which "
                "selectors matched). The socket defaults to $SPIFFE_ENDPOINT_SOCKET, else "
                "/run/sigil/agent.sock.");
  flags.String("socket", &socket, "Workload API socket");
  flags.String("output", &output, "text or json (default text)");
  flags.Duration("wait", &wait,
                 "how long to retry while the agent is unavailable: not started yet, or not "
                 "synced with the server since it started (0s: ask once)");
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (output != "text" && output != "json") {
    std::cerr << "sigil: --output: must be text or json\n";
    return kExitUsage;
  }
  if (socket.empty()) {
    const char* env = std::getenv("SPIFFE_ENDPOINT_SOCKET");
    socket = env != nullptr && *env != '\0' ? env : "/run/sigil/agent.sock";
  }
  if (socket.starts_with("unix://")) socket = "unix:" + socket.substr(7);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto r = agent::workloadapi::ExplainViaSocket(socket);
  for (bool told = false; !r.ok() && r.error().code() == ErrorCode::kUnavailable &&
                          std::chrono::steady_clock::now() < deadline;) {
    if (!told) {
      std::cerr << "sigil whoami: waiting for the agent: " << r.error().message() << "\n";
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    r = agent::workloadapi::ExplainViaSocket(socket);
  }
  if (!r.ok()) {
    std::cerr << "sigil whoami: " << r.error().message() << "\n";
    return kExitFailure;
  }
  if (output == "json") {
    nlohmann::json ids = nlohmann::json::array();
    for (const auto& id : r->identities) {
      ids.push_back({{"spiffe_id", id.spiffe_id},
                     {"workload_identity", id.workload_identity},
                     {"matched_selectors", id.selectors}});
    }
    nlohmann::json j = {{"pid", r->pid},
                        {"uid", r->uid},
                        {"gid", r->gid},
                        {"user", r->user},
                        {"group", r->group},
                        {"exe", r->exe_path},
                        {"exe_sha256", r->exe_sha256},
                        {"cgroup", r->cgroup},
                        {"container_id", r->container_id},
                        {"selectors", r->selectors},
                        {"identities", ids}};
    std::cout << j.dump(2) << "\n";
    return r->identities.empty() ? kExitFailure : kExitOk;
  }
  std::cout << "process   pid " << r->pid << ", uid " << r->uid << " (" << r->user << "), gid "
            << r->gid << " (" << r->group << ")\n"
            << "exe       " << r->exe_path << (r->exe_deleted ? " (deleted)" : "") << "\n"
            << "sha256    " << r->exe_sha256 << "\n"
            << "cgroup    " << r->cgroup << "\n";
  if (!r->container_id.empty()) std::cout << "container " << r->container_id << "\n";
  std::cout << "selectors";
  for (const auto& s : r->selectors) std::cout << "\n  " << s;
  std::cout << "\n";
  if (r->identities.empty()) {
    std::cout << "identities: none (no WorkloadIdentity matches these selectors on this node)\n";
    return kExitFailure;
  }
  std::cout << "identities\n";
  for (const auto& id : r->identities) {
    std::cout << "  " << id.spiffe_id << "\n    from WorkloadIdentity " << id.workload_identity
              << ", matched:";
    for (const auto& s : id.selectors) std::cout << " " << s;
    std::cout << "\n";
  }
  return kExitOk;
}

}  // namespace sigil::cli
