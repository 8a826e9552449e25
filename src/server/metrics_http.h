// The /metrics endpoint: plain HTTP (cpp-httplib), GET /metrics only, Prometheus text format
// 0.0.4. Meant for a loopback or otherwise trusted network; it serves counts, never secrets.
#pragma once

#include <memory>
#include <string>

#include "common/result.h"
#include "server/log.h"
#include "server/metrics.h"

namespace sigil::server {

class MetricsServer {
 public:
  // Binds host:port (0 picks a free port) and serves on a background thread.
  static Result<std::unique_ptr<MetricsServer>> Start(const metrics::Registry& registry,
                                                      Logger& log, const std::string& host,
                                                      int port);
  ~MetricsServer();  // Stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const;
  void Stop();  // idempotent

  struct Impl;

 private:
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sigil::server
