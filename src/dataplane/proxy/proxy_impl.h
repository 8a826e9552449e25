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
#include <unordered_map>

#include "common/ossl.h"
#include "common/owned_fd.h"
#include "dataplane/mux/mux_connection.h"
#include "dataplane/protocol/preamble.h"
#include "dataplane/proxy/nft_enforcer.h"
#include "dataplane/proxy/proxy.h"
#include "dataplane/proxy/svid_tls.h"
#include "dataplane/relay/async_io.h"
#include "dataplane/relay/endpoint.h"
#include "dataplane/relay/event_loop.h"
#include "dataplane/relay/relay.h"

namespace sigil::dataplane {

// Everything one outbound connection carries through its asynchronous steps.
struct Outbound {
  OwnedFd workload;
  OriginalConnection origin;
  Destination dst;
  std::shared_ptr<const NodePolicy> policy;  // keeps `service` alive
  const CompiledService* service = nullptr;
  std::string source_id;  // the workload's SPIFFE ID (mutual)
  std::string exe;
  std::unique_ptr<Endpoint> upstream;

  nlohmann::json Fields() const {
    nlohmann::json f = {{"pid", origin.tgid},
                        {"uid", origin.uid},
                        {"dst", dst.str()},
                        {"service", service ? service->name : ""}};
    if (!exe.empty()) f["exe"] = exe;
    if (!source_id.empty()) f["identity"] = source_id;
    return f;
  }
};

// One inbound connection from a peer agent (inbound.cc, inbound_pool.cc).
struct Inbound {
  std::unique_ptr<Endpoint> client;
  Destination local;   // the address the client dialled (our side of the TCP connection)
  Destination remote;  // the client agent's address
  std::string source_id;
  std::string peer_cert_sha256;  // hex, of the client's leaf (x-forwarded-client-cert)
  ConnCertificates certs;        // both leaves of the handshake (revocation)
  std::optional<uint16_t> sni_port;
  std::string leftover;  // bytes after the request line

