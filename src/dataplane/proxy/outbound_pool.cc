// Outbound sigil/2: the mutual path over pooled connections. Each event loop keeps its own
// pool (no locks): one TLS connection per (source SVID, peer agent, service port, expected
// peer ID) carries the streams of every workload connection whose process was attested to
// hold exactly that SVID, so a stream is bound to its process's identity as firmly as a
// connection of its own would be (docs/dataplane.md, "Pooled connections").
//
// A workload connection that arrives while the pooled connection is still being set up
// waits for it (bounded by max streams); a full connection gets a sibling.
#include <openssl/ssl.h>

#include "dataplane/proxy/proxy_impl.h"
#include "dataplane/proxy/svid_tls.h"

namespace sigil::dataplane {

struct PooledConnection {
  std::string key;
  std::string source_id;
  Destination peer;
  std::shared_ptr<mux::MuxConnection> mux;         // null while connecting
  std::vector<std::shared_ptr<Outbound>> waiting;  // until the connection is up
  std::unordered_map<uint32_t, std::shared_ptr<Outbound>> awaiting_reply;  // by stream
  bool failed = false;
};

namespace {

void Forget(LoopPool& pool, const std::string& key, const PooledConnection* conn) {
  auto it = pool.by_key.find(key);
  if (it == pool.by_key.end()) return;
  std::erase_if(it->second, [conn](const auto& p) { return p.get() == conn; });
  if (it->second.empty()) pool.by_key.erase(it);
}

}  // namespace

void Proxy::Impl::StartPooledStream(PooledConnection& conn, std::shared_ptr<Outbound> c) {
  auto id = conn.mux->Open(std::move(c->workload), c->dst);
  if (!id.ok()) {
    counters.outbound_failed++;
    log.Warn("dataplane.outbound.refused", [&] {
      nlohmann::json f = c->Fields();
      f["step"] = "stream";
      f["error"] = id.error().message();
      return f;
    }());
    return;  // the workload socket was closed by Open
  }
  counters.pool_streams++;
  counters.active_relays++;
  conn.awaiting_reply.emplace(*id, std::move(c));
}

void Proxy::Impl::OpenPooled(EventLoop& loop, std::shared_ptr<Outbound> c,
                             std::shared_ptr<SSL_CTX> client, std::shared_ptr<PeerCheck> check,
                             Destination agent_addr, std::string key) {
  key += "|" + (check->expect ? check->expect->str() : std::string());
  LoopPool& pool = *pools.at(&loop);
  auto& conns = pool.by_key[key];
  for (auto& conn : conns) {
    if (conn->mux && conn->mux->CanOpen()) return StartPooledStream(*conn, std::move(c));
  }
  for (auto& conn : conns) {
    if (!conn->mux && !conn->failed && conn->waiting.size() < options.pool_max_streams) {
      conn->waiting.push_back(std::move(c));
      return;
    }
  }
  auto conn = std::make_shared<PooledConnection>();
  conn->key = key;
  conn->source_id = c->source_id;
  conn->peer = agent_addr;
  const uint16_t port = c->dst.port;
  conn->waiting.push_back(std::move(c));
  conns.push_back(conn);
  ConnectPooled(loop, std::move(conn), std::move(client), std::move(check), agent_addr, port,
                std::move(key));
}

void Proxy::Impl::ConnectPooled(EventLoop& loop, std::shared_ptr<PooledConnection> conn,
                                std::shared_ptr<SSL_CTX> client, std::shared_ptr<PeerCheck> check,
                                Destination agent_addr, uint16_t port, std::string key) {
  // Everything waiting fails together if the connection cannot be set up.
  auto fail = [this, &loop, conn](const std::string& event, const std::string& error,
                                  const std::string& detail) {
    conn->failed = true;
    Forget(*pools.at(&loop), conn->key, conn.get());
    for (auto& c : conn->waiting) {
      counters.outbound_failed++;
      nlohmann::json f = c->Fields();
      f["error"] = error;
      if (!detail.empty()) f["peer_check"] = detail;
      log.Warn(event, f);
      AbortSocket(std::move(c->workload));
    }
    conn->waiting.clear();
  };
  // The session ticket cache is shared with sigil/1 (same key: SVID, peer agent, port).
  const std::string session_key = key.substr(0, key.rfind('|'));
  check->on_session = [this, session_key](SSL_SESSION* s) { StoreSession(session_key, s); };
  AsyncConnect(
      loop, agent_addr.ToSockaddr(), options.connect_timeout,
      [this, &loop, conn, client, check, port, session_key, fail](Result<OwnedFd> up) {
        if (!up.ok()) return fail("dataplane.outbound.peer_unreachable", up.error().message(), "");
        SslPtr ssl(SSL_new(client.get()));
        const std::string sni = SniForPort(port);
        SSL_ctrl(ssl.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(sni.c_str()));
        static const unsigned char kAlpn2Wire[] = {7, 's', 'i', 'g', 'i', 'l', '/', '2'};
        SSL_set_alpn_protos(ssl.get(), kAlpn2Wire, sizeof kAlpn2Wire);
        SSL_set_connect_state(ssl.get());
        AttachPeerCheck(ssl.get(), check);
        if (auto session = FindSession(session_key)) SSL_set_session(ssl.get(), session.get());
        AsyncTlsHandshake(
            loop, std::move(*up), std::move(ssl), options.handshake_timeout,
            [this, &loop, conn, check, session_key, fail](Result<std::unique_ptr<Endpoint>> ep) {
              Result<core::SpiffeId> verified =
                  ep.ok() ? PeerIdentity((*ep)->ssl(), *check) : Result<core::SpiffeId>(ep.error());
              if (!verified.ok()) {
                DropSession(session_key);
                if (check->peer_revoked) AuditRevokedPeer("outbound", conn->peer.str(), *check);
                return fail("dataplane.outbound.handshake_failed", verified.error().message(),
                            check->failure);
              }
              const unsigned char* alpn = nullptr;
              unsigned int alpn_len = 0;
              SSL_get0_alpn_selected((*ep)->ssl(), &alpn, &alpn_len);
              if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_len) != mux::kAlpn2) {
                (*ep)->Abort();
                return fail("dataplane.outbound.refused", "the peer agent does not speak sigil/2",
                            "");
              }
              if (SSL_session_reused((*ep)->ssl()) == 1) counters.outbound_resumed++;
              // The preface comes through OpenSSL, and with it the session ticket before it.
              auto held = std::make_shared<std::unique_ptr<Endpoint>>(std::move(*ep));
              AsyncReadMessage(
                  loop, **held, 4096, options.handshake_timeout,
                  [](std::string_view b) -> ssize_t {
                    const size_t n = std::min(b.size(), mux::kServerPreface.size());
                    if (b.substr(0, n) != mux::kServerPreface.substr(0, n)) return -1;
                    return n == mux::kServerPreface.size() ? static_cast<ssize_t>(n) : 0;
                  },
                  [this, &loop, conn, held, fail](Result<std::pair<std::string, std::string>> m) {
                    if (!m.ok()) {
                      (*held)->Abort();
                      return fail("dataplane.outbound.refused",
                                  "sigil/2 preface: " + m.error().message(), "");
                    }
                    StartOutboundMux(loop, conn, std::move(*held), std::move(m->second));
                  });
            });
      });
}

