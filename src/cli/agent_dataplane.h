// The agent's data plane wiring: mounts/finds cgroup2, loads the interception (eBPF programs,
// or the nftables fallback) onto the managed tree (<cgroup2>/sigil), starts the proxy with
// the agent as its ProxyHost.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agent/attest/attest.h"
#include "agent/core/agent.h"
#include "common/log.h"
#include "common/result.h"

namespace sigil::cli {

struct DataplaneFlags {
  std::string cgroup_root = "/run/sigil/cgroup2";  // where cgroup2 is mounted if it is not yet
  std::string managed = "sigil";                   // the managed tree: <cgroup2 mount>/<managed>
  std::string outbound = "127.0.0.1:15001";
  std::string outbound_v6 = "[::1]:15001";
  std::string inbound = "0.0.0.0:15008";
  std::string default_mode = "passthrough";  // for destinations no Service covers
  bool intercept_loopback = false;
  std::string intercept = "auto";  // auto (BPF, else nftables), bpf, nftables
  bool no_enforce = false;
  bool no_pool = false;          // one sigil/1 handshake per connection instead of pooled sigil/2
  std::string pool_idle = "60";  // seconds an unused pooled connection stays open
  std::string loops = "0";       // event loops; 0: one per core
  std::vector<std::string> extra_cgroups;  // existing cgroup2 directories to manage too
  // TLS interception (inject Services with spec.inject.terminateTls): where the node-local
  // CA's certificate and the workload bundle go (`sigil run --inject-ca-dir` reads them).
  std::string inject_ca_dir = "/run/sigil";
};

class Dataplane {
 public:
  virtual ~Dataplane() = default;
  virtual void Stop() = 0;
  virtual std::string managed_root() const = 0;  // <cgroup2>/sigil
  virtual int inbound_port() const = 0;
  // Prometheus text: proxy and interception counters.
  virtual std::string Metrics() const = 0;
};

Result<std::unique_ptr<Dataplane>> StartDataplane(const DataplaneFlags& flags, agent::Agent& agent,
                                                  agent::attest::Attestor& attestor, Logger& log);

// The managed tree `sigil run` and the agent agree on: <cgroup2 mount>/<managed> (created).
Result<std::string> ManagedCgroupRoot(const std::string& cgroup_root, const std::string& managed);

}  // namespace sigil::cli