  nlohmann::json Fields() const {
    return {{"peer", remote.str()}, {"identity", source_id}, {"local", local.str()}};
  }
};

struct InboundDecision {
  int code = 0;
  std::string reason;
  const CompiledService* service = nullptr;
  std::shared_ptr<const NodePolicy> policy;
};

// sigil/2 pooled connections of one event loop (outbound_pool.cc), used only on that loop's
// thread: by (source SVID, peer agent, service port, expected peer ID).
struct PooledConnection;
struct InjectConn;  // outbound_inject.cc
struct LoopPool {
  std::unordered_map<std::string, std::vector<std::shared_ptr<PooledConnection>>> by_key;
};

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
    std::atomic<uint64_t> outbound_inject{0}, inject_requests{0}, inject_refused{0};
    std::atomic<uint64_t> records_switched{0}, records_kept_openssl{0}, records_ktls{0};
    std::atomic<uint64_t> pool_connections{0}, pool_streams{0}, inbound_pooled{0},
        inbound_streams{0};
    std::atomic<uint64_t> revoked_closed{0}, revoked_refused{0};
  } counters;

  Impl(ProxyOptions o, ProxyHost& h, Interceptor& i, Logger& l)
      : options(std::move(o)), host(h), interceptor(i), log(l) {}

  // Accepts on loop 0 and hands each connection to the next loop.
  void Accept(int listener, bool inbound_side);

  // outbound.cc
  void HandleOutbound(EventLoop& loop, OwnedFd fd);
  void ContinueOutbound(EventLoop& loop, OwnedFd fd, Result<OriginalConnection> origin);
  // Interceptor::Lookup may block (nftables: a /proc scan), so it runs on a worker.
  bool lookup_blocks = false;
  Result<std::shared_ptr<SSL_CTX>> ClientContext(const agent::workloadapi::X509SvidGrant& grant);
  void OriginateTls(EventLoop& loop, std::shared_ptr<Outbound> c);
  void ConnectUpstreamTls(EventLoop& loop, std::shared_ptr<Outbound> c,
                          std::function<void(Result<std::unique_ptr<Endpoint>>)> done);
  // outbound_inject.cc: inject Services (credentials added to each HTTP request).
  void OriginateInject(EventLoop& loop, std::shared_ptr<Outbound> c);
  void StartInject(EventLoop& loop, std::shared_ptr<InjectConn> conn,
                   std::unique_ptr<Endpoint> upstream);
  // outbound_pool.cc: the mutual path over a pooled sigil/2 connection (options.pool).
  std::unordered_map<const EventLoop*, std::unique_ptr<LoopPool>> pools;  // fixed after Start
  void OpenPooled(EventLoop& loop, std::shared_ptr<Outbound> c, std::shared_ptr<SSL_CTX> client,
                  std::shared_ptr<PeerCheck> check, Destination agent_addr, std::string key);
  void ConnectPooled(EventLoop& loop, std::shared_ptr<PooledConnection> conn,
                     std::shared_ptr<SSL_CTX> client, std::shared_ptr<PeerCheck> check,
                     Destination agent_addr, uint16_t port, std::string key);
  void StartPooledStream(PooledConnection& conn, std::shared_ptr<Outbound> c);
  void StartOutboundMux(EventLoop& loop, std::shared_ptr<PooledConnection> conn,
                        std::unique_ptr<Endpoint> ep, std::string leftover);
  // simple: upstream verification context per (Service, CA bundle).
  std::mutex upstream_ctx_mu;
  std::map<std::string, std::shared_ptr<SSL_CTX>> upstream_ctx;
  Result<std::shared_ptr<SSL_CTX>> UpstreamContext(const CompiledService& service);

  // inbound.cc
  void HandleInbound(EventLoop& loop, OwnedFd fd);
  // The checks every inbound request passes (sigil/1 line or sigil/2 OPEN): SNI port, the
  // dialled address, a Service there, AccessPolicy. 200 carries the service (kept alive by
  // `policy`); anything else the refusal code and reason.
  InboundDecision DecideInbound(const Inbound& c, const core::SpiffeId& source,
                                const Destination& dst);
  // Audits and logs a refused inbound request.
  void AuditInboundRefusal(const Inbound& c, int code, const std::string& reason);
  // inbound_pool.cc: a sigil/2 connection from a peer agent, one stream per workload connection.
  void ServeInboundMux(EventLoop& loop, std::shared_ptr<Inbound> c, core::SpiffeId source);
  void StartInboundMux(EventLoop& loop, std::shared_ptr<Inbound> c, core::SpiffeId source);
  void RefreshInboundCertificates();
  void RefresherLoop();
  SSL_CTX* InboundContextFor(std::optional<uint16_t> port);

  // After the handshake and the sigil/1 lines: hand the record layer to the kernel (kTLS, where
  // KernelTlsAvailable(); the relay then splices) or else to our own code, and free the SSL (an
  // idle connection then costs ~2.6 KiB instead of ~33 KiB). When OpenSSL still holds unread
  // records the connection simply stays on OpenSSL.
  void SwitchRecordLayer(Endpoint& ep);
  // `certs`: the relay carries a connection authenticated with these certificates (sigil/1);
  // it is tracked, and closed when one of them is revoked.
  void StartTrackedRelay(EventLoop& loop, std::unique_ptr<Endpoint> a, std::unique_ptr<Endpoint> b,
                         std::string a_to_b, std::string b_to_a, std::string what,
                         std::optional<ConnCertificates> certs = std::nullopt);

  // revocation.cc: established sigil/1 relays and sigil/2 connections by the certificates they
  // were authenticated with, so a revocation can close them (Proxy::RevocationsChanged).
  struct LiveConn {
    ConnCertificates certs;
    std::string what;             // for the log: "mutual spiffe://... -> 10.0.0.2:80", ...
    std::function<void()> close;  // thread-safe; empty until set
  };
  std::mutex live_mu;
  uint64_t live_next = 1;                       // guarded by live_mu
  std::unordered_map<uint64_t, LiveConn> live;  // guarded by live_mu
  bool revocations_pending = false;             // guarded by refresher_mu
  uint64_t TrackConn(ConnCertificates certs, std::string what);
  void SetConnCloser(uint64_t id, std::function<void()> close);  // no-op once untracked
  void UntrackConn(uint64_t id);
  // Closes every tracked connection the host's revocations cover (refresher thread).
  void CloseRevoked();
  // A handshake refused because the peer's certificate is revoked: counted and audited.
  void AuditRevokedPeer(const std::string& side, const std::string& peer, const PeerCheck& check);
};

// "spiffe://td/x@<unix expiry>#<serial>": one TLS context per SVID.
std::string SvidKey(const agent::workloadapi::X509SvidGrant& grant);

}  // namespace sigil::dataplane
