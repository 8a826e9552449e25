// Identifying the caller of a Workload API (or extension) RPC, shared by every service on the
// endpoint.
//
// 1. Security header: the call must carry exactly one `workload.spiffe.io` metadata entry whose
//    value is exactly "true" (case-sensitive), else INVALID_ARGUMENT "security header missing
//    from request" (spiffe-reference.md section 5; the client must not retry). This is checked
//    before anything else, so a browser or a confused HTTP client never triggers attestation.
// 2. Peer: the PeerInfo (SO_PEERCRED + pidfd) the PeerListener recorded for the call's
//    connection. None (the call did not come through the listener, or its connection is gone)
//    -> PERMISSION_DENIED: the caller cannot be identified, so it holds nothing.
// 3. Attestation with Attestor::AttestPidfd(peer.pid, peer.pidfd): the pidfd taken from the
//    connection pins the process that connected, so a pid recycled after the caller exited is
//    never attested in its place (attest.h). Never by pid alone. Aborted (the process exec'd or
//    changed credentials mid-attestation) is retried `attest_retries` times, then UNAVAILABLE.
//    The process is gone or cannot be described (NotFound, FailedPrecondition, InvalidArgument,
//    ResourceExhausted, PermissionDenied from /proc) -> PERMISSION_DENIED; anything else
//    (Internal, Unimplemented, ...) -> UNAVAILABLE. Messages name the pid and the failing step.
//
// The attestation is a snapshot taken when the call starts; a stream keeps serving what that
// snapshot is entitled to (as SPIRE does). Thread-safe (const; Attestor is thread-safe).
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <optional>
#include <string_view>

#include "agent/attest/attest.h"
#include "agent/attest/attested_process.h"
#include "agent/peer/peer_creds.h"
#include "agent/peer/peer_listener.h"

namespace sigil::agent::workloadapi {

inline constexpr std::string_view kSecurityHeaderKey = "workload.spiffe.io";
inline constexpr std::string_view kSecurityHeaderValue = "true";

// The peer of the connection a call arrived on, or nullopt. Called from within the handler.
using PeerLookup = std::function<std::optional<peer::PeerInfo>(const grpc::ServerContext&)>;

// A lookup backed by `listener` (borrowed; must outlive every call). nullptr: never a peer.
PeerLookup PeerLookupFor(const peer::PeerListener* listener);

struct CallerOptions {
  int attest_retries = 3;  // extra attempts when attestation returns Aborted
  // Refuse callers whose pidfd came from the pidfd_open(pid) fallback (kernel < 6.5 without
  // SO_PEERPIDFD), which can race with pid reuse (peer_creds.h). Off by default, as SPIRE.
  bool require_socket_pidfd = false;
};

// OK when the security header is present exactly once with value "true".
grpc::Status CheckSecurityHeader(const grpc::ServerContext& context);

class CallerIdentifier {
 public:
  CallerIdentifier(PeerLookup lookup, attest::Attestor& attestor, CallerOptions options = {});

  // Steps 2 and 3 above (the header is checked separately, before request validation).
  grpc::Status Identify(const grpc::ServerContext& context, attest::AttestedProcess* out) const;

 private:
  PeerLookup lookup_;
  attest::Attestor& attestor_;
  CallerOptions options_;
};

}  // namespace sigil::agent::workloadapi
