// Inbound: sigil/1 on port 15008. The client SVID is verified inside the handshake
// (svid_tls.cc); the request line must name a local Service on the address the client dialled;
// AccessPolicy decides; then the local application gets the bytes (optionally behind a PROXY v2
// header carrying the verified SPIFFE ID).
//
// Server certificates: for every inbound Service (mutual, permissive) the refresher finds the
// managed process listening on the service's port (the BPF bind record), attests it and holds
// an SVID for the Service's identity on its behalf. The SNI names the port.
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <cstring>
#include <set>
#include <span>

#include "common/encoding.h"
#include "dataplane/protocol/proxy_v2.h"
#include "dataplane/proxy/proxy_impl.h"
#include "dataplane/proxy/svid_tls.h"

namespace sigil::dataplane {
namespace {

std::string LeafSha256Hex(SSL* ssl) {
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (leaf == nullptr) return "";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(leaf, EVP_sha256(), md, &len) != 1) return "";
  return HexEncode(std::span<const uint8_t>(md, len));
}

Result<Destination> SocketAddress(int fd, bool peer) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return Unavailable(std::string("getsockname: ") + std::strerror(errno));
  return Destination::FromSockaddr(addr);
}

}  // namespace

SSL_CTX* Proxy::Impl::InboundContextFor(std::optional<uint16_t> port) {
  std::lock_guard lock(inbound_mu);
  if (port) {
    auto it = inbound_ctx.find(*port);
    return it == inbound_ctx.end() ? nullptr : it->second.get();
  }
  // No SNI: only unambiguous when this node serves exactly one inbound service.
  return inbound_ctx.size() == 1 ? inbound_ctx.begin()->second.get() : nullptr;
}

InboundDecision Proxy::Impl::DecideInbound(const Inbound& c, const core::SpiffeId& source,
                                           const Destination& dst) {
  if (c.sni_port && *c.sni_port != dst.port) {
    return {400, "request port differs from the SNI port", nullptr, nullptr};
  }
  // Only the address the client dialled: the agent is not an open relay.
  if (dst.family != c.local.family || dst.ip != c.local.ip) {
    return {421, dst.str() + " is not an address of this node's connection", nullptr, nullptr};
  }
  auto policy = host.Policy();
  const CompiledService* service = policy->MatchInbound(dst);
  if (service == nullptr) return {421, "no inbound service at " + dst.str(), nullptr, nullptr};
  const AccessDecision d = policy->Authorize(source, *service);
  if (!d.allowed) return {403, d.reason, nullptr, nullptr};
  return {200, "OK", service, std::move(policy)};
}

void Proxy::Impl::AuditInboundRefusal(const Inbound& c, int code, const std::string& reason) {
  if (code == 403) counters.inbound_denied++;
  host.Audit(code == 403 ? "dataplane.denied" : "dataplane.refused", c.source_id, 0, "",
             {{"side", "inbound"},
              {"peer", c.remote.str()},
              {"local", c.local.str()},
              {"code", code},
              {"reason", reason}});
  nlohmann::json f = c.Fields();
  f["code"] = code;
  f["reason"] = reason;
  log.Warn(code == 403 ? "dataplane.inbound.denied" : "dataplane.inbound.refused", f);
}

