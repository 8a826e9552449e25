// WorkloadApiServer: the Workload API endpoint as one object: a grpc::Server with no listening
// port serving WorkloadApiService and WorkloadIdentityInfoService, fed connections by a
// PeerListener on a Unix socket (peer_listener.h records each connection's credentials and
// pidfd; the services attest callers through them).
//
// Start(socket_path, source, attestor):
//   - builds and starts the server (no ports; at most `max_threads` handler threads: beyond that
//     gRPC refuses calls with RESOURCE_EXHAUSTED, so a local client cannot exhaust the agent
//     with open streams);
//   - listens on `socket_path` (absolute; socket mode `listen.mode`, default 0666 so workloads
//     of every uid can connect; missing parent directories are created 0755, existing ones are
//     left alone; a stale socket is replaced, a live one is AlreadyExists: socket_path.h).
//   Errors: those of PeerListener::Listen, or Internal if gRPC cannot start.
// Stop(): no new connections (socket file unlinked), every stream told to end
//   (BeginShutdown), grpc::Server::Shutdown with `shutdown_grace` after which open calls are
//   cancelled, then Wait. Streams end within ServiceOptions::stream_poll, so Stop returns within
//   about max(shutdown_grace, stream_poll) unless a source call is blocked (at most
//   kIssueTimeout). Idempotent; the destructor calls it.
// Thread-safety: Stop may be called from any thread, once or many times.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "agent/attest/attest.h"
#include "agent/peer/peer_listener.h"
#include "agent/workloadapi/identity_info.h"
#include "agent/workloadapi/workload_api.h"
#include "agent/workloadapi/workload_source.h"
#include "common/result.h"

namespace sigil::agent::workloadapi {

struct ServerOptions {
  ServiceOptions service;
  peer::ListenOptions listen;  // mode 0666 by default
  int max_threads = 1024;      // gRPC sync handler threads (each open stream holds one)
  std::chrono::milliseconds shutdown_grace{100};
};

class WorkloadApiServer {
 public:
  // `source` and `attestor` are borrowed and must outlive the server.
  static Result<std::unique_ptr<WorkloadApiServer>> Start(const std::string& socket_path,
                                                          WorkloadSource& source,
                                                          attest::Attestor& attestor,
                                                          ServerOptions options = {});
  ~WorkloadApiServer();
  WorkloadApiServer(const WorkloadApiServer&) = delete;
  WorkloadApiServer& operator=(const WorkloadApiServer&) = delete;

  void Stop();

  const std::string& socket_path() const { return socket_path_; }
  peer::PeerListener::Stats listener_stats() const;

 private:
  WorkloadApiServer(std::string socket_path, WorkloadSource& source, attest::Attestor& attestor,
                    ServerOptions options);
  // The listener once Start has published it. A call can only arrive through the listener, but
  // its accept thread runs before Listen() returns: a handler that races Start waits here.
  const peer::PeerListener* WaitForListener() const;

  const std::string socket_path_;
  const ServerOptions options_;
  std::unique_ptr<WorkloadApiService> service_;
  std::unique_ptr<WorkloadIdentityInfoService> info_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<peer::PeerListener> listener_;

  mutable std::mutex mu_;
  mutable std::condition_variable published_cv_;
  const peer::PeerListener* published_ = nullptr;  // guarded by mu_
  bool start_done_ = false;                        // guarded by mu_ (published or failed)
  std::once_flag stop_once_;
};

}  // namespace sigil::agent::workloadapi
