// Proxy lifecycle: listeners, event loops, worker pool, the inbound certificate refresher.
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "common/host_port.h"
#include "dataplane/proxy/proxy_impl.h"
#include "dataplane/proxy/svid_tls.h"
#include "dataplane/relay/ktls.h"

namespace sigil::dataplane {
namespace {

Result<OwnedFd> Listen(const std::string& what, const std::string& host_port,
                       sockaddr_storage* bound) {
  SIGIL_ASSIGN_OR_RETURN(auto hp, SplitHostPort(what, host_port));
  const auto& [host, port] = hp;
  // A numeric address (port 0: any free port); SplitHostPort already removed IPv6 brackets.
  Destination at;
  at.family = host.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  if (::inet_pton(at.family, host.c_str(), at.ip.data()) != 1) {
    return InvalidArgument(what + ": \"" + host + "\" is not a numeric IPv4 or IPv6 address");
  }
  at.port = static_cast<uint16_t>(port);
  const std::string text = at.str();
  sockaddr_storage addr = at.ToSockaddr();
  OwnedFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Internal(what + ": socket: " + std::strerror(errno));
  int yes = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  if (addr.ss_family == AF_INET6) {
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &yes, sizeof yes);
  }
  const socklen_t len = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    return Unavailable(what + ": bind " + text + ": " + std::strerror(errno));
  }
  if (::listen(fd.get(), 4096) != 0) {
    return Unavailable(what + ": listen " + text + ": " + std::strerror(errno));
  }
  socklen_t blen = sizeof *bound;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(bound), &blen);
  return fd;
}

}  // namespace

WorkerPool::WorkerPool(size_t n) {
  for (size_t i = 0; i < n; ++i) {
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> fn;
        {
          std::unique_lock lock(mu_);
          cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
          if (queue_.empty()) return;
          fn = std::move(queue_.front());
          queue_.pop_front();
        }
        fn();
      }
    });
  }
}

WorkerPool::~WorkerPool() { Stop(); }

