// Agent: the node agent's core. Joins (once) or restores its node identity, keeps the Sync
// stream with the server, renews its node SVID and the workloads' SVIDs at half-life, and
// answers the Workload API (it implements workloadapi::WorkloadSource).
//
// Threads: `sync` (the Sync stream; reconnects from the last revision with jittered
// exponential backoff) and `maintenance` (node SVID renewal, workload SVID renewal, expiry
// checks, expired credential grants, once per second). Workload API calls run on gRPC's threads.
// While the server is unreachable the agent keeps serving what it holds: cached SVIDs until they
// expire, the synced WorkloadIdentity set and bundle.
//
// Lifecycle on disk: see node_state.h. First start needs a join token; later starts use the
// stored node key and SVID. If the node SVID expired while the agent was down, cut off or its
// host asleep, the server no longer accepts it for mTLS: the agent rejoins with the expired
// SVID's key (Rejoin RPC, without a client certificate; the server allows it within its
// --node-rejoin-grace), at once and then every 30 s while the server is unreachable. If the
// server refuses, the agent says so in its log with the command that fixes it (a new join
// token), keeps serving cached state meanwhile, and asks again every 5 minutes.
//
// Several server replicas (ServerAddresses): the agent uses one address at a time. When the
// Sync stream or a unary call finds the server unreachable, it moves to the next address
// (`server.failover`), reconnects at once and retries an UNAVAILABLE call there once; the Sync
// backoff applies only after every address was tried.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "agent/core/event_reporter.h"
#include "agent/core/node_state.h"
#include "agent/core/server_addresses.h"
#include "agent/core/server_connection.h"
#include "agent/core/svid_cache.h"
#include "agent/core/synced_state.h"
#include "agent/creds/binding_index.h"
#include "agent/creds/grant_cache.h"
#include "agent/workloadapi/workload_source.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/result.h"
#include "core/certificate.h"
#include "core/keys.h"

namespace sigil::agent {

struct AgentOptions {
  // HOST:PORT of the agent API, one per server replica (ParseServerAddresses). Required on
  // first start; given on a later start, it replaces the stored list.
  std::vector<std::string> servers;
  std::string data_dir;    // node state (node_state.h)
  std::string join_token;  // first start only
  std::string node_name;   // default: the host name
  const Clock* clock = &Clock::System();
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds max_backoff{30000};
};

struct AgentHealth {
  bool synced = false;  // a Sync stream is open and delivered its snapshot
  uint64_t revision = 0;
  std::string node_spiffe_id;
  TimePoint node_svid_expiry;
  size_t svids_held = 0;
  size_t resources = 0;
  std::string last_error;
  std::string server;             // the address in use
  uint64_t server_failovers = 0;  // moves to another address since start
};

// The identities a process holds: WorkloadIdentitySpec::IdFor, the rule the server also
// enforces (ControlPlane::HeldIdentities).
struct MatchedIdentity {
  const resources::WorkloadIdentitySpec* spec;
  core::SpiffeId id;
};
std::vector<MatchedIdentity> MatchIdentities(
    const std::vector<resources::WorkloadIdentitySpec>& identities, const std::string& node,
    const core::TrustDomain& trust_domain, uint32_t uid, const std::vector<std::string>& selectors);

// The attested process as the agent API carries it (selectors included).
sigil::agent::v1::AttestedProcess ToProto(const attest::AttestedProcess& process);

class Agent final : public workloadapi::WorkloadSource {
 public:
  // Joins or restores, then starts the threads. Errors name what the operator must fix.
  static Result<std::unique_ptr<Agent>> Start(AgentOptions options, Logger& log);
  ~Agent() override;
  void Stop();

