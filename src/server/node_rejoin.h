// Node rejoin after expiry (issue 7; docs/control-plane.md, "Rejoin").
//
// A node whose SVID expired (host asleep, long outage) can no longer call the agent API: its
// client certificate fails the handshake. Instead of a new join token it may call Rejoin over
// server-authenticated TLS without a client certificate, presenting the expired chain, a CSR
// for a NEW key, a timestamp, and a signature by the EXPIRED SVID's key over
// core::RejoinMessage (core/rejoin_proof.h). ControlPlane::RejoinNode (node_rejoin.cc) issues a
// new node SVID only if every one of these holds:
//
//   - rejoin is enabled (ControlPlaneOptions::node_rejoin_grace > 0, `--node-rejoin-grace`);
//   - the leaf is a node SVID of this trust domain, spiffe://TD/sigil/node/NAME, for the node
//     name in the request;
//   - the node is registered and not revoked (node record), and neither the leaf's serial nor
//     the node's SPIFFE ID is covered by a Revocation;
//   - the leaf's serial is the node's current serial in the store: the LAST SVID issued to it,
//     so an older or superseded certificate is useless, and a rejoin consumes it (the store
//     swaps the serial only if it is still the presented one: Store::RecordNodeSvid's
//     expected_serial);
//   - the leaf has expired (a valid SVID renews through RenewNodeSVID instead), and not longer
//     ago than the grace period;
//   - the chain validates against the CURRENT trust bundle at a time just before the leaf's
//     notAfter (its CA must still be in the bundle);
//   - |timestamp - now| <= kRejoinMaxClockSkew;
//   - the signature verifies with the leaf's public key;
//   - the CSR is well formed, self-signed, of an allowed key type, and for a key other than
//     the expired one.
//
// Success: the new SVID (node_svid_ttl) is recorded like a renewal, with a "node.rejoin" audit
// record (serial, previous_serial, expires, expired_for_s, peer) in the same transaction.
// Refusal: a "node.rejoin.denied" record with the reason, and PermissionDenied
// (kRejoinRefused) that does not say which check failed.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/clock.h"

namespace sigil::server {

inline constexpr Seconds kRejoinMaxClockSkew{300};

// What every refused rejoin answers (the audit record has the reason).
inline constexpr std::string_view kRejoinRefused =
    "rejoin refused: the node SVID is not eligible (expired longer than the grace period, "
    "revoked, superseded, or the proof is invalid)";

struct NodeRejoinRequest {
  std::string node_name;
  std::span<const uint8_t> expired_chain_der;  // leaf first
  std::span<const uint8_t> csr_der;            // PKCS#10 for the new key
  int64_t timestamp = 0;                       // unix seconds, the node's clock
  std::span<const uint8_t> signature;          // core::SignRejoin by the expired SVID's key
};

}  // namespace sigil::server
