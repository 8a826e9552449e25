// Internal state of Proxy shared by proxy.cc (listeners, workers), outbound.cc and inbound.cc.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/ossl.h"
#include "common/owned_fd.h"
#include "dataplane/protocol/preamble.h"
#include "dataplane/proxy/nft_enforcer.h"
#include "dataplane/proxy/proxy.h"
#include "dataplane/relay/async_io.h"
#include "dataplane/relay/endpoint.h"
#include "dataplane/relay/event_loop.h"
#include "dataplane/relay/relay.h"

namespace sigil::dataplane {

struct Outbound;  // one outbound connection's state (outbound.cc)

// Threads for blocking work (attestation, issuance). Results go back with EventLoop::Post.
class WorkerPool {
 public:
  explicit WorkerPool(size_t n);
  ~WorkerPool();
  void Submit(std::function<void()> fn);
  void Stop();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

struct Proxy::Impl {
  ProxyOptions options;
  ProxyHost& host;
  Interceptor& interceptor;
  Logger& log;

  std::unique_ptr<LoopGroup> loops;
  std::unique_ptr<WorkerPool> workers;
  OwnedFd outbound4, outbound6, inbound;
  sockaddr_in outbound4_addr{};
  uint16_t inbound_port = 0;

  // Client contexts by SVID (spiffe id + leaf expiry), built once per SVID.
  std::mutex client_ctx_mu;
  std::map<std::string, std::shared_ptr<SSL_CTX>> client_ctx;

  // TLS 1.3 session tickets from peer agents, by (source SVID, peer agent, service port).
  std::mutex session_mu;
  std::map<std::string, std::shared_ptr<SSL_SESSION>> sessions;
  void StoreSession(const std::string& key, SSL_SESSION* session);
  std::shared_ptr<SSL_SESSION> FindSession(const std::string& key);
  void DropSession(const std::string& key);

  // Inbound: the base context picks a per-port context (SNI) from `inbound_ctx`.
  SslCtxPtr inbound_base;
  std::mutex inbound_mu;
  std::map<uint16_t, std::shared_ptr<SSL_CTX>> inbound_ctx;        // by service port
  std::map<std::string, std::shared_ptr<SSL_CTX>> inbound_by_key;  // by SVID key (reuse)
  NftEnforcer enforcer;
  std::string enforcement_error;     // last reported, so a persistent failure is logged once
  std::set<ProtectedPort> enforced;  // last logged set
  bool enforcement_logged = false;
  std::thread refresher;
  std::mutex refresher_mu;
  std::condition_variable refresher_cv;
  bool stopping = false;

  struct Counters {
    std::atomic<uint64_t> outbound_accepted{0}, outbound_unattributed{0}, outbound_denied{0},
        outbound_passthrough{0}, outbound_mutual{0}, outbound_failed{0};
    std::atomic<uint64_t> inbound_accepted{0}, inbound_handshake_failed{0}, inbound_denied{0},
        inbound_relayed{0};
    std::atomic<uint64_t> active_relays{0};
    std::atomic<uint64_t> outbound_resumed{0}, inbound_resumed{0}, outbound_simple{0};
    std::atomic<uint64_t> records_switched{0}, records_kept_openssl{0};
  } counters;

  Impl(ProxyOptions o, ProxyHost& h, Interceptor& i, Logger& l)
      : options(std::move(o)), host(h), interceptor(i), log(l) {}

  // Accepts on loop 0 and hands each connection to the next loop.
  void Accept(int listener, bool inbound_side);

  // outbound.cc
  void HandleOutbound(EventLoop& loop, OwnedFd fd);
  Result<std::shared_ptr<SSL_CTX>> ClientContext(const agent::workloadapi::X509SvidGrant& grant);
  void OriginateTls(EventLoop& loop, std::shared_ptr<Outbound> c);
  // simple: upstream verification context per (Service, CA bundle).
  std::mutex upstream_ctx_mu;
  std::map<std::string, std::shared_ptr<SSL_CTX>> upstream_ctx;
  Result<std::shared_ptr<SSL_CTX>> UpstreamContext(const CompiledService& service);

  // inbound.cc
  void HandleInbound(EventLoop& loop, OwnedFd fd);
  void RefreshInboundCertificates();
  void RefresherLoop();
  SSL_CTX* InboundContextFor(std::optional<uint16_t> port);

  // After the handshake and the sigil/1 lines: hand the record layer to our own code and free
  // the SSL (an idle connection then costs ~2.6 KiB instead of ~33 KiB). When OpenSSL still
  // holds unread records the connection simply stays on OpenSSL.
  void SwitchRecordLayer(Endpoint& ep);
  void StartTrackedRelay(EventLoop& loop, std::unique_ptr<Endpoint> a, std::unique_ptr<Endpoint> b,
                         std::string a_to_b, std::string b_to_a, std::string what);
};

// "spiffe://td/x@<unix expiry>": one TLS context per SVID.
std::string SvidKey(const agent::workloadapi::X509SvidGrant& grant);

}  // namespace sigil::dataplane
