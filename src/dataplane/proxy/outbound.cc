// Outbound: a connection a managed workload made, redirected to us by the BPF programs.
// Attribute (Interceptor::Lookup) -> policy (NodePolicy::Match) -> deny | passthrough |
// mutual (attest, the process's SVID, sigil/1 to the destination node's agent) -> relay.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include "dataplane/proxy/proxy_impl.h"
#include "dataplane/proxy/svid_tls.h"

namespace sigil::dataplane {
namespace {

nlohmann::json With(nlohmann::json fields, const nlohmann::json& extra) {
  fields.update(extra);
  return fields;
}

}  // namespace

Result<std::shared_ptr<SSL_CTX>> Proxy::Impl::ClientContext(
    const agent::workloadapi::X509SvidGrant& grant) {
  const std::string key = SvidKey(grant);
  std::lock_guard lock(client_ctx_mu);
  if (auto it = client_ctx.find(key); it != client_ctx.end()) return it->second;
  SIGIL_ASSIGN_OR_RETURN(SslCtxPtr ctx, MakeSvidContext(grant, TlsRole::kClient));
  // Drop contexts of SVIDs that have expired (each renewal adds one).
  const int64_t now = ToUnixSeconds(Clock::System().Now());
  for (auto it = client_ctx.begin(); it != client_ctx.end();) {
    const auto at = it->first.rfind('@');
    if (std::stoll(it->first.substr(at + 1)) < now) {
      it = client_ctx.erase(it);
    } else {
      ++it;
    }
  }
  std::shared_ptr<SSL_CTX> shared(ctx.release(), SSL_CTX_free);
  client_ctx[key] = shared;
  return shared;
}

void Proxy::Impl::StoreSession(const std::string& key, SSL_SESSION* session) {
  if (SSL_SESSION_is_resumable(session) != 1) return;
  SSL_SESSION_up_ref(session);
  std::shared_ptr<SSL_SESSION> held(session, SSL_SESSION_free);
  std::lock_guard lock(session_mu);
  if (sessions.size() >= 4096 && !sessions.contains(key)) sessions.erase(sessions.begin());
  sessions[key] = std::move(held);
}

std::shared_ptr<SSL_SESSION> Proxy::Impl::FindSession(const std::string& key) {
  std::lock_guard lock(session_mu);
  auto it = sessions.find(key);
  return it == sessions.end() ? nullptr : it->second;
}

void Proxy::Impl::DropSession(const std::string& key) {
  std::lock_guard lock(session_mu);
  sessions.erase(key);
}

Result<std::shared_ptr<SSL_CTX>> Proxy::Impl::UpstreamContext(const CompiledService& service) {
  const std::string key = service.name + "\n" + service.tls.ca_bundle_pem;
  std::lock_guard lock(upstream_ctx_mu);
  if (auto it = upstream_ctx.find(key); it != upstream_ctx.end()) return it->second;
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return Internal("SSL_CTX_new failed");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  if (service.tls.ca_bundle_pem.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      return Internal("Service/" + service.name + ": cannot load the system CA roots");
    }
  } else {
    BioPtr bio(BIO_new_mem_buf(service.tls.ca_bundle_pem.data(),
                               static_cast<int>(service.tls.ca_bundle_pem.size())));
    X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
    int loaded = 0;
    while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      X509_STORE_add_cert(store, cert);
      X509_free(cert);
      ++loaded;
    }
    ERR_clear_error();
    if (loaded == 0) {
      return InvalidArgument("Service/" + service.name +
                             ": spec.tls.caBundle holds no certificate");
    }
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  std::shared_ptr<SSL_CTX> shared(ctx.release(), SSL_CTX_free);
  if (upstream_ctx.size() >= 1024) upstream_ctx.clear();  // bound; rebuilt on demand
  upstream_ctx[key] = shared;
  return shared;
}

