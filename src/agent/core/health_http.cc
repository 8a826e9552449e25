#include "agent/core/health_http.h"

#include <nlohmann/json.hpp>

#include "agent/core/plain_http.h"

namespace sigil::agent {
namespace {

HttpReply Healthz(Agent& agent) {
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
                         {"resources", h.resources},
                         {"server", h.server},
                         {"server_failovers", h.server_failovers}};
  if (!ok && !h.last_error.empty()) body["last_error"] = h.last_error;
  return {ok ? 200 : 503, "application/json", body.dump() + "\n"};
}

HttpReply Metrics(Agent& agent) {
  AgentHealth h = agent.Health();
  std::string out;
  auto gauge = [&out](const char* name, const char* help, double value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name +
           " " + std::to_string(value) + "\n";
  };
  gauge("sigil_agent_synced", "1 while the Sync stream with the server is open.", h.synced ? 1 : 0);
  gauge("sigil_agent_sync_revision", "Store revision of the agent's synced state.",
        static_cast<double>(h.revision));
  gauge("sigil_agent_svids_held", "Workload X.509-SVIDs the agent holds.",
        static_cast<double>(h.svids_held));
  gauge("sigil_agent_resources", "Resources received through Sync.",
        static_cast<double>(h.resources));
  gauge("sigil_agent_node_svid_expiry_seconds", "Expiry of the node SVID (unix seconds).",
        static_cast<double>(ToUnixSeconds(h.node_svid_expiry)));
  // The address in use as a label (validated printable ASCII; \ and " escaped all the same).
  std::string address;
  for (char c : h.server) {
    if (c == '\\' || c == '"') address += '\\';
    address += c;
  }
  out +=
      "# HELP sigil_agent_server The server address the agent uses (one of --server).\n"
      "# TYPE sigil_agent_server gauge\n"
      "sigil_agent_server{address=\"" +
      address + "\"} 1\n";
  out +=
      "# HELP sigil_agent_server_failovers_total Moves to another server address.\n"
      "# TYPE sigil_agent_server_failovers_total counter\n"
      "sigil_agent_server_failovers_total " +
      std::to_string(h.server_failovers) + "\n";
  return {200, "text/plain; version=0.0.4", out};
}

}  // namespace

struct HealthServer::Impl {
  std::unique_ptr<PlainHttpServer> http;
};

HealthServer::HealthServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HealthServer::~HealthServer() { Stop(); }
int HealthServer::port() const { return impl_->http->port(); }
void HealthServer::Stop() { impl_->http->Stop(); }

Result<std::unique_ptr<HealthServer>> HealthServer::Start(
    Agent& agent, const std::string& host, int port, std::function<std::string()> extra_metrics) {
  auto impl = std::make_unique<Impl>();
  auto http = PlainHttpServer::Start(host, port, [&agent, extra_metrics](std::string_view path) {
    if (path == "/healthz") return Healthz(agent);
    if (path == "/metrics") {
      HttpReply r = Metrics(agent);
      if (extra_metrics) r.body += extra_metrics();
      return r;
    }
    return HttpReply{404, "text/plain", "not found: try /healthz or /metrics\n"};
  });
  if (!http.ok()) return http.error().WithContext("health");
  impl->http = std::move(*http);
  return std::unique_ptr<HealthServer>(new HealthServer(std::move(impl)));
}

}  // namespace sigil::agent
