// Inbound sigil/2: a peer agent's pooled connection. The client SVID was verified in the
// handshake (once for the connection: every stream on it belongs to that identity, see
// docs/dataplane.md "Pooled connections"); each OPEN passes the same checks as a sigil/1
// request line (DecideInbound) and is audited the same way when refused.
#include "dataplane/protocol/proxy_v2.h"
#include "dataplane/proxy/proxy_impl.h"
#include "dataplane/proxy/xfcc_filter.h"

namespace sigil::dataplane {

void Proxy::Impl::ServeInboundMux(EventLoop& loop, std::shared_ptr<Inbound> c,
                                  core::SpiffeId source) {
  counters.inbound_pooled++;
  AsyncWriteAll(loop, *c->client, std::string(mux::kServerPreface), options.handshake_timeout,
                [this, &loop, c, source](Result<void> w) {
                  if (!w.ok()) {
                    c->client->Abort();
                    return;
                  }
                  SwitchRecordLayer(*c->client);
                  StartInboundMux(loop, c, source);
                });
}

void Proxy::Impl::StartInboundMux(EventLoop& loop, std::shared_ptr<Inbound> c,
                                  core::SpiffeId source) {
  log.Info("dataplane.inbound.pooled", c->Fields());
  // The hooks reach the connection through this holder (set right after Start; hooks never
  // run before Start returns).
  auto self = std::make_shared<std::weak_ptr<mux::MuxConnection>>();
  mux::MuxHooks hooks;
  hooks.on_open = [this, &loop, c, self, source](uint32_t id, const Destination& dst) {
    auto m = self->lock();
    if (!m) return;
    InboundDecision d = DecideInbound(*c, source, dst);
    if (d.code != 200) {
      AuditInboundRefusal(*c, d.code, d.reason);
      return m->Refuse(id, d.code, d.reason);
    }
    std::string prefix;
    std::optional<std::string> xfcc;  // the header value, for xfcc Services
    if (d.service->forwarding == PeerForwarding::kProxyV2) {
      prefix = EncodeProxyV2(c->remote, dst, c->source_id);
    } else if (d.service->forwarding == PeerForwarding::kXfcc) {
      xfcc = XfccValue(d.service->identity ? d.service->identity->str() : "", c->peer_cert_sha256,
                       c->source_id);
    }
    AsyncConnect(loop, dst.ToSockaddr(), options.connect_timeout,
                 [this, c, self, id, dst, prefix = std::move(prefix), xfcc,
                  name = d.service->name](Result<OwnedFd> app) {
                   auto conn = self->lock();
                   if (!conn) return;  // the connection ended meanwhile; `app` closes here
                   if (!app.ok()) {
                     const std::string reason = "local application: " + app.error().message();
                     AuditInboundRefusal(*c, 502, reason);
                     return conn->Refuse(id, 502, reason);
                   }
                   counters.inbound_relayed++;
                   counters.inbound_streams++;
                   counters.active_relays++;
                   log.Info("dataplane.inbound.accepted", {{"peer", c->remote.str()},
                                                           {"identity", c->source_id},
                                                           {"service", name},
                                                           {"dst", dst.str()},
                                                           {"stream", id}});
                   std::unique_ptr<mux::StreamFilter> filter;
                   if (xfcc) filter = std::make_unique<XfccFilter>(*xfcc);
                   conn->Accept(id, std::move(*app), prefix, std::move(filter));
                 });
  };
  hooks.on_stream_end = [this](const mux::StreamEnd&) { counters.active_relays--; };
  const uint64_t tracked = TrackConn(c->certs, "inbound pooled " + c->source_id);
  hooks.on_closed = [this, c, tracked](const std::string& why) {
    UntrackConn(tracked);
    nlohmann::json f = c->Fields();
    f["reason"] = why;
    log.Info("dataplane.inbound.pooled_closed", f);
  };
  mux::MuxOptions mo;
  mo.client = false;
  mo.max_streams = options.pool_max_streams;
  mo.stream_idle_timeout = options.idle_timeout;
  // The client closes idle connections; the server only ends ones the client forgot.
  mo.idle_close = options.pool_idle * 4;
  auto mux_conn = mux::MuxConnection::Start(loop, std::move(c->client), mo, std::move(hooks));
  *self = mux_conn;
  SetConnCloser(tracked, [&loop, weak = std::weak_ptr<mux::MuxConnection>(mux_conn)] {
    loop.Post([weak] {
      if (auto m = weak.lock()) m->Close("certificate revoked");
    });
  });
}

}  // namespace sigil::dataplane
