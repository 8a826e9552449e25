// The agent's operator endpoint: plain HTTP on a loopback address (PlainHttpServer).
//   GET /healthz  200 {"status":"ok",...} while a Sync stream is open and the node SVID is
//                 valid; 503 with the same fields and the last error otherwise
//   GET /metrics  Prometheus text format 0.0.4: sync state and revision, SVIDs held, node SVID
//                 expiry, resources held, the server address in use and the failovers
//   Both name the server address in use ("server"; docs/agent.md, "Several server replicas").
// Counts and states only, never a secret.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "agent/core/agent.h"
#include "common/result.h"

namespace sigil::agent {

class HealthServer {
 public:
  // `extra_metrics`, when set, returns more Prometheus text appended to /metrics (the data
  // plane's counters).
  static Result<std::unique_ptr<HealthServer>> Start(
      Agent& agent, const std::string& host, int port,
      std::function<std::string()> extra_metrics = nullptr);
  ~HealthServer();
  HealthServer(const HealthServer&) = delete;
  HealthServer& operator=(const HealthServer&) = delete;
  int port() const;
  void Stop();

  struct Impl;

 private:
  explicit HealthServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sigil::agent
