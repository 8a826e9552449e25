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
// stored node key and SVID. If the node SVID expired while the agent was down or cut off, the
// server no longer accepts it: the agent says so in its log with the command that fixes it
// (a new join token) and keeps serving cached state meanwhile.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "agent/core/event_reporter.h"
#include "agent/core/node_state.h"
#include "agent/core/server_connection.h"
#include "agent/core/svid_cache.h"
#include "agent/core/synced_state.h"
#include "agent/creds/binding_index.h"
#include "agent/creds/grant_cache.h"
#include "agent/workloadapi/workload_source.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/result.h"

namespace sigil::agent {

struct AgentOptions {
  std::string server;      // HOST:PORT of the agent API (required on first start)
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

  // Credentials (docs/agent.md, "Credential grants"). A grant of `binding` for `process`:
  // from the GrantCache when one is held for an identity the process holds and the binding
  // allows, else from the server's FetchCredential (which re-checks and audits grants and
  // refusals; refusals are never cached). For a `svid-pem` file binding, the process's own
  // X.509-SVID (source_type "x509-svid", the PKCS#8 key as the secret). Thread-safe; blocks
  // for at most one server call (kServerCallTimeout). PermissionDenied/NotFound: refused.
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
  Result<void> Connect();  // (re)builds the connection from node_ and the bundle
  std::shared_ptr<ServerConnection> connection() const;
  void SyncLoop();
  void MaintenanceLoop();
  void RenewNodeSvidIfDue();
  bool SleepFor(std::chrono::milliseconds d);  // false when stopping
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

  mutable std::mutex mu_;
  NodeState node_;                                  // guarded by mu_ (credential fields)
  TimePoint node_not_before_{}, node_not_after_{};  // guarded by mu_
  std::shared_ptr<ServerConnection> conn_;          // guarded by mu_
  grpc::ClientContext* sync_ctx_ = nullptr;         // guarded by mu_: the open Sync call
  bool synced_ = false;                             // guarded by mu_
  std::string last_error_;                          // guarded by mu_
  bool expiry_reported_ = false;                    // guarded by mu_

  std::atomic<bool> stopping_{false};
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  std::thread sync_thread_;
  std::thread maintenance_thread_;
};

}  // namespace sigil::agent
