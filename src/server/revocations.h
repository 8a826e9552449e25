// Revocation (issue 7): what the server has revoked, stored as resources of kind "Revocation"
// so that each one rides the change log to every replica and, over Sync, to every agent.
// See docs/control-plane.md, "Revocation".
//
// A Revocation resource is named "<kind>/<target>" (kind: node | identity | svid | binding) and
// its spec is canonical JSON with exactly these members:
//
//   {"kind": "svid", "target": "3fa9...", "reason": "...", "revokedAt": <unix s>,
//    "revokedBy": "<admin SPIFFE ID>", "serials": ["3fa9..."], "identities": [],
//    "expiresAt": <unix s, 0 = never>}
//
// A certificate is revoked iff its serial is in some revocation's `serials` or its URI SAN in
// some revocation's `identities`; a binding revocation revokes the CredentialBinding `target`.
// `sigil apply` cannot write the kind (the resource parser does not know it): only
// ControlPlane::Revoke / LiftRevocation / PruneExpiredRevocations write it.
//
// The ControlPlane members that create, lift and prune revocations are in revocations.cc;
// RevocationIndex is the enforcement side's cache.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "store/store.h"

namespace sigil::server {

inline constexpr std::string_view kRevocationKind = "Revocation";
// `reason`: required, at most this many bytes, no control characters.
inline constexpr size_t kMaxRevocationReasonBytes = 1024;
// How long a workload X.509-SVID may live at most (WorkloadIdentity spec.ttl is 10s..24h,
// resources/validate_workload.cc): revoking a node looks back this far in the audit trail for
// the SVIDs issued to it that may still be valid.
inline constexpr Seconds kMaxWorkloadSvidLifetime{24 * 3600};

enum class RevocationKind { kNode, kIdentity, kSvid, kBinding };

// "node" | "identity" | "svid" | "binding".
std::string_view RevocationKindName(RevocationKind kind);
std::optional<RevocationKind> RevocationKindFromName(std::string_view name);
// The resource name: "<kind>/<target>".
std::string RevocationName(RevocationKind kind, std::string_view target);

// A certificate serial as core::Certificate::SerialHex prints it: lowercase hex without leading
// zeros ("0" for zero). Accepts upper case, leading zeros and an optional "0x"; InvalidArgument
// naming `target` for anything else (empty, non-hex, longer than 20 bytes).
Result<std::string> NormalizeSerial(std::string_view serial);

// InvalidArgument naming `reason` unless it is non-empty, at most kMaxRevocationReasonBytes and
// free of control characters.
Result<void> ValidateRevocationReason(std::string_view reason);

struct Revocation {
  RevocationKind kind = RevocationKind::kSvid;
  std::string target;
  std::string reason;
  int64_t revoked_at = 0;               // unix seconds
  std::string revoked_by;               // the admin's SPIFFE ID
  std::vector<std::string> serials;     // sorted, unique
  std::vector<std::string> identities;  // SPIFFE IDs
  int64_t expires_at = 0;               // unix seconds; 0 = never

  // From the store (not part of the spec).
  std::string name;
  uint64_t resource_version = 0;

  // The canonical spec (the format above; serials sorted and de-duplicated).
  std::string SpecJson() const;
  // The spec plus "name" and "resourceVersion" (a decimal string, as the admin API prints
  // resource versions): the admin API's representation.
  std::string ApiJson() const;
  // Parses a stored Revocation; InvalidArgument naming the member for a malformed spec.
  static Result<Revocation> FromStored(const store::StoredResource& stored);
};

// Every Revocation of the store, parsed and indexed once per store revision (like
// WorkloadCatalog), so an enforcement check costs one revision read and hash lookups.
// Thread-safe; snapshots stay valid after the index moves on.
class RevocationIndex {
 public:
  struct Snapshot {
    uint64_t revision = 0;
    std::vector<Revocation> items;  // by name

    // The revocation listing this serial / SPIFFE ID, or of this CredentialBinding; nullptr
    // when there is none.
    const Revocation* BySerial(const std::string& serial) const;
    const Revocation* ByIdentity(const std::string& spiffe_id) const;
    const Revocation* ByBinding(const std::string& binding) const;

    std::unordered_map<std::string, size_t> serials;     // -> index into items
    std::unordered_map<std::string, size_t> identities;  // -> index into items
    std::unordered_map<std::string, size_t> bindings;    // -> index into items
  };
  using SnapshotPtr = std::shared_ptr<const Snapshot>;

  explicit RevocationIndex(store::Store& store) : store_(store) {}

  // The revocations at the store's current revision. Specs that do not parse are skipped and
  // counted in skipped().
  Result<SnapshotPtr> Current();
  uint64_t skipped() const;

 private:
  store::Store& store_;
  mutable std::mutex mu_;
  uint64_t revision_ = std::numeric_limits<uint64_t>::max();  // guarded by mu_
  SnapshotPtr snapshot_;                                      // guarded by mu_
  uint64_t skipped_ = 0;                                      // guarded by mu_
};

}  // namespace sigil::server
