// WorkloadCatalog: the parsed WorkloadIdentity objects of the store, cached per store revision.
//
// Issuance (SignWorkloadSVID, MintJWTSVID, FetchCredential) matches attested selectors against
// every WorkloadIdentity. Parsing the stored specs on each call cost O(n) JSON parses; the
// catalog parses them once per store revision and hands out an immutable shared snapshot, so a
// call costs one revision read plus the selector comparisons.
//
// Thread-safe. Snapshots stay valid after the catalog moves on.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/spiffe_id.h"
#include "resources/workload_identity.h"
#include "store/store.h"

namespace sigil::server {

class WorkloadCatalog {
 public:
  using Snapshot = std::shared_ptr<const std::vector<resources::WorkloadIdentitySpec>>;

  explicit WorkloadCatalog(store::Store& store) : store_(store) {}

  // The identities at the store's current revision (ordered by name). Specs that no longer
  // parse (written by a newer server, say) are skipped and counted in skipped().
  Result<Snapshot> Current();
  uint64_t skipped() const;

 private:
  store::Store& store_;
  mutable std::mutex mu_;
  uint64_t revision_ = std::numeric_limits<uint64_t>::max();  // guarded by mu_
  Snapshot snapshot_;                                         // guarded by mu_
  uint64_t skipped_ = 0;                                      // guarded by mu_
};

}  // namespace sigil::server
