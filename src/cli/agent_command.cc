// `sigil agent`: the node agent (src/agent/core/agent.h) serving the SPIFFE Workload API on a
// Unix socket, and `sigil whoami`, which asks the agent what the calling process would get.

#include <malloc.h>

#include <iostream>
#include <memory>

#include "agent/attest/attest.h"
#include "agent/core/agent.h"
#include "agent/core/health_http.h"
#include "agent/creds/creds_fs.h"
#include "agent/custody/harden.h"
#include "agent/workloadapi/workload_api_server.h"
#include "cli/agent_dataplane.h"
#include "cli/commands.h"
#include "cli/daemon.h"
#include "cli/flags.h"
#include "common/file_util.h"
#include "common/host_port.h"
#include "common/log.h"

namespace sigil::cli {
namespace {

constexpr size_t kMaxTokenFile = 4096;

struct AgentFlags {
  std::string server, join_token, join_token_file, node_name, ready_file;
  std::string data_dir = "/var/lib/sigil/agent";
  std::string socket = "/run/sigil/agent.sock";
  std::string health_listen = "127.0.0.1:8082";
  std::string log_format = "text";
  std::string creds_mount{agent::creds::kDefaultCredsMount};
  bool creds_mount_given = false;  // explicit --creds-mount: a mount failure is fatal
  bool dataplane = false;
  DataplaneFlags dp;
};

int ServeAgent(AgentFlags f, Logger& log) {
  auto fail = [&](std::string_view step, const Error& e) {
    log.Error("agent.fail", {{"step", step}, {"error", e.message()}});
    return kExitFailure;
  };
  // Before any key exists: non-dumpable, no core files, workload keys in the secure heap.
  if (auto r = agent::custody::HardenProcess({}); !r.ok()) return fail("harden", r.error());
  // gRPC's sync server runs each open Workload API stream on its own thread; with glibc's
  // default of 8 arenas per core, a burst of short-lived streams leaves memory spread over
  // many arenas that is never returned. Two arenas keep the agent's footprint near its live
  // data (docs/benchmarks.md, node agent memory).
  ::mallopt(M_ARENA_MAX, 2);
  if (!f.join_token_file.empty()) {
    auto text = ReadSecretFile(f.join_token_file, kMaxTokenFile);
    if (!text.ok()) return fail("join-token-file", text.error());
    std::string_view v = text->view();
    while (!v.empty() && (v.back() == '\n' || v.back() == '\r' || v.back() == ' ')) {
      v.remove_suffix(1);
    }
    f.join_token = std::string(v);
  }
  agent::AgentOptions options;
  if (!f.server.empty()) {
    auto servers = agent::ParseServerAddresses("--server", f.server);
    if (!servers.ok()) return fail("flags", servers.error());
    options.servers = std::move(servers).value();
  }
  options.data_dir = f.data_dir;
  options.join_token = f.join_token;
  options.node_name = f.node_name;
  auto started = agent::Agent::Start(std::move(options), log);
  if (!started.ok()) return fail("start", started.error());
  agent::Agent& core = **started;

  agent::attest::Attestor attestor;
  auto api = agent::workloadapi::WorkloadApiServer::Start(f.socket, core, attestor);
  if (!api.ok()) return fail("workload-api", api.error());
  log.Info("workloadapi.listen",
           {{"socket", f.socket}, {"SPIFFE_ENDPOINT_SOCKET", "unix://" + f.socket}});
  std::string ready = "socket=" + f.socket + "\n";

  // Credential files (docs/agent.md). At the default path a failure only disables them (a host
  // without /dev/fuse, another agent already serving the path); an explicit path must mount.
  std::unique_ptr<agent::creds::CredsFs> creds;
  if (!f.creds_mount.empty()) {
    auto c = agent::creds::CredsFs::Start({.mount_dir = f.creds_mount}, core, attestor, log);
    if (c.ok()) {
      creds = std::move(c).value();
      ready += "creds_mount=" + creds->mount_dir() + "\n";
    } else if (f.creds_mount_given) {
      return fail("creds-mount", c.error());
    } else {
      log.Warn("creds.disabled", {{"dir", f.creds_mount}, {"error", c.error().message()}});
    }
  }

  std::unique_ptr<Dataplane> dataplane;
  if (f.dataplane) {
    auto dp = StartDataplane(f.dp, core, attestor, log);
    if (!dp.ok()) return fail("dataplane", dp.error());
    dataplane = std::move(dp).value();
    ready += "managed_cgroups=" + dataplane->managed_root() + "\n";
    ready += "inbound_port=" + std::to_string(dataplane->inbound_port()) + "\n";
  }
  std::unique_ptr<agent::HealthServer> health;
  if (f.health_listen != "off") {
    auto addr = SplitHostPort("--health-listen", f.health_listen);
    if (!addr.ok()) return fail("flags", addr.error());
    std::function<std::string()> extra;
    if (dataplane) extra = [dp = dataplane.get()] { return dp->Metrics(); };
    auto h = agent::HealthServer::Start(core, addr->first, addr->second, extra);
    if (!h.ok()) return fail("health", h.error());
    health = std::move(h).value();
    ready += "health=" + addr->first + ":" + std::to_string(health->port()) + "\n";
    log.Info("health.listen", {{"host", addr->first}, {"port", health->port()}});
  }
  if (!f.ready_file.empty()) {
    if (auto r = WriteFileAtomic(f.ready_file, ready, 0644); !r.ok()) {
      return fail("ready-file", r.error());
    }
  }
  const std::string_view sig = WaitForTermination();
  log.Info("agent.shutdown", {{"signal", sig}});
  if (dataplane) dataplane->Stop();
  // Before the core: open requests may still ask the server.
  if (creds) creds->Stop();
  core.Stop();  // ends streams: the source reports ShuttingDown()
  (*api)->Stop();
  if (health) health->Stop();
  started->reset();
  log.Info("agent.stopped");
  return kExitOk;
}

}  // namespace

int RunAgent(std::span<const std::string> args) {
  AgentFlags f;
  FlagSet flags(
      "agent --server HOST:PORT[,HOST:PORT...] [--join-token TOKEN | --join-token-file FILE] "
      "[--data-dir DIR] "
      "[--socket PATH] [--node-name NAME] [--health-listen HOST:PORT] [--log-format text|json] "
      "[--ready-file PATH] [--creds-mount DIR] [--config FILE]",
      "Run the node agent: join the server once (join token), then restart from the stored node "
      "identity; serve the SPIFFE Workload API on a Unix socket (SPIFFE_ENDPOINT_SOCKET="
      "unix:///run/sigil/agent.sock).");
  flags.ConfigFile(
      "YAML file of flag values, e.g. `manage-cgroup: [/sys/fs/cgroup/system.slice/x.service]` "
      "(keys are the flag names without --; command-line flags win)");
  flags.String("server", &f.server,
               "agent API address of the server, or of several replicas as HOST:PORT,HOST:PORT,... "
               "(required on first start; given later, it replaces the stored addresses)");
  flags.String("join-token", &f.join_token, "join token (first start; see `sigil token create`)");
  flags.String("join-token-file", &f.join_token_file,
               "read the join token from this file instead (keeps it out of ps output)");
  flags.String("data-dir", &f.data_dir, "node state directory (default /var/lib/sigil/agent)");
  flags.String("socket", &f.socket, "Workload API socket (default /run/sigil/agent.sock)");
  flags.String("node-name", &f.node_name, "node name at join (default: the host name)");
  flags.String("health-listen", &f.health_listen,
               "/healthz and /metrics over plain HTTP (default 127.0.0.1:8082; \"off\" disables)");
  flags.String("log-format", &f.log_format, "text or json (default text)");
  flags.String("ready-file", &f.ready_file,
               "write \"socket=PATH\" and \"health=HOST:PORT\" here once serving");
  flags.String("creds-mount", &f.creds_mount,
               "read-only FUSE mount of `delivery: file` credentials, per calling process "
               "(\"\" disables; at the default path a mount failure only disables it)");
  flags.Bool("dataplane", &f.dataplane,
             "intercept TCP from managed cgroups (eBPF, or nftables where BPF is unavailable) and "
             "upgrade it to mTLS (docs/dataplane.md)");
  flags.String("cgroup-root", &f.dp.cgroup_root,
               "cgroup2 mount to use, mounted here if none is (default /run/sigil/cgroup2); "
               "managed cgroups live under <mount>/sigil");
  flags.String("managed-cgroup", &f.dp.managed,
               "name of the managed tree under the cgroup2 mount (default sigil); `sigil run` "
               "creates its cgroups there");
  flags.StringList("manage-cgroup", &f.dp.extra_cgroups,
                   "an existing cgroup2 directory (a systemd service, a container) whose "
                   "processes are intercepted too; repeatable");
  flags.String("outbound-listen", &f.dp.outbound,
               "where intercepted IPv4 connections are redirected (default 127.0.0.1:15001)");
  flags.String("outbound-listen-v6", &f.dp.outbound_v6,
               "same for IPv6 (default [::1]:15001; \"\" disables IPv6 interception)");
  flags.String("inbound-listen", &f.dp.inbound,
               "sigil/1 mTLS listener for other nodes' agents (default 0.0.0.0:15008)");
  flags.String("dataplane-default", &f.dp.default_mode,
               "destinations no Service covers: passthrough or deny (default passthrough)");
  flags.String("dataplane-loops", &f.dp.loops,
               "event loops (threads) relaying connections (default 0: one per core)");
  flags.Bool("no-enforce", &f.dp.no_enforce,
             "do not install the nftables rule that drops plaintext from other hosts to the "
             "ports of mutual Services this node serves");
  flags.String("intercept", &f.dp.intercept,
               "interception method: auto (eBPF if the programs load and attach, else the "
               "nftables fallback), bpf or nftables (default auto)");
  flags.Bool("no-pool", &f.dp.no_pool,
             "give every workload connection its own sigil/1 mTLS connection instead of a "
             "stream on a pooled sigil/2 connection per (identity, peer agent, port)");
  flags.String("pool-idle", &f.dp.pool_idle,
               "seconds a pooled connection with no stream stays open (default 60)");
  flags.Bool("intercept-loopback", &f.dp.intercept_loopback,
             "also intercept connections to 127.0.0.0/8 and ::1 (default off)");
  flags.String("inject-ca-dir", &f.dp.inject_ca_dir,
               "where the node-local CA of inject Services that terminate TLS is published "
               "(inject-ca.pem, inject-ca-bundle.pem; default /run/sigil); see `sigil run`");
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  for (const auto& a : args) {
    if (a == "--") break;
    if (a == "--creds-mount" || a.starts_with("--creds-mount=")) f.creds_mount_given = true;
  }
  std::optional<LogFormat> format = PrepareDaemon(f.log_format, flags);
  if (!format) return kExitUsage;
  Logger log(std::cerr, *format);
  return ServeAgent(std::move(f), log);
}

}  // namespace sigil::cli
