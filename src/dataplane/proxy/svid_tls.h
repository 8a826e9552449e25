// TLS contexts built from X.509-SVIDs for the sigil/1 data plane, and SPIFFE peer verification
// inside the handshake (the peer's chain is checked against the bundle of its own trust domain
// with core::VerifyX509Svid; hostnames play no part).
//
// Every context: TLS 1.3 only, the SVID chain and key, a certificate-verify callback that
// requires a valid peer SVID. Client contexts offer ALPN sigil/1; server contexts refuse any
// other protocol. The per-connection check (bundles, expected peer ID) travels on the SSL
// object (AttachPeerCheck) and carries the verified ID back out.
#pragma once

#include <openssl/ssl.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "agent/workloadapi/workload_source.h"
#include "common/ossl.h"
#include "common/result.h"
#include "core/revocation_set.h"
#include "core/spiffe_id.h"
#include "core/trust_bundle.h"

namespace sigil::dataplane {

struct PeerCheck {
  core::BundleSet bundles;
  // Certificates the control plane revoked: a peer leaf they cover fails verification.
  std::shared_ptr<const core::RevocationSet> revoked;
  std::optional<core::SpiffeId> expect;  // the peer must present exactly this ID
  // Filled by the handshake: the verified peer ID, or why verification failed.
  std::optional<core::SpiffeId> verified;
  std::string failure;
  bool peer_revoked = false;  // the failure is a revoked peer certificate
  // Client side: called with each session ticket the server sends (takes a reference).
  std::function<void(SSL_SESSION*)> on_session;
};

enum class TlsRole { kClient, kServer };

Result<SslCtxPtr> MakeSvidContext(const agent::workloadapi::X509SvidGrant& grant, TlsRole role);
// A server context without a certificate: its servername callback must switch each connection
// to a context from MakeSvidContext (SSL_set_SSL_CTX) before the certificate is chosen.
Result<SslCtxPtr> MakeBaseServerContext();

// Attaches `check` to `ssl` (kept alive by the SSL; read it back with PeerCheckOf).
void AttachPeerCheck(SSL* ssl, std::shared_ptr<PeerCheck> check);
PeerCheck* PeerCheckOf(SSL* ssl);

// The verified peer of a finished handshake. A full handshake verified it in the callback; a
// resumed one (TLS 1.3 PSK with (EC)DHE, no certificates exchanged) is checked again here from
// the certificate the session carries: valid now, chaining to the current bundle, and equal to
// check.expect when set. Unauthenticated otherwise.
Result<core::SpiffeId> PeerIdentity(SSL* ssl, PeerCheck& check);

// The certificates a finished handshake was authenticated with, recorded before the SSL is
// freed, so revocations can find the connection later.
struct ConnCertificates {
  std::string local_serial, local_id, peer_serial, peer_id;
};
ConnCertificates CaptureCertificates(SSL* ssl);

}  // namespace sigil::dataplane