  AgentHealth Health() const;
  const std::string& node_name() const { return node_.node_name; }
  const core::TrustDomain& trust_domain() const { return trust_domain_; }
  // Queues an event for the server's audit trail (EventReporter); never blocks.
  void ReportEvent(sigil::agent::v1::AgentEvent event);
  // What the server synced (Services and AccessPolicies for the data plane, among others).
  const SyncedState& state() const { return state_; }
  // Revocations as last synced (docs/agent.md, "Revocation"); the data plane checks peers
  // against them and closes connections they cover.
  std::shared_ptr<const core::RevocationSet> revocations() const { return state_.revocations(); }
  // True once the server revoked this node: the agent then serves no SVID or credential.
  bool node_revoked() const { return node_revoked_.load(); }

  // Credentials (docs/agent.md, "Credential grants"). A grant of `binding` for `process`:
  // from the GrantCache when one is held for an identity the process holds and the binding
  // allows, else from the server's FetchCredential (which re-checks and audits grants and
  // refusals; refusals are never cached). For a `svid-pem` file binding, the process's own
  // X.509-SVID (source_type "x509-svid", the PKCS#8 key as the secret). Thread-safe; blocks
  // for at most one server call (kServerCallTimeout), and one more on the next replica when the
  // first answered UNAVAILABLE or, with several replicas, did not answer within
  // kReplicaAttemptTimeout (CallServer). PermissionDenied/NotFound: refused.
  Result<creds::CredentialGrantHandle> FetchCredential(const std::string& binding,
                                                       const attest::AttestedProcess& process);
  // The synced CredentialBindings, parsed (a snapshot; cheap when nothing changed).
  std::shared_ptr<const creds::BindingSet> CredentialBindings() const;
  // The identities `process` holds that `binding` allows, by the agent's synced view.
  std::vector<std::string> BindingIdentities(const creds::BindingInfo& binding,
                                             const attest::AttestedProcess& process) const;
  size_t credential_grants_held() const { return grants_.size(); }

  // WorkloadSource
  Result<std::vector<workloadapi::X509SvidGrant>> X509Svids(
      const attest::AttestedProcess& process) override;
  Result<std::vector<workloadapi::JwtSvidGrant>> JwtSvids(const attest::AttestedProcess& process,
                                                          const std::vector<std::string>& audience,
                                                          const std::string& spiffe_id) override;
  Result<std::vector<workloadapi::IdentityExplanation>> Explain(
      const attest::AttestedProcess& process) override;
  core::BundleSet Bundles() override;
  uint64_t Generation() override { return state_.generation(); }
  uint64_t WaitForChange(uint64_t seen, std::chrono::milliseconds timeout) override {
    return state_.WaitForChange(seen, timeout);
  }
  bool ShuttingDown() override { return stopping_.load(); }