void WorkerPool::Submit(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

void WorkerPool::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

std::string SvidKey(const agent::workloadapi::X509SvidGrant& grant) {
  // The serial too: an SVID reissued within the same second (after an svid revocation) has the
  // same expiry, and must not be served the revoked one's context.
  return grant.spiffe_id + "@" + std::to_string(ToUnixSeconds(grant.expires_at)) + "#" +
         (grant.chain.empty() ? std::string() : grant.chain.front().SerialHex());
}

void Proxy::Impl::Accept(int listener, bool inbound_side) {
  // Edge-triggered: drain until EAGAIN. A bounded batch per pass keeps loop 0 fair; the rest
  // is picked up by a pass posted behind the work just queued.
  for (int i = 0; i < 256; ++i) {
    OwnedFd fd(::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      // Out of descriptors or memory: the queued connections stay queued and no new edge
      // will come for them, so try again shortly.
      log.Warn("dataplane.accept.failed", {{"error", std::strerror(errno)}});
      loops->at(0).AddTimer(std::chrono::milliseconds(50),
                            [this, listener, inbound_side] { Accept(listener, inbound_side); });
      return;
    }
    // Both directions carry small messages (handshakes, the sigil/1 lines, request heads):
    // never let Nagle hold one back for a delayed ACK.
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (inbound_side ? counters.inbound_accepted : counters.outbound_accepted)++;
    EventLoop& loop = loops->Next();
    auto shared = std::make_shared<OwnedFd>(std::move(fd));
    if (inbound_side) {
      loop.Post([this, &loop, shared] { HandleInbound(loop, std::move(*shared)); });
    } else {
      loop.Post([this, &loop, shared] { HandleOutbound(loop, std::move(*shared)); });
    }
  }
  loops->at(0).Post([this, listener, inbound_side] { Accept(listener, inbound_side); });
}

void Proxy::Impl::SwitchRecordLayer(Endpoint& ep) {
  // Kernel TLS where the kernel has the tls ULP (the relay then splices), else our own record
  // layer, else OpenSSL keeps the connection.
  std::string why;
  switch (MoveRecordLayer(ep, KernelTlsAvailable(), &why)) {
    case RecordPath::kKernelTls:
      counters.records_ktls++;
      break;
    case RecordPath::kRecords:
      counters.records_switched++;
      break;
    case RecordPath::kOpenSsl:
      counters.records_kept_openssl++;
      break;
    case RecordPath::kFailed:  // the endpoint was reset; the relay reports the closed socket
      counters.records_kept_openssl++;
      log.Warn("dataplane.ktls.failed", {{"error", why}});
      break;
  }
}

void Proxy::Impl::StartTrackedRelay(EventLoop& loop, std::unique_ptr<Endpoint> a,
                                    std::unique_ptr<Endpoint> b, std::string a_to_b,
                                    std::string b_to_a, std::string what,
                                    std::optional<ConnCertificates> certs) {
  RelayOptions ro;
  ro.idle_timeout = options.idle_timeout;
  ro.initial_a_to_b = std::move(a_to_b);
  ro.initial_b_to_a = std::move(b_to_a);
  counters.active_relays++;
  const uint64_t tracked = certs ? TrackConn(std::move(*certs), what) : 0;
  auto handle = StartRelay(loop, std::move(a), std::move(b), std::move(ro),
                           [this, tracked, what = std::move(what)](const RelayStats& s) {
                             counters.active_relays--;
                             if (tracked != 0) UntrackConn(tracked);
                             if (!s.error.empty() && s.error != "aborted") {
                               log.Info("dataplane.relay.end", {{"conn", what},
                                                                {"sent", s.a_to_b_bytes},
                                                                {"received", s.b_to_a_bytes},
                                                                {"error", s.error}});
                             }
                           });
  if (tracked != 0) SetConnCloser(tracked, [handle] { handle->Abort(); });
}

Proxy::Proxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Proxy::~Proxy() { Stop(); }

void Proxy::RevocationsChanged() {
  {
    std::lock_guard lock(impl_->refresher_mu);
    impl_->revocations_pending = true;
  }
  impl_->refresher_cv.notify_all();
}

void Proxy::Stop() {
  if (!impl_) return;
  {
    std::lock_guard lock(impl_->refresher_mu);
    if (impl_->stopping) return;
    impl_->stopping = true;
  }
  impl_->refresher_cv.notify_all();
  if (impl_->refresher.joinable()) impl_->refresher.join();
  impl_->workers->Stop();
  impl_->loops->Stop();
  if (impl_->options.enforce) {
    if (auto r = impl_->enforcer.Clear(); !r.ok()) {
      impl_->log.Warn("dataplane.enforce.clear_failed", {{"error", r.error().message()}});
    }
  }
}

ProxyCounters Proxy::Counters() const {
  const auto& c = impl_->counters;
  ProxyCounters out;
  out.outbound_accepted = c.outbound_accepted;
  out.outbound_unattributed = c.outbound_unattributed;
  out.outbound_denied = c.outbound_denied;
  out.outbound_passthrough = c.outbound_passthrough;
  out.outbound_mutual = c.outbound_mutual;
  out.outbound_failed = c.outbound_failed;
  out.inbound_accepted = c.inbound_accepted;
  out.inbound_handshake_failed = c.inbound_handshake_failed;
  out.inbound_denied = c.inbound_denied;
  out.inbound_relayed = c.inbound_relayed;
  out.active_relays = c.active_relays;
  out.outbound_resumed = c.outbound_resumed;
  out.inbound_resumed = c.inbound_resumed;
  out.outbound_simple = c.outbound_simple;
  out.outbound_inject = c.outbound_inject;
  out.inject_requests = c.inject_requests;
  out.inject_refused = c.inject_refused;
  out.records_switched = c.records_switched;
  out.records_kept_openssl = c.records_kept_openssl;
  out.records_ktls = c.records_ktls;
  out.pool_connections = c.pool_connections;
  out.pool_streams = c.pool_streams;
  out.inbound_pooled = c.inbound_pooled;
  out.inbound_streams = c.inbound_streams;
  out.revoked_closed = c.revoked_closed;
  out.revoked_refused = c.revoked_refused;
  return out;
}

uint16_t Proxy::inbound_port() const { return impl_->inbound_port; }
sockaddr_in Proxy::outbound_v4() const { return impl_->outbound4_addr; }

Result<std::unique_ptr<Proxy>> Proxy::Start(ProxyOptions options, ProxyHost& host,
                                            Interceptor& interceptor, Logger& log) {
  auto impl = std::make_unique<Impl>(std::move(options), host, interceptor, log);
  Impl& s = *impl;
  s.lookup_blocks = std::string_view(interceptor.method()) == "nftables";
  sockaddr_storage bound{};
  SIGIL_ASSIGN_OR_RETURN(s.outbound4, Listen("outbound listener", s.options.outbound_v4, &bound));
  std::memcpy(&s.outbound4_addr, &bound, sizeof s.outbound4_addr);
  if (!s.options.outbound_v6.empty()) {
    SIGIL_ASSIGN_OR_RETURN(s.outbound6,
                           Listen("outbound listener (IPv6)", s.options.outbound_v6, &bound));
  }
  SIGIL_ASSIGN_OR_RETURN(s.inbound, Listen("inbound listener", s.options.inbound, &bound));
  s.inbound_port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  SIGIL_ASSIGN_OR_RETURN(s.inbound_base, MakeBaseServerContext());
  SSL_CTX_set_tlsext_servername_arg(s.inbound_base.get(), impl.get());
  // (The SSL_CTX_set_tlsext_servername_callback macro needs an old-style cast.)
  using ServerNameCb = int (*)(SSL*, int*, void*);
  ServerNameCb on_server_name = [](SSL* ssl, int* alert, void* arg) -> int {
    auto* self = static_cast<Impl*>(arg);
    const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    std::optional<uint16_t> port;
    if (sni != nullptr) {
      port = PortFromSni(sni);
      if (!port) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
      }
    }
    SSL_CTX* ctx = self->InboundContextFor(port);
    if (ctx == nullptr) {
      *alert = SSL_AD_UNRECOGNIZED_NAME;
      return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    SSL_set_SSL_CTX(ssl, ctx);
    return SSL_TLSEXT_ERR_OK;
  };
  SSL_CTX_callback_ctrl(s.inbound_base.get(), SSL_CTRL_SET_TLSEXT_SERVERNAME_CB,
                        reinterpret_cast<void (*)()>(on_server_name));

  size_t n = s.options.loops;
  if (n == 0) n = std::max<size_t>(1, std::thread::hardware_concurrency());
  SIGIL_ASSIGN_OR_RETURN(s.loops, LoopGroup::Start(n));
  s.workers = std::make_unique<WorkerPool>(std::max<size_t>(1, s.options.workers));
  for (size_t i = 0; i < s.loops->size(); ++i) {
    s.pools.emplace(&s.loops->at(i), std::make_unique<LoopPool>());
  }

  // Listeners live on loop 0; accepted connections are spread over all loops.
  EventLoop& first = s.loops->at(0);
  Impl* raw = impl.get();
  auto watch = [&](int fd, std::function<void()> on_ready) -> Result<void> {
    auto done = std::make_shared<std::optional<Result<void>>>();
    std::mutex mu;
    std::condition_variable cv;
    first.Post([&, fd, on_ready = std::move(on_ready)] {
      auto r = first.Watch(fd, EPOLLIN | EPOLLET, [on_ready](uint32_t) { on_ready(); });
      std::lock_guard lock(mu);
      *done = std::move(r);
      cv.notify_all();
    });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done->has_value(); });
    return **done;
  };
  SIGIL_TRY(watch(s.outbound4.get(), [raw] { raw->Accept(raw->outbound4.get(), false); }));
  if (s.outbound6.valid()) {
    SIGIL_TRY(watch(s.outbound6.get(), [raw] { raw->Accept(raw->outbound6.get(), false); }));
  }
  SIGIL_TRY(watch(s.inbound.get(), [raw] { raw->Accept(raw->inbound.get(), true); }));

  s.RefreshInboundCertificates();
  s.refresher = std::thread([raw] { raw->RefresherLoop(); });
  log.Info("dataplane.start",
           {{"outbound", s.options.outbound_v4},
            {"outbound_v6", s.options.outbound_v6},
            {"inbound_port", s.inbound_port},
            {"loops", n},
            {"pool", s.options.pool},
            {"ktls", KernelTlsAvailable() ? "available (kernel TLS records, splice relay)"
                                          : "unavailable (user-space record layer and relay)"}});
  return std::unique_ptr<Proxy>(new Proxy(std::move(impl)));
}

}  // namespace sigil::dataplane
