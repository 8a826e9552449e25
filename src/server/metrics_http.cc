#include "server/metrics_http.h"

#include <httplib.h>
#include <sys/socket.h>

#include <thread>

namespace sigil::server {

struct MetricsServer::Impl {
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  int port = 0;
  bool stopped = false;
};

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsServer::~MetricsServer() { Stop(); }
int MetricsServer::port() const { return impl_->port; }

void MetricsServer::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->server->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const metrics::Registry& registry,
                                                            Logger& log, const std::string& host,
                                                            int port) {
  auto impl = std::make_unique<Impl>();
  impl->server = std::make_unique<httplib::Server>();
  httplib::Server& s = *impl->server;
  s.set_read_timeout(10);
  s.set_write_timeout(10);
  s.set_keep_alive_timeout(2);
  s.set_payload_max_length(4096);
  // httplib's default also sets SO_REUSEPORT, which would let a second process share the
  // port (and half the scrapes). SO_REUSEADDR only.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  s.Get("/metrics", [&registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry.Render(), std::string(metrics::kContentType));
  });
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) res.set_content("not found\n", "text/plain");
  });
  s.set_exception_handler(
      [&log](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        log.Error("metrics.exception");
        res.status = 500;
        res.set_content("internal error\n", "text/plain");
      });
  if (port == 0) {
    impl->port = s.bind_to_any_port(host);
    if (impl->port <= 0) return Unavailable("metrics: cannot bind " + host + ":0");
  } else {
    if (!s.bind_to_port(host, port)) {
      return Unavailable("metrics: cannot bind " + host + ":" + std::to_string(port));
    }
    impl->port = port;
  }
  httplib::Server* raw = impl->server.get();
  impl->thread = std::thread([raw] { raw->listen_after_bind(); });
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

}  // namespace sigil::server