 private:
  Agent(AgentOptions options, Logger& log, NodeState node, core::TrustDomain td);
  Result<void> Connect();        // (re)builds the connection from node_, the bundle and the address
  Result<void> ConnectLocked();  // the same, connect_mu_ held
  // The connection and the ServerAddresses epoch of the address it was built for.
  struct Link {
    std::shared_ptr<ServerConnection> conn;
    uint64_t epoch = 0;
  };
  Link link() const;
  // A call on the connection of `epoch` found the server unreachable (UNAVAILABLE, or no answer
  // before its deadline): moves to the next address if that connection is still the current one
  // (logs server.failover, reconnects; after a deadline also cancels a Sync stream open on the
  // old address). True when the current connection is now for another address than `epoch`'s.
  bool FailoverFrom(uint64_t epoch, std::string_view what, const grpc::Status& status);
  // Runs a unary call on the current connection, with `timeout` as its deadline. Unreachable:
  // fails over; after UNAVAILABLE it runs the call once more on the next address. A
  // `repeatable` call (signing, credential fetch: nothing is consumed) is also run again after
  // a deadline, and with several addresses each attempt gets kReplicaAttemptTimeout rather than
  // kServerCallTimeout, so a frozen replica costs seconds, not the whole deadline.
  enum class Repeat { kAfterUnavailable, kAlsoAfterDeadline };
  grpc::Status CallServer(
      std::string_view what, Repeat repeat,
      const std::function<grpc::Status(ServerConnection&, std::chrono::seconds timeout)>& call);
  void SyncLoop();
  void MaintenanceLoop();
  void RenewNodeSvidIfDue();
  // The node SVID expired: Rejoin when the retry pacing allows (maintenance thread only).
  void RejoinIfDue(TimePoint not_after);
  Result<core::Certificate> Rejoin();  // the new leaf
  // One Rejoin RPC to `address` (server-authenticated TLS without a client certificate).
  Result<core::Certificate> RejoinAt(const std::string& address);
  // After a renewal or rejoin: checks the SVID the server returned for `key`, saves both
  // (SaveNodeCredential), installs them and rebuilds the connection. Returns the leaf.
  Result<core::Certificate> InstallNodeSvid(const std::string& chain_der,
                                            const core::PrivateKey& key);
  // Makes the Sync loop retry now if it is waiting in its backoff (after a rejoin).
  void WakeSync();
  // After a Sync message changed the revocations: drops covered SVIDs and grants.
  void ApplyRevocations(const core::RevocationSet& revoked);
  void MarkNodeRevoked(const std::string& why);
  Result<void> CheckNotRevoked() const;
  // Unavailable until the first Sync snapshot since start: before it the agent cannot tell a
  // process without an identity from one whose identity it has not learned yet.
  Result<void> CheckSynced() const;
  bool SleepFor(std::chrono::milliseconds d);  // false when stopping
  // The Sync loop's backoff: like SleepFor, but also returns once WakeSync ran after `seen`
  // (sync_wakes_) was read.
  bool SleepForSync(std::chrono::milliseconds d, uint64_t seen);
  std::string RootsPem() const;
  Result<std::shared_ptr<const creds::CredentialGrant>> CallFetchCredential(
      const std::string& binding, const sigil::agent::v1::AttestedProcess& process);
  Result<creds::CredentialGrantHandle> OwnSvidGrant(const std::string& binding,
                                                    const attest::AttestedProcess& process);

  const AgentOptions options_;
  Logger& log_;
  const core::TrustDomain trust_domain_;
  SyncedState state_;
  std::unique_ptr<SvidCache> svids_;
  std::unique_ptr<EventReporter> reporter_;
  creds::GrantCache grants_;
  mutable creds::BindingIndex bindings_;

  // Guards every change of the address and every (re)build of conn_, so the connection
  // installed is always for the current address (taken before mu_).
  std::mutex connect_mu_;
  std::unique_ptr<ServerAddresses> addresses_;  // set once in Start

  mutable std::mutex mu_;
  NodeState node_;                                  // guarded by mu_ (credential fields)
  TimePoint node_not_before_{}, node_not_after_{};  // guarded by mu_
  TimePoint node_issued_at_{};                      // guarded by mu_ (renewal base)
  std::shared_ptr<ServerConnection> conn_;          // guarded by mu_
  uint64_t conn_epoch_ = 0;                         // guarded by mu_: conn_'s address epoch
  grpc::ClientContext* sync_ctx_ = nullptr;         // guarded by mu_: the open Sync call
  uint64_t sync_epoch_ = 0;                         // guarded by mu_: its address epoch
  bool synced_ = false;                             // guarded by mu_
  std::string last_error_;                          // guarded by mu_
  bool expiry_reported_ = false;                    // guarded by mu_

  std::atomic<bool> stopping_{false};
  std::atomic<bool> node_revoked_{false};
  // Rejoin pacing (maintenance thread only): the next attempt is not before this.
  std::optional<std::chrono::steady_clock::time_point> next_rejoin_;
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  uint64_t sync_wakes_ = 0;  // guarded by sleep_mu_
  std::thread sync_thread_;
  std::thread maintenance_thread_;
};

}  // namespace sigil::agent