void Proxy::Impl::StartOutboundMux(EventLoop& loop, std::shared_ptr<PooledConnection> conn,
                                   std::unique_ptr<Endpoint> ep, std::string leftover) {
  const uint64_t tracked =
      TrackConn(CaptureCertificates(ep->ssl()),
                "outbound pooled " + conn->source_id + " -> " + conn->peer.str());
  SwitchRecordLayer(*ep);
  counters.pool_connections++;
  log.Info("dataplane.outbound.pooled",
           {{"identity", conn->source_id}, {"peer", conn->peer.str()}});
  std::weak_ptr<PooledConnection> weak = conn;
  LoopPool* pool = pools.at(&loop).get();
  mux::MuxHooks hooks;
  hooks.on_reply = [this, weak](uint32_t id, int code, std::string_view reason) {
    auto pc = weak.lock();
    if (!pc) return;
    auto it = pc->awaiting_reply.find(id);
    if (it == pc->awaiting_reply.end()) return;
    std::shared_ptr<Outbound> c = std::move(it->second);
    pc->awaiting_reply.erase(it);
    if (code == 200) return;
    counters.outbound_denied++;
    host.Audit(code == 403 ? "dataplane.denied" : "dataplane.refused", c->source_id, c->origin.tgid,
               c->exe,
               {{"side", "outbound"},
                {"dst", c->dst.str()},
                {"service", c->service->name},
                {"code", code},
                {"reason", std::string(reason)}});
    nlohmann::json f = c->Fields();
    f["code"] = code;
    f["reason"] = std::string(reason);
    log.Warn("dataplane.outbound.refused_by_peer", f);
  };
  hooks.on_stream_end = [this, weak](const mux::StreamEnd& end) {
    counters.active_relays--;
    if (auto pc = weak.lock()) pc->awaiting_reply.erase(end.id);
  };
  hooks.on_closed = [this, weak, pool, tracked](const std::string& why) {
    UntrackConn(tracked);
    auto pc = weak.lock();
    if (!pc) return;
    Forget(*pool, pc->key, pc.get());
    log.Info("dataplane.outbound.pooled_closed",
             {{"identity", pc->source_id}, {"peer", pc->peer.str()}, {"reason", why}});
  };
  mux::MuxOptions mo;
  mo.client = true;
  mo.max_streams = options.pool_max_streams;
  mo.stream_idle_timeout = options.idle_timeout;
  mo.idle_close = options.pool_idle;
  conn->mux =
      mux::MuxConnection::Start(loop, std::move(ep), mo, std::move(hooks), std::move(leftover));
  SetConnCloser(tracked, [&loop, weak_mux = std::weak_ptr<mux::MuxConnection>(conn->mux)] {
    loop.Post([weak_mux] {
      if (auto m = weak_mux.lock()) m->Close("certificate revoked");
    });
  });
  auto waiting = std::move(conn->waiting);
  conn->waiting.clear();
  for (auto& c : waiting) {
    if (conn->mux->CanOpen()) {
      StartPooledStream(*conn, std::move(c));
    } else {
      // More waited than one connection carries: they go to a sibling.
      counters.outbound_failed++;
      log.Warn("dataplane.outbound.refused",
               {{"dst", c->dst.str()}, {"error", "pooled connection full"}});
      AbortSocket(std::move(c->workload));
    }
  }
}

}  // namespace sigil::dataplane
