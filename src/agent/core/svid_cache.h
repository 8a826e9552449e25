// SvidCache: workload X.509-SVIDs and JWT-SVIDs the agent holds, issued on first use and renewed
// at half-life.
//
// One entry per (WorkloadIdentity name, rendered SPIFFE ID). Its key is generated in the agent's
// secure heap (custody::WorkloadKey) and never leaves the process except to the workload it
// belongs to, over the Workload API. The server only ever sees the CSR. Concurrent first uses of
// one entry issue once (a per-entry lock); different entries issue in parallel.
//
// Renewal (Maintain, from the agent's maintenance thread) re-signs past half-life with a fresh
// key, on behalf of the last process that used the entry (the server re-checks its selectors).
// Entries whose WorkloadIdentity disappeared, or that nobody used for two lifetimes, are dropped.
// Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/custody/workload_key.h"
#include "common/clock.h"
#include "common/result.h"
#include "core/certificate.h"
#include "core/revocation_set.h"
#include "core/spiffe_id.h"
#include "proto/agent.pb.h"
#include "resources/workload_identity.h"

namespace sigil::agent {

struct HeldSvid {
  std::string identity_name;  // WorkloadIdentity
  core::SpiffeId id;
  std::shared_ptr<const custody::WorkloadKey> key;
  std::vector<core::Certificate> chain;  // leaf first
  TimePoint not_before;  // backdated by the CA; renewal counts from issued_at instead
  TimePoint not_after;
  std::string serial;
  TimePoint issued_at;
};

struct HeldJwt {
  std::string token;
  TimePoint issued_at;
  TimePoint expires_at;
};

class SvidCache {
 public:
  // Signs a CSR for `spiffe_id` on behalf of `process` (the agent API's SignWorkloadSVID).
  using SignFn = std::function<Result<std::vector<core::Certificate>>(
      const std::string& spiffe_id, std::span<const uint8_t> csr_der,
      const sigil::agent::v1::AttestedProcess& process)>;
  // Mints a JWT-SVID (the agent API's MintJWTSVID); returns the token and its expiry.
  using MintFn = std::function<Result<std::pair<std::string, TimePoint>>(
      const std::string& spiffe_id, const std::vector<std::string>& audience,
      const sigil::agent::v1::AttestedProcess& process)>;

  SvidCache(SignFn sign, MintFn mint, const Clock& clock)
      : sign_(std::move(sign)), mint_(std::move(mint)), clock_(clock) {}

  // The current SVID for (spec, id), issued now if there is none or it is past half-life.
  // When that issuance fails as Unavailable (server unreachable) the held SVID is returned
  // while it has not expired.
  Result<std::shared_ptr<const HeldSvid>> Get(const resources::WorkloadIdentitySpec& spec,
                                              const core::SpiffeId& id,
                                              const sigil::agent::v1::AttestedProcess& process);
  // A JWT-SVID for `id` and `audience`, reused until half its lifetime has passed.
  Result<HeldJwt> GetJwt(const core::SpiffeId& id, std::vector<std::string> audience,
                         const sigil::agent::v1::AttestedProcess& process);

  // Renews past half-life, drops stale entries. Returns how many SVIDs changed (renewed or
  // dropped); renewal failures are left for the next call and reported in `errors`.
  size_t Maintain(const std::vector<resources::WorkloadIdentitySpec>& current,
                  std::vector<Error>* errors);

  // Forgets every SVID whose serial or SPIFFE ID `revoked` covers, and the JWT-SVIDs of revoked
  // identities; the next Get issues afresh (the server refuses a revoked identity). Returns how
  // many were dropped. May wait for an issuance in flight on an affected entry.
  size_t DropRevoked(const core::RevocationSet& revoked);

  size_t size() const;
  // Forgets everything (revocation of the node or a CA change).
  void Clear();

 private:
  struct Slot {
    std::mutex issue_mu;                             // held while issuing for this slot
    std::shared_ptr<const HeldSvid> current;         // guarded by issue_mu
    resources::WorkloadIdentitySpec spec;            // guarded by issue_mu
    sigil::agent::v1::AttestedProcess last_process;  // guarded by issue_mu
    TimePoint last_used;                             // guarded by issue_mu
  };
  Result<std::shared_ptr<const HeldSvid>> Issue(const resources::WorkloadIdentitySpec& spec,
                                                const core::SpiffeId& id,
                                                const sigil::agent::v1::AttestedProcess& process);
  bool Fresh(const HeldSvid& svid) const;

  const SignFn sign_;
  const MintFn mint_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Slot>> slots_;  // guarded by mu_
  std::map<std::string, HeldJwt> jwts_;                 // guarded by mu_
};

}  // namespace sigil::agent
