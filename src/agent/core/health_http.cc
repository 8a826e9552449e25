#include "agent/core/health_http.h"

#include <sys/socket.h>

#include <httplib.h>

#include <thread>

namespace sigil::agent {

struct HealthServer::Impl {
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  int port = 0;
  bool stopped = false;
};

HealthServer::HealthServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HealthServer::~HealthServer() { Stop(); }
int HealthServer::port() const { return impl_->port; }

void HealthServer::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->server->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<HealthServer>> HealthServer::Start(Agent& agent, const std::string& host,
                                                          int port) {
  auto impl = std::make_unique<Impl>();
  impl->server = std::make_unique<httplib::Server>();
  httplib::Server& s = *impl->server;
  s.set_read_timeout(5);
  s.set_write_timeout(5);
  s.Get("/healthz", [&agent](const httplib::Request&, httplib::Response& res) {
    AgentHealth h = agent.Health();
    const bool node_valid = Clock::System().Now() < h.node_svid_expiry;
    const bool ok = h.synced && node_valid;
    nlohmann::json body = {{"status", ok ? "ok" : "degraded"},
                           {"synced", h.synced},
                           {"revision", h.revision},
                           {"node", h.node_spiffe_id},
                           {"node_svid_valid", node_valid},
                           {"node_svid_expires", ToUnixSeconds(h.node_svid_expiry)},
                           {"svids_held", h.svids_held},
                           {"resources", h.resources}};
    if (!ok && !h.last_error.empty()) body["last_error"] = h.last_error;
    res.status = ok ? 200 : 503;
    res.set_content(body.dump() + "\n", "application/json");
  });
  s.Get("/metrics", [&agent](const httplib::Request&, httplib::Response& res) {
    AgentHealth h = agent.Health();
    std::string out;
    auto gauge = [&out](const char* name, const char* help, double value) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name +
             " " + std::to_string(value) + "\n";
    };
    gauge("sigil_agent_synced", "1 while the Sync stream with the server is open.",
          h.synced ? 1 : 0);
    gauge("sigil_agent_sync_revision", "Store revision of the agent's synced state.",
          static_cast<double>(h.revision));
    gauge("sigil_agent_svids_held", "Workload X.509-SVIDs the agent holds.",
          static_cast<double>(h.svids_held));
    gauge("sigil_agent_resources", "Resources received through Sync.",
          static_cast<double>(h.resources));
    gauge("sigil_agent_node_svid_expiry_seconds", "Expiry of the node SVID (unix seconds).",
          static_cast<double>(ToUnixSeconds(h.node_svid_expiry)));
    res.set_content(out, "text/plain; version=0.0.4");
  });
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  if (port == 0) {
    impl->port = s.bind_to_any_port(host);
    if (impl->port <= 0) return Unavailable("health: cannot bind " + host + ":0");
  } else {
    if (!s.bind_to_port(host, port)) {
      return Unavailable("health: cannot bind " + host + ":" + std::to_string(port));
    }
    impl->port = port;
  }
  httplib::Server* raw = impl->server.get();
  impl->thread = std::thread([raw] { raw->listen_after_bind(); });
  return std::unique_ptr<HealthServer>(new HealthServer(std::move(impl)));
}

}  // namespace sigil::agent
