// RevocationSet: what the control plane has revoked, as agents and the data plane consult it.
//
// The server stores each revocation as a resource of kind `Revocation`, named
// `<kind>/<target>` (docs/control-plane.md, "Revocation"), and agents receive them over Sync
// like any other synced resource. Each spec lists the certificate serials and the SPIFFE IDs
// it covers (a node revocation expands to the serials of every SVID issued to the node), so
// matching a certificate is two hash lookups and needs no knowledge of how it was issued.
//
// Immutable once built; shared as shared_ptr<const RevocationSet> between threads.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "core/certificate.h"

namespace sigil::core {

class RevocationSet {
 public:
  struct Entry {
    std::string kind;    // node | identity | svid | binding
    std::string target;  // node name, SPIFFE ID, serial or binding name
    std::string reason;
    TimePoint revoked_at{};
  };

  RevocationSet() = default;

  // Builds the set from (resource name, spec JSON) pairs of kind Revocation. An entry that
  // does not parse is skipped and described in `errors` (if given); the rest still apply.
  static RevocationSet FromResources(const std::vector<std::pair<std::string, std::string>>& items,
                                     std::vector<std::string>* errors = nullptr);

  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }

  // The revocation covering a certificate with this serial (lowercase hex, as
  // Certificate::SerialHex) or SPIFFE ID, or nullptr.
  const Entry* FindSerial(std::string_view serial) const;
  const Entry* FindIdentity(std::string_view spiffe_id) const;
  const Entry* FindBinding(std::string_view binding) const;
  const Entry* FindNode(std::string_view node) const;
  // A certificate is revoked when its serial or its (single) URI SAN is covered.
  const Entry* FindCertificate(const Certificate& leaf) const;
  // The same for what a connection recorded after its handshake.
  const Entry* FindCertificate(std::string_view serial, std::string_view spiffe_id) const;

  // "svid/3fa9 revoked at 2026-...: key leaked" for logs and errors (no secret in it).
  static std::string Describe(const Entry& e);

  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> serials_, identities_, bindings_, nodes_;
};

}  // namespace sigil::core