void Proxy::Impl::RefreshInboundCertificates() {
  auto policy = host.Policy();
  std::map<uint16_t, std::shared_ptr<SSL_CTX>> next;
  std::map<std::string, std::shared_ptr<SSL_CTX>> next_by_key;
  std::set<ProtectedPort> protect;
  for (const auto& service : policy->services()) {
    if (service->mode != ServiceMode::kMutual && service->mode != ServiceMode::kPermissive) {
      continue;
    }
    for (const auto& address : service->addresses) {
      if (address.type == resources::ServiceAddress::Type::kDnsName) continue;
      const int family =
          address.type == resources::ServiceAddress::Type::kIpv4 ? AF_INET : AF_INET6;
      if (next.contains(address.port)) continue;
      auto owner = interceptor.LookupListener(family, address.port);
      if (!owner) continue;  // not served by a managed process on this node
      auto process = host.Attest(owner->tgid);
      if (!process.ok()) continue;  // gone; the record was stale
      auto svids = host.Svids(*process);
      if (!svids.ok()) {
        log.Warn(
            "dataplane.inbound.svid_failed",
            {{"service", service->name}, {"pid", owner->tgid}, {"error", svids.error().message()}});
        continue;
      }
      for (const auto& grant : *svids) {
        if (grant.spiffe_id != service->identity->str()) continue;
        const std::string key = SvidKey(grant);
        std::shared_ptr<SSL_CTX> ctx;
        {
          std::lock_guard lock(inbound_mu);
          if (auto it = inbound_by_key.find(key); it != inbound_by_key.end()) ctx = it->second;
        }
        if (!ctx) {
          auto made = MakeSvidContext(grant, TlsRole::kServer);
          if (!made.ok()) break;
          ctx = std::shared_ptr<SSL_CTX>(made->release(), SSL_CTX_free);
        }
        next[address.port] = ctx;
        next_by_key[key] = ctx;
        if (service->mode == ServiceMode::kMutual) {
          const bool single = address.prefix_length == (family == AF_INET ? 32 : 128);
          protect.insert(ProtectedPort{
              single ? address.host : address.host + "/" + std::to_string(address.prefix_length),
              family == AF_INET6, address.port, service->name});
        }
        break;
      }
    }
  }
  {
    std::lock_guard lock(inbound_mu);
    inbound_ctx = std::move(next);
    inbound_by_key = std::move(next_by_key);
  }
  if (options.enforce) {
    auto applied = enforcer.Apply(protect);
    if (!applied.ok()) {
      if (applied.error().message() != enforcement_error) {
        enforcement_error = applied.error().message();
        log.Error("dataplane.enforce.failed", {{"error", enforcement_error}});
      }
    } else if (!enforcement_logged || protect != enforced) {
      nlohmann::json ports = nlohmann::json::array();
      for (const auto& p : protect) {
        ports.push_back(p.service + " " + p.address + ":" + std::to_string(p.port));
      }
      log.Info("dataplane.enforce", {{"protected", ports}});
      enforced = protect;
      enforcement_logged = true;
      enforcement_error.clear();
    }
  }
}

void Proxy::Impl::RefresherLoop() {
  for (;;) {
    bool revoked = false;
    {
      std::unique_lock lock(refresher_mu);
      refresher_cv.wait_for(lock, options.inbound_refresh,
                            [this] { return stopping || revocations_pending; });
      if (stopping) return;
      revoked = std::exchange(revocations_pending, false);
    }
    // Revocations first: established connections close before certificates are re-read (an
    // SVID reissued for a revoked serial may need a server call).
    if (revoked) CloseRevoked();
    RefreshInboundCertificates();
  }
}

