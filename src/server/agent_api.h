// The agent API (gRPC service sigil.agent.v1.AgentService): a thin adapter over ControlPlane.
// See docs/control-plane.md, "Agent API".
//
// Transport: TLS with the server's own SVID (spiffe://TD/sigil/server, DNS SANs for the
// address agents dial). Client certificates are requested and, when sent, verified by gRPC
// against the bundle roots; Join and Rejoin are the only RPCs that work without one. Every
// other RPC authenticates its caller again per call (defense in depth): the peer certificate
// must verify as an X.509-SVID against the current bundle, name spiffe://TD/sigil/node/<name>,
// and that node must exist in the store and not be revoked.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <grpcpp/grpcpp.h>

#include "common/result.h"
#include "common/secret_bytes.h"
#include "proto/agent.grpc.pb.h"
#include "server/change_feed.h"
#include "server/control_plane.h"

namespace sigil::server {

// How often a node's last_seen is written at most (authenticated calls in between skip it).
inline constexpr Seconds kNodeLastSeenInterval{60};
// Sync: how long one wait for a store commit lasts before cancellation/bundle are re-checked.
inline constexpr std::chrono::milliseconds kSyncPollInterval{1000};
// Verified peer certificates remembered (AuthenticateNode); the cache is reset when full.
inline constexpr size_t kPeerCacheEntries = 16384;
// Sync: change-log page size.
inline constexpr uint32_t kSyncPageSize = 500;

// Our error codes mapped to gRPC status codes, message kept.
grpc::Status ToGrpcStatus(const Error& error);

// Resource kinds an agent receives through Sync. CredentialSource is deliberately absent:
// credential-source secrets never leave the server.
bool KindSyncedToAgents(std::string_view kind);

class AgentApi final : public sigil::agent::v1::AgentService::Service {
 public:
  // Starts the change feed that Sync streams share (see change_feed.h). If it cannot start,
  // streams read the store themselves.
  explicit AgentApi(ControlPlane& control_plane);
  ~AgentApi() override;
  // Optional: open Sync streams are reported as sigil_agents_connected (not owned).
  void AttachMetrics(metrics::ServerMetrics* metrics) { metrics_ = metrics; }

  // Makes running Sync streams return (OK) within about kSyncPollInterval. Call before
  // grpc::Server::Shutdown, which otherwise waits for the streams to end.
  void Shutdown();

  grpc::Status Join(grpc::ServerContext* context, const sigil::agent::v1::JoinRequest* request,
                    sigil::agent::v1::JoinResponse* response) override;
  grpc::Status RenewNodeSVID(grpc::ServerContext* context,
                             const sigil::agent::v1::RenewNodeSVIDRequest* request,
                             sigil::agent::v1::NodeSVIDResponse* response) override;
  grpc::Status Sync(grpc::ServerContext* context, const sigil::agent::v1::SyncRequest* request,
                    grpc::ServerWriter<sigil::agent::v1::SyncResponse>* writer) override;
  grpc::Status SignWorkloadSVID(grpc::ServerContext* context,
                                const sigil::agent::v1::SignWorkloadSVIDRequest* request,
                                sigil::agent::v1::SignWorkloadSVIDResponse* response) override;
  grpc::Status MintJWTSVID(grpc::ServerContext* context,
                           const sigil::agent::v1::MintJWTSVIDRequest* request,
                           sigil::agent::v1::MintJWTSVIDResponse* response) override;
  grpc::Status FetchCredential(grpc::ServerContext* context,
                               const sigil::agent::v1::FetchCredentialRequest* request,
                               sigil::agent::v1::FetchCredentialResponse* response) override;
  grpc::Status ReportEvents(grpc::ServerContext* context,
                            const sigil::agent::v1::ReportEventsRequest* request,
                            sigil::agent::v1::ReportEventsResponse* response) override;
  // Without a client certificate, like Join: a node whose SVID expired proves it holds that
  // SVID's key (node_rejoin.h; implemented in node_rejoin.cc).
  grpc::Status Rejoin(grpc::ServerContext* context, const sigil::agent::v1::RejoinRequest* request,
                      sigil::agent::v1::NodeSVIDResponse* response) override;

  // The authenticated node behind a call: verifies the peer certificate as described above
  // and refreshes last_seen (at most every kNodeLastSeenInterval). Unauthenticated without a
  // valid SVID; PermissionDenied for a non-node identity, an unknown/revoked node, or a node
  // SVID whose serial is revoked (`sigil revoke svid`).
  Result<store::NodeRecord> AuthenticateNode(const grpc::ServerContext& context);

 private:
  // Writes the snapshot (all synced kinds at one revision + the bundle); returns its revision.
  Result<uint64_t> SendSnapshot(grpc::ServerWriter<sigil::agent::v1::SyncResponse>* writer,
                                const std::string& bundle_jwks);

  // The next page of changes after `revision`: from the feed's memory when it holds them,
  // else from the store.
  Result<store::ChangePage> NextChanges(uint64_t revision);

  struct VerifiedPeer {
    core::SpiffeId id;
    std::shared_ptr<const core::TrustBundle> bundle;  // verified against exactly this bundle
    TimePoint not_after;
    std::string serial;  // the leaf's, as core::Certificate::SerialHex (revocation check)
  };

  // Parses and path-validates a peer chain against `bundle`; caches the result under
  // `cache_key` until the chain's earliest expiry.
  Result<VerifiedPeer> VerifyPeer(const std::string& leaf_pem, const std::string& chain_pem,
                                  const std::shared_ptr<const core::TrustBundle>& bundle,
                                  TimePoint now, const std::string& cache_key);

  ControlPlane& cp_;
  ChangeFeed feed_;
  // The last consistent snapshot SendSnapshot built, reused at the same revision and bundle.
  std::mutex snapshot_mu_;
  std::shared_ptr<const sigil::agent::v1::SyncResponse> snapshot_;  // guarded by snapshot_mu_
  std::mutex peer_cache_mu_;
  std::unordered_map<std::string, VerifiedPeer> peer_cache_;  // guarded by peer_cache_mu_
  metrics::ServerMetrics* metrics_ = nullptr;
  std::atomic<int64_t> sync_streams_{0};
  std::atomic<bool> shutting_down_{false};
};

struct ServerTlsIdentity {
  std::string chain_pem;      // the server SVID, leaf first
  SecretBytes key_pem;        // its private key
  std::string client_ca_pem;  // roots client certificates must chain to (the bundle roots)
  // Alternatively, files kept current by ServerIdentity (key, chain, roots): when key_file is
  // set the PEM fields above are ignored and gRPC re-reads the files every refresh_seconds,
  // so renewals and CA rotations apply to new connections without a restart.
  std::string key_file{};
  std::string chain_file{};
  std::string roots_file{};
  unsigned refresh_seconds = 10;
};

// Builds and starts a gRPC server for `service` on `listen_addr` ("127.0.0.1:0" picks a
// port, written to *bound_port). The caller owns the server: service.Shutdown(), then
// server->Shutdown(deadline).
Result<std::unique_ptr<grpc::Server>> StartAgentApi(AgentApi& service,
                                                    const std::string& listen_addr,
                                                    const ServerTlsIdentity& tls, int* bound_port);

}  // namespace sigil::server
