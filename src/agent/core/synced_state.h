// SyncedState: the agent's copy of what the server sends over Sync (resources, trust bundle),
// applied snapshot-then-deltas, with a generation counter for waiters.
//
// Resources are kept as (kind, name) -> (version, canonical spec JSON); WorkloadIdentity objects
// are also parsed once per change into an immutable snapshot shared with the matching code.
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/revocation_set.h"
#include "core/spiffe_id.h"
#include "core/trust_bundle.h"
#include "proto/agent.pb.h"
#include "resources/workload_identity.h"

namespace sigil::agent {

class SyncedState {
 public:
  using Identities = std::shared_ptr<const std::vector<resources::WorkloadIdentitySpec>>;

  explicit SyncedState(core::TrustDomain trust_domain);

  // Applies one Sync message (snapshot: replace everything; delta: upserts, deletes, bundle).
  // A message whose bundle does not parse is refused whole (InvalidArgument), state unchanged.
  Result<void> Apply(const sigil::agent::v1::SyncResponse& message);
  // Installs a bundle received elsewhere (Join, or the copy saved on disk at start).
  Result<void> SetBundleJwks(const std::string& jwks);

  uint64_t revision() const;
  bool has_snapshot() const;
  std::shared_ptr<const core::TrustBundle> bundle() const;  // nullptr before any bundle
  std::string bundle_jwks() const;
  Identities identities() const;
  // The synced Revocation resources, parsed; rebuilt (a new pointer) only when one changed.
  std::shared_ptr<const core::RevocationSet> revocations() const;
  size_t resource_count() const;
  // (name, canonical spec JSON) of every resource of `kind` (e.g. "Service"), by name.
  std::vector<std::pair<std::string, std::string>> ResourcesOfKind(const std::string& kind) const;

  uint64_t generation() const;
  // Blocks until the generation differs from `seen`, `timeout` passes or Close(); returns it.
  uint64_t WaitForChange(uint64_t seen, std::chrono::milliseconds timeout) const;
  // Wakes waiters (shutdown) and makes every later wait return at once.
  void Close();
  // Bumps the generation (e.g. an SVID was renewed) and wakes waiters.
  void Touch();

 private:
  void RebuildIdentitiesLocked();
  void RebuildRevocationsLocked();

  const core::TrustDomain trust_domain_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<std::pair<std::string, std::string>, std::pair<uint64_t, std::string>> resources_;
  Identities identities_;
  std::shared_ptr<const core::RevocationSet> revocations_;
  std::shared_ptr<const core::TrustBundle> bundle_;
  std::string bundle_jwks_;
  uint64_t revision_ = 0;
  bool has_snapshot_ = false;
  uint64_t generation_ = 1;
  bool closed_ = false;
};

}  // namespace sigil::agent