// Server-authenticated TLS from the agent to the service's upstream (simple and inject: the
// workload speaks plaintext). The name checked is spec.tls.sni, or the IP dialled when there
// is none. Failures are logged and counted; `done` gets the error.
void Proxy::Impl::ConnectUpstreamTls(EventLoop& loop, std::shared_ptr<Outbound> c,
                                     std::function<void(Result<std::unique_ptr<Endpoint>>)> done) {
  auto ctx = UpstreamContext(*c->service);
  if (!ctx.ok()) {
    counters.outbound_failed++;
    log.Warn("dataplane.outbound.refused",
             With(c->Fields(), {{"step", "tls"}, {"error", ctx.error().message()}}));
    return done(ctx.error());
  }
  Destination upstream = c->dst;
  if (c->service->tls.port != 0) upstream.port = c->service->tls.port;
  AsyncConnect(
      loop, upstream.ToSockaddr(), options.connect_timeout,
      [this, &loop, c, upstream, client = *ctx, done](Result<OwnedFd> up) {
        if (!up.ok()) {
          counters.outbound_failed++;
          log.Warn(
              "dataplane.outbound.connect_failed",
              With(c->Fields(), {{"upstream", upstream.str()}, {"error", up.error().message()}}));
          return done(up.error());
        }
        SslPtr ssl(SSL_new(client.get()));
        const UpstreamTls& tls = c->service->tls;
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
        if (!tls.sni.empty()) {
          SSL_ctrl(ssl.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                   const_cast<char*>(tls.sni.c_str()));
          if (tls.verify_hostname) X509_VERIFY_PARAM_set1_host(param, tls.sni.c_str(), 0);
        } else if (tls.verify_hostname) {
          X509_VERIFY_PARAM_set1_ip(param, upstream.ip.data(),
                                    upstream.family == AF_INET6 ? 16 : 4);
        }
        SSL_set_connect_state(ssl.get());
        AsyncTlsHandshake(loop, std::move(*up), std::move(ssl), options.handshake_timeout,
                          [this, c, upstream, done](Result<std::unique_ptr<Endpoint>> ep) {
                            if (!ep.ok()) {
                              counters.outbound_failed++;
                              log.Warn("dataplane.outbound.handshake_failed",
                                       With(c->Fields(), {{"upstream", upstream.str()},
                                                          {"error", ep.error().message()}}));
                            }
                            done(std::move(ep));
                          });
      });
}

void Proxy::Impl::OriginateTls(EventLoop& loop, std::shared_ptr<Outbound> c) {
  ConnectUpstreamTls(loop, c, [this, &loop, c](Result<std::unique_ptr<Endpoint>> ep) {
    if (!ep.ok()) return AbortSocket(std::move(c->workload));
    const std::string what = "simple " + c->dst.str();
    StartTrackedRelay(loop, Endpoint::Plain(std::move(c->workload)), std::move(*ep), "", "", what);
  });
}

void Proxy::Impl::HandleOutbound(EventLoop& loop, OwnedFd fd) {
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  if (::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &len) != 0) return;
  if (lookup_blocks) {
    // The nftables backend scans /proc to find the socket's owner: never on an event loop.
    auto held = std::make_shared<OwnedFd>(std::move(fd));
    workers->Submit([this, &loop, held, peer] {
      auto origin =
          std::make_shared<Result<OriginalConnection>>(interceptor.Lookup(held->get(), peer));
      loop.Post([this, &loop, held, origin] {
        ContinueOutbound(loop, std::move(*held), std::move(*origin));
      });
    });
    return;
  }
  auto origin = interceptor.Lookup(fd.get(), peer);
  ContinueOutbound(loop, std::move(fd), std::move(origin));
}

