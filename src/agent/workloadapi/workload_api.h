// WorkloadApiService: the SPIFFE Workload API (spiffe-reference.md section 5) over a
// WorkloadSource. Wire-compatible with the standard's proto (no package: /SpiffeWorkloadAPI/...).
//
// Every RPC, in this order:
//   1. security header `workload.spiffe.io: true`, else INVALID_ARGUMENT (caller.h);
//   2. mandatory request fields, else INVALID_ARGUMENT ("audience must be specified", ...);
//   3. caller identified from its connection's peer credentials and attested through the
//      connection's pidfd (caller.h): PERMISSION_DENIED / UNAVAILABLE on failure.
//
// FetchX509SVID (stream): first message at once: every SVID the caller holds (svids[0] is the
//   default; x509_svid = DER chain leaf first, x509_svid_key = PKCS#8 DER, bundle = DER of the
//   SVID's trust domain authorities, hint = WorkloadIdentity name) and federated_bundles for
//   every other trust domain. None -> the stream ends PERMISSION_DENIED "no identity issued".
//   Then, whenever the source's generation moves, recomputed (the source caches) and re-sent
//   only if the ids, hints, certificates or bundles changed; once the caller holds nothing the
//   stream ends PERMISSION_DENIED (the client must stop using its SVIDs, standard 5.2.1).
// FetchX509Bundles / FetchJWTBundles (streams): every trust domain's X.509 authorities (DER) /
//   JWT keys (JWKS, jwt-svid keys only), keyed "spiffe://<td>"; re-sent on change. Entitlement
//   (standard 5.2.2 / 6.2.2 leave it to the server: "If the client is not entitled to receive
//   any ... bundles ... PermissionDenied"): as SPIRE by default, only callers holding at least
//   one identity get bundles; others get PERMISSION_DENIED "no identity issued", also later in
//   the stream when they lose their last identity. `allow_unauthenticated_verifiers` (SPIRE's
//   option of that name) serves bundles to any attested caller.
// FetchJWTSVID (unary): audience required (non-empty strings, at most max_jwt_audiences of at
//   most max_audience_bytes each); spiffe_id optional but must parse. PERMISSION_DENIED as the
//   source returns it, and when it returns nothing.
// ValidateJWTSVID (unary): audience and svid required. The caller must be attested (as every
//   call) but needs no identity, as in SPIRE: validation only uses public bundles. Validated
//   with core::ValidateJwtSvid against Bundles() and exactly that audience; any failure ->
//   INVALID_ARGUMENT (as SPIRE; the message never echoes the token). Returns the SPIFFE ID and
//   every claim as a google.protobuf.Struct (numbers as numbers; "aud" always a list).
//
// Streams end when the client cancels (CANCELLED), when the source is ShuttingDown() or
// BeginShutdown() was called (UNAVAILABLE, so clients reconnect with backoff), or on a source
// error (mapped by status_map.h). They notice cancellation and shutdown within `stream_poll`.
// A stream's attestation is the snapshot taken at its start.
//
// Nothing here logs, and no status message ever carries key bytes or tokens.
// Thread-safety: all methods may run concurrently (gRPC's sync server threads).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstddef>

#include "agent/attest/attest.h"
#include "agent/peer/peer_listener.h"
#include "agent/workloadapi/caller.h"
#include "agent/workloadapi/workload_source.h"
#include "common/clock.h"
#include "proto/workload.grpc.pb.h"

namespace sigil::agent::workloadapi {

struct ServiceOptions {
  // Longest a stream waits in WorkloadSource::WaitForChange before it re-checks cancellation
  // and shutdown (changes themselves wake it at once).
  // A sync gRPC handler cannot be woken by the client's cancel, so a one-shot client (fetch
  // the first response, cancel) holds a handler thread for up to this long; at 1 s the thread
  // cap (1024) limited such clients to ~1,000 calls/s (bench/agent_bench.sh). 200 ms keeps
  // idle streams at 5 cheap wake-ups/s each.
  std::chrono::milliseconds stream_poll{200};
  size_t max_jwt_audiences = 16;
  size_t max_audience_bytes = 1024;
  bool allow_unauthenticated_verifiers = false;  // bundles to attested callers with no identity
  CallerOptions caller;
  const Clock* clock = &Clock::System();  // "now" for ValidateJWTSVID
};

class WorkloadApiService final : public SpiffeWorkloadAPI::Service {
 public:
  // `source`, `attestor` and `listener` are borrowed and must outlive the service. (Pass a typed
  // `const peer::PeerListener*`: a bare nullptr is ambiguous with the PeerLookup overload.)
  WorkloadApiService(WorkloadSource& source, const peer::PeerListener* listener,
                     attest::Attestor& attestor, ServiceOptions options = {});
  WorkloadApiService(WorkloadSource& source, PeerLookup peer_lookup, attest::Attestor& attestor,
                     ServiceOptions options = {});

  // Every open stream ends UNAVAILABLE within stream_poll; new calls fail UNAVAILABLE.
  // Idempotent. (grpc::Server::Shutdown cancels calls too; this also covers its grace period.)
  void BeginShutdown() { stopping_.store(true); }

  grpc::Status FetchX509SVID(grpc::ServerContext* context, const X509SVIDRequest* request,
                             grpc::ServerWriter<X509SVIDResponse>* writer) override;
  grpc::Status FetchX509Bundles(grpc::ServerContext* context, const X509BundlesRequest* request,
                                grpc::ServerWriter<X509BundlesResponse>* writer) override;
  grpc::Status FetchJWTSVID(grpc::ServerContext* context, const JWTSVIDRequest* request,
                            JWTSVIDResponse* response) override;
  grpc::Status FetchJWTBundles(grpc::ServerContext* context, const JWTBundlesRequest* request,
                               grpc::ServerWriter<JWTBundlesResponse>* writer) override;
  grpc::Status ValidateJWTSVID(grpc::ServerContext* context, const ValidateJWTSVIDRequest* request,
                               ValidateJWTSVIDResponse* response) override;

 private:
  // Header check, shutdown check, then attestation.
  grpc::Status Begin(const grpc::ServerContext& context, attest::AttestedProcess* process,
                     bool check_header = true) const;
  grpc::Status CheckBundleEntitlement(const attest::AttestedProcess& process) const;
  // Blocks until the source's generation differs from *generation (updated) -> OK, or the
  // call is cancelled / the service stops -> that status.
  grpc::Status WaitForChange(grpc::ServerContext& context, uint64_t* generation) const;
  grpc::Status StopStatus(grpc::ServerContext& context) const;

  WorkloadSource& source_;
  CallerIdentifier caller_;
  const ServiceOptions options_;
  std::atomic<bool> stopping_{false};
};

}  // namespace sigil::agent::workloadapi
