#include "agent/workloadapi/workload_api_server.h"

#include <utility>

namespace sigil::agent::workloadapi {

WorkloadApiServer::WorkloadApiServer(std::string socket_path, WorkloadSource& source,
                                     attest::Attestor& attestor, ServerOptions options)
    : socket_path_(std::move(socket_path)), options_(std::move(options)) {
  PeerLookup lookup = [this](const grpc::ServerContext& context) -> std::optional<peer::PeerInfo> {
    const peer::PeerListener* listener = WaitForListener();
    if (listener == nullptr) return std::nullopt;
    return listener->PeerOf(context);
  };
  service_ = std::make_unique<WorkloadApiService>(source, lookup, attestor, options_.service);
  info_ = std::make_unique<WorkloadIdentityInfoService>(source, lookup, attestor,
                                                        options_.service.caller);
}

Result<std::unique_ptr<WorkloadApiServer>> WorkloadApiServer::Start(const std::string& socket_path,
                                                                    WorkloadSource& source,
                                                                    attest::Attestor& attestor,
                                                                    ServerOptions options) {
  std::unique_ptr<WorkloadApiServer> server(
      new WorkloadApiServer(socket_path, source, attestor, std::move(options)));

  grpc::ServerBuilder builder;  // no listening port: connections come from the PeerListener
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->info_.get());
  if (server->options_.max_threads > 0) {
    grpc::ResourceQuota quota("sigil-workload-api");
    quota.SetMaxThreads(server->options_.max_threads);
    builder.SetResourceQuota(quota);
  }
  server->server_ = builder.BuildAndStart();
  if (!server->server_) {
    std::lock_guard lock(server->mu_);
    server->start_done_ = true;
    return Internal("workload api: gRPC server failed to start");
  }

  auto listener =
      peer::PeerListener::Listen(socket_path, server->server_.get(), server->options_.listen);
  if (!listener.ok()) {
    {
      std::lock_guard lock(server->mu_);
      server->start_done_ = true;
    }
    server->published_cv_.notify_all();
    return std::move(listener).error().WithContext("workload api");
  }
  server->listener_ = std::move(listener).value();
  {
    std::lock_guard lock(server->mu_);
    server->published_ = server->listener_.get();
    server->start_done_ = true;
  }
  server->published_cv_.notify_all();
  return server;
}

WorkloadApiServer::~WorkloadApiServer() { Stop(); }

const peer::PeerListener* WorkloadApiServer::WaitForListener() const {
  std::unique_lock lock(mu_);
  published_cv_.wait(lock, [&] { return start_done_; });
  return published_;
}

void WorkloadApiServer::Stop() {
  std::call_once(stop_once_, [&] {
    service_->BeginShutdown();
    info_->BeginShutdown();
    if (listener_) listener_->Stop();
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() + options_.shutdown_grace);
      server_->Wait();
    }
    // The listener outlives every handler (PeerOf is used from handlers): destroyed only now.
    {
      std::lock_guard lock(mu_);
      published_ = nullptr;
    }
    listener_.reset();
  });
}

peer::PeerListener::Stats WorkloadApiServer::listener_stats() const {
  std::lock_guard lock(mu_);
  return published_ != nullptr ? published_->GetStats() : peer::PeerListener::Stats{};
}

}  // namespace sigil::agent::workloadapi