void Proxy::Impl::HandleInbound(EventLoop& loop, OwnedFd fd) {
  auto c = std::make_shared<Inbound>();
  auto local = SocketAddress(fd.get(), false);
  auto remote = SocketAddress(fd.get(), true);
  if (!local.ok() || !remote.ok()) return;
  c->local = *local;
  c->remote = *remote;
  SslPtr ssl(SSL_new(inbound_base.get()));
  SSL_set_accept_state(ssl.get());
  auto check = std::make_shared<PeerCheck>();
  check->bundles = host.Bundles();
  check->revoked = host.Revocations();
  AttachPeerCheck(ssl.get(), check);
  AsyncTlsHandshake(
      loop, std::move(fd), std::move(ssl), options.handshake_timeout,
      [this, &loop, c, check](Result<std::unique_ptr<Endpoint>> ep) {
        Result<core::SpiffeId> peer =
            ep.ok() ? PeerIdentity((*ep)->ssl(), *check) : Result<core::SpiffeId>(ep.error());
        if (!peer.ok()) {
          counters.inbound_handshake_failed++;
          log.Warn("dataplane.inbound.handshake_failed", {{"peer", c->remote.str()},
                                                          {"error", peer.error().message()},
                                                          {"peer_check", check->failure}});
          if (check->peer_revoked) AuditRevokedPeer("inbound", c->remote.str(), *check);
          if (ep.ok()) (*ep)->Abort();
          return;
        }
        if (SSL_session_reused((*ep)->ssl()) == 1) counters.inbound_resumed++;
        c->client = std::move(*ep);
        c->source_id = peer->str();
        c->peer_cert_sha256 = LeafSha256Hex(c->client->ssl());
        c->certs = CaptureCertificates(c->client->ssl());
        if (const char* sni = SSL_get_servername(c->client->ssl(), TLSEXT_NAMETYPE_host_name)) {
          c->sni_port = PortFromSni(sni);
        }
        const unsigned char* alpn = nullptr;
        unsigned int alpn_len = 0;
        SSL_get0_alpn_selected(c->client->ssl(), &alpn, &alpn_len);
        if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_len) == mux::kAlpn2) {
          return ServeInboundMux(loop, c, *check->verified);
        }
        AsyncReadMessage(
            loop, *c->client, kMaxLineBytes, options.handshake_timeout,
            [](std::string_view b) -> ssize_t {
              Destination d;
              auto n = ParseConnect(b, &d);
              return n.ok() ? static_cast<ssize_t>(*n) : -1;
            },
            [this, &loop, c,
             source = *check->verified](Result<std::pair<std::string, std::string>> m) {
              auto refuse = [this, &loop, c](int code, const std::string& reason) {
                AuditInboundRefusal(*c, code, reason);
                AsyncWriteAll(loop, *c->client, EncodeReply(code, reason),
                              options.handshake_timeout, [c](Result<void>) {
                                c->client->ShutdownWrite();
                                c->client->Close();
                              });
              };
              Destination dst;
              if (!m.ok() || !ParseConnect(m->first, &dst).ok()) {
                return refuse(400, m.ok() ? "malformed request" : m.error().message());
              }
              c->leftover = std::move(m->second);
              InboundDecision d = DecideInbound(*c, source, dst);
              if (d.code != 200) return refuse(d.code, d.reason);
              const CompiledService* service = d.service;
              if (service->forwarding == PeerForwarding::kXfcc) {
                // The header is added per HTTP request by the pooled path's filter; a sigil/1
                // connection is relayed as raw bytes, so it cannot carry one.
                return refuse(501, "x-forwarded-client-cert forwarding needs sigil/2 (pooled)");
              }
              std::string prefix;
              if (service->forwarding == PeerForwarding::kProxyV2) {
                prefix = EncodeProxyV2(c->remote, dst, c->source_id);
              }
              AsyncConnect(
                  loop, dst.ToSockaddr(), options.connect_timeout,
                  [this, &loop, c, refuse, dst, prefix,
                   name = service->name](Result<OwnedFd> app) mutable {
                    if (!app.ok())
                      return refuse(502, "local application: " + app.error().message());
                    auto app_fd = std::make_shared<OwnedFd>(std::move(*app));
                    AsyncWriteAll(
                        loop, *c->client, EncodeReply(200, "OK"), options.handshake_timeout,
                        [this, &loop, c, app_fd, prefix, dst, name](Result<void> w) {
                          if (!w.ok()) return AbortSocket(std::move(*app_fd));
                          counters.inbound_relayed++;
                          SwitchRecordLayer(*c->client);
                          log.Info("dataplane.inbound.accepted", {{"peer", c->remote.str()},
                                                                  {"identity", c->source_id},
                                                                  {"service", name},
                                                                  {"dst", dst.str()}});
                          StartTrackedRelay(
                              loop, std::move(c->client), Endpoint::Plain(std::move(*app_fd)),
                              prefix + c->leftover, "",
                              "inbound " + c->source_id + " -> " + dst.str(), c->certs);
                        });
                  });
            });
      });
}

}  // namespace sigil::dataplane