void Proxy::Impl::ContinueOutbound(EventLoop& loop, OwnedFd fd, Result<OriginalConnection> origin) {
  if (!origin.ok()) {
    // Not redirected by us (a direct connection to the listener, or a client that closed
    // before we accepted): nothing to attribute it to, so refuse.
    counters.outbound_unattributed++;
    log.Warn("dataplane.outbound.unattributed", {{"error", origin.error().message()}});
    return AbortSocket(std::move(fd));
  }
  auto dst = Destination::FromSockaddr(origin->original_dst);
  if (!dst.ok()) return AbortSocket(std::move(fd));

  auto c = std::make_shared<Outbound>();
  c->workload = std::move(fd);
  c->origin = *origin;
  c->dst = *dst;
  c->policy = host.Policy();
  c->service = c->policy->Match(c->dst);
  const ServiceMode mode = c->service ? c->service->mode : c->policy->default_mode();

  switch (mode) {
    case ServiceMode::kDeny: {
      counters.outbound_denied++;
      const std::string reason = c->service ? "service mode deny" : "node default";
      log.Warn("dataplane.outbound.denied", With(c->Fields(), {{"reason", reason}}));
      AbortSocket(std::move(c->workload));
      workers->Submit([this, c, reason] {
        auto process = host.Attest(c->origin.tgid);  // for the exe; the process may be gone
        host.Audit("dataplane.denied", "", c->origin.tgid, process.ok() ? process->exe_path : "",
                   {{"side", "outbound"},
                    {"dst", c->dst.str()},
                    {"uid", c->origin.uid},
                    {"service", c->service ? c->service->name : ""},
                    {"reason", reason}});
      });
      return;
    }
    case ServiceMode::kPassthrough: {
      counters.outbound_passthrough++;
      AsyncConnect(loop, c->dst.ToSockaddr(), options.connect_timeout,
                   [this, &loop, c](Result<OwnedFd> up) {
                     if (!up.ok()) {
                       counters.outbound_failed++;
                       log.Info("dataplane.outbound.connect_failed",
                                With(c->Fields(), {{"error", up.error().message()}}));
                       return AbortSocket(std::move(c->workload));
                     }
                     StartTrackedRelay(loop, Endpoint::Plain(std::move(c->workload)),
                                       Endpoint::Plain(std::move(*up)), "", "",
                                       "passthrough " + c->dst.str());
                   });
      return;
    }
    case ServiceMode::kMutual:
    case ServiceMode::kPermissive:
      break;
    case ServiceMode::kSimple:
      counters.outbound_simple++;
      return OriginateTls(loop, c);
    case ServiceMode::kInject:
      counters.outbound_inject++;
      return OriginateInject(loop, c);
  }

  // mutual: attest and fetch the process's SVID off the loop.
  counters.outbound_mutual++;
  workers->Submit([this, &loop, c] {
    auto fail = [&](const std::string& step, const Error& e) {
      counters.outbound_failed++;
      log.Warn("dataplane.outbound.refused",
               With(c->Fields(), {{"step", step}, {"error", e.message()}}));
      loop.Post([c] { AbortSocket(std::move(c->workload)); });
    };
    auto process = host.Attest(c->origin.tgid);
    if (!process.ok()) return fail("attest", process.error());
    if (process->uid != c->origin.uid) {
      // The pid now runs as someone else (exec of a setuid program, or pid reuse).
      return fail("attest", PermissionDenied("process uid changed since connect"));
    }
    c->exe = process->exe_path;
    auto svids = host.Svids(*process);
    if (!svids.ok()) return fail("svid", svids.error());
    if (svids->empty()) return fail("svid", PermissionDenied("the process has no identity"));
    // Several identities: the first by SPIFFE ID, so the choice is stable.
    const auto* grant = &svids->front();
    for (const auto& g : *svids) {
      if (g.spiffe_id < grant->spiffe_id) grant = &g;
    }
    c->source_id = grant->spiffe_id;
    auto ctx = ClientContext(*grant);
    if (!ctx.ok()) return fail("tls", ctx.error());
    std::shared_ptr<SSL_CTX> client = *ctx;
    auto check = std::make_shared<PeerCheck>();
    check->bundles = host.Bundles();
    check->revoked = host.Revocations();
    check->expect = c->service->identity;
    Destination agent_addr = c->dst;
    agent_addr.port = c->service->inbound_port;
    // One ticket cache entry per (source SVID, peer agent, service port): processes with
    // different identities never share a session (docs/dataplane.md).
    const std::string session_key =
        SvidKey(*grant) + "|" + agent_addr.str() + "|" + std::to_string(c->dst.port);
    if (options.pool) {
      loop.Post([this, &loop, c, client, check, agent_addr, session_key] {
        OpenPooled(loop, c, client, check, agent_addr, session_key);
      });
      return;
    }
    check->on_session = [this, session_key](SSL_SESSION* s) { StoreSession(session_key, s); };
    loop.Post([this, &loop, c, client, check, agent_addr, session_key] {
      AsyncConnect(
          loop, agent_addr.ToSockaddr(), options.connect_timeout,
          [this, &loop, c, client, check, session_key](Result<OwnedFd> up) {
            if (!up.ok()) {
              counters.outbound_failed++;
              log.Warn("dataplane.outbound.peer_unreachable",
                       With(c->Fields(), {{"error", up.error().message()}}));
              return AbortSocket(std::move(c->workload));
            }
            SslPtr ssl(SSL_new(client.get()));
            const std::string sni = SniForPort(c->dst.port);
            SSL_ctrl(ssl.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                     const_cast<char*>(sni.c_str()));
            SSL_set_connect_state(ssl.get());
            AttachPeerCheck(ssl.get(), check);
            if (auto session = FindSession(session_key)) SSL_set_session(ssl.get(), session.get());
            AsyncTlsHandshake(
                loop, std::move(*up), std::move(ssl), options.handshake_timeout,
                [this, &loop, c, check, session_key](Result<std::unique_ptr<Endpoint>> ep) {
                  Result<core::SpiffeId> verified = ep.ok() ? PeerIdentity((*ep)->ssl(), *check)
                                                            : Result<core::SpiffeId>(ep.error());
                  if (!verified.ok()) {
                    DropSession(session_key);
                    counters.outbound_failed++;
                    log.Warn("dataplane.outbound.handshake_failed",
                             With(c->Fields(), {{"error", verified.error().message()},
                                                {"peer_check", check->failure}}));
                    if (check->peer_revoked) {
                      AuditRevokedPeer("outbound", c->dst.str(), *check);
                    }
                    return AbortSocket(std::move(c->workload));
                  }
                  if (SSL_session_reused((*ep)->ssl()) == 1) counters.outbound_resumed++;
                  auto certs =
                      std::make_shared<ConnCertificates>(CaptureCertificates((*ep)->ssl()));
                  c->upstream = std::move(*ep);
                  AsyncWriteAll(
                      loop, *c->upstream, EncodeConnect(c->dst), options.handshake_timeout,
                      [this, &loop, c, certs](Result<void> w) {
                        if (!w.ok()) {
                          counters.outbound_failed++;
                          return AbortSocket(std::move(c->workload));
                        }
                        AsyncReadMessage(
                            loop, *c->upstream, kMaxLineBytes, options.handshake_timeout,
                            [](std::string_view b) -> ssize_t {
                              Reply r;
                              auto n = ParseReply(b, &r);
                              return n.ok() ? static_cast<ssize_t>(*n) : -1;
                            },
                            [this, &loop, c, certs](Result<std::pair<std::string, std::string>> m) {
                              Reply reply;
                              if (!m.ok() || !ParseReply(m->first, &reply).ok()) {
                                counters.outbound_failed++;
                                log.Warn(
                                    "dataplane.outbound.refused",
                                    With(c->Fields(), {{"step", "reply"},
                                                       {"error", m.ok() ? "malformed reply"
                                                                        : m.error().message()}}));
                                return AbortSocket(std::move(c->workload));
                              }
                              if (reply.code != 200) {
                                counters.outbound_denied++;
                                host.Audit(
                                    reply.code == 403 ? "dataplane.denied" : "dataplane.refused",
                                    c->source_id, c->origin.tgid, c->exe,
                                    {{"side", "outbound"},
                                     {"dst", c->dst.str()},
                                     {"service", c->service->name},
                                     {"code", reply.code},
                                     {"reason", reply.reason}});
                                log.Warn("dataplane.outbound.refused_by_peer",
                                         With(c->Fields(),
                                              {{"code", reply.code}, {"reason", reply.reason}}));
                                return AbortSocket(std::move(c->workload));
                              }
                              SwitchRecordLayer(*c->upstream);
                              StartTrackedRelay(loop, Endpoint::Plain(std::move(c->workload)),
                                                std::move(c->upstream), "", m->second,
                                                "mutual " + c->source_id + " -> " + c->dst.str(),
                                                *certs);
                            });
                      });
                });
          });
    });
  });
}

}  // namespace sigil::dataplane
