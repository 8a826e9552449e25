// Revocation in the data plane (docs/dataplane.md, "Revocation"): established connections are
// tracked with the certificates they were authenticated with (both ends' leaves, recorded right
// after the handshake), and when the agent's revocations change, every connection one of them
// covers is reset. Session tickets are forgotten as well: a resumed handshake re-checks the
// peer's certificate against the revocations anyway (svid_tls.cc), but a ticket for a revoked
// local SVID must not be offered again.
#include "dataplane/proxy/proxy_impl.h"

namespace sigil::dataplane {

uint64_t Proxy::Impl::TrackConn(ConnCertificates certs, std::string what) {
  std::lock_guard lock(live_mu);
  const uint64_t id = live_next++;
  live.emplace(id, LiveConn{std::move(certs), std::move(what), {}});
  return id;
}

void Proxy::Impl::SetConnCloser(uint64_t id, std::function<void()> close) {
  std::lock_guard lock(live_mu);
  if (auto it = live.find(id); it != live.end()) it->second.close = std::move(close);
}

void Proxy::Impl::UntrackConn(uint64_t id) {
  std::lock_guard lock(live_mu);
  live.erase(id);
}

void Proxy::Impl::CloseRevoked() {
  auto revoked = host.Revocations();
  {
    std::lock_guard lock(session_mu);
    sessions.clear();
  }
  if (!revoked || revoked->empty()) return;
  struct Victim {
    LiveConn conn;
    std::string side;  // which certificate is revoked: "local" or "peer"
    std::string why;
  };
  std::vector<Victim> victims;
  {
    std::lock_guard lock(live_mu);
    for (auto it = live.begin(); it != live.end();) {
      const ConnCertificates& c = it->second.certs;
      const core::RevocationSet::Entry* e = revoked->FindCertificate(c.peer_serial, c.peer_id);
      std::string side = "peer";
      if (e == nullptr) {
        e = revoked->FindCertificate(c.local_serial, c.local_id);
        side = "local";
      }
      if (e == nullptr) {
        ++it;
        continue;
      }
      victims.push_back({std::move(it->second), side, core::RevocationSet::Describe(*e)});
      it = live.erase(it);  // the relay's own Untrack then finds nothing
    }
  }
  for (auto& v : victims) {
    counters.revoked_closed++;
    if (v.conn.close) v.conn.close();
    const ConnCertificates& c = v.conn.certs;
    nlohmann::json fields = {{"conn", v.conn.what}, {"revoked", v.side},
                             {"local", c.local_id}, {"local_serial", c.local_serial},
                             {"peer", c.peer_id},   {"peer_serial", c.peer_serial},
                             {"why", v.why}};
    log.Warn("dataplane.revoked.closed", fields);
    fields["action"] = "closed";
    host.Audit("dataplane.revoked", v.side == "peer" ? c.peer_id : c.local_id, 0, "", fields);
  }
  if (!victims.empty()) {
    log.Info("dataplane.revocation.applied",
             {{"closed", victims.size()}, {"revocations", revoked->size()}});
  }
}

void Proxy::Impl::AuditRevokedPeer(const std::string& side, const std::string& peer,
                                   const PeerCheck& check) {
  counters.revoked_refused++;
  host.Audit(
      "dataplane.revoked", "", 0, "",
      {{"action", "handshake_refused"}, {"side", side}, {"peer", peer}, {"why", check.failure}});
}

}  // namespace sigil::dataplane
