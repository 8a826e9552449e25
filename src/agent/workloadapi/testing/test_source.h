// TestSource: a WorkloadSource for tests, backed by a REAL in-process CA (core::AuthoritySet):
// real X.509-SVIDs with agent-style generated keys, real JWT-SVIDs, real bundles. Test-only.
//
// Identities are chosen by the caller's effective uid: by default uid 0 ->
// spiffe://<td>/root-workload (WorkloadIdentity "root-workload", selector unix:uid:0) and uid
// 65534 -> spiffe://<td>/nobody ("nobody", unix:uid:65534); other uids hold nothing
// (PermissionDenied "no identity issued", like the agent). X.509-SVIDs are cached per SPIFFE
// ID until ForceRotation(). Every mutator bumps the generation and wakes WaitForChange.
// Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent/workloadapi/workload_source.h"
#include "core/authority_set.h"
#include "core/trust_bundle.h"

namespace sigil::agent::workloadapi::testing {

class TestSource final : public WorkloadSource {
 public:
  static std::unique_ptr<TestSource> Create(const std::string& trust_domain = "example.org");

  // uid -> identity; replaces an existing mapping.
  void MapUid(uint32_t uid, const std::string& path, const std::string& name);
  void UnmapUid(uint32_t uid);
  // Reissues every cached SVID (new keys, new serials).
  void ForceRotation();
  // Publishes an extra X.509 root and JWT key in our own bundle (as before a CA rotation).
  void RotateBundle();
  // Adds a bundle for another trust domain (a federated one).
  void AddFederatedDomain(const std::string& trust_domain);
  // Moves the generation without changing anything.
  void Touch();
  // ShuttingDown() becomes true; WaitForChange returns at once.
  void Shutdown();

  core::TrustDomain trust_domain() const;
  int issued_count() const;
  int x509_calls() const;

  // WorkloadSource
  Result<std::vector<X509SvidGrant>> X509Svids(const attest::AttestedProcess& process) override;
  Result<std::vector<JwtSvidGrant>> JwtSvids(const attest::AttestedProcess& process,
                                             const std::vector<std::string>& audience,
                                             const std::string& spiffe_id) override;
  Result<std::vector<IdentityExplanation>> Explain(const attest::AttestedProcess& process) override;
  core::BundleSet Bundles() override;
  uint64_t Generation() override;
  uint64_t WaitForChange(uint64_t seen, std::chrono::milliseconds timeout) override;
  bool ShuttingDown() override;

 private:
  struct Mapping {
    core::SpiffeId id;
    std::string name;
  };
  struct Cached {
    std::vector<core::Certificate> chain;
    SecretBytes key;
    TimePoint expires_at;
  };
  explicit TestSource(core::AuthoritySet authorities);
  void BumpLocked();                                           // requires mu_
  std::optional<Mapping> MappingFor(uint32_t uid) const;       // requires mu_
  Result<const Cached*> SvidLocked(const core::SpiffeId& id);  // requires mu_

  mutable std::mutex mu_;
  std::condition_variable cv_;
  core::AuthoritySet authorities_;                                   // guarded by mu_
  std::map<uint32_t, Mapping> by_uid_;                               // guarded by mu_
  std::map<std::string, Cached> cache_;                              // guarded by mu_
  std::vector<core::Certificate> extra_roots_;                       // guarded by mu_
  std::vector<core::JwtAuthority> extra_jwt_;                        // guarded by mu_
  std::vector<std::shared_ptr<const core::TrustBundle>> federated_;  // guarded by mu_
  uint64_t generation_ = 1;                                          // guarded by mu_
  bool shutting_down_ = false;                                       // guarded by mu_
  int issued_ = 0;                                                   // guarded by mu_
  int x509_calls_ = 0;                                               // guarded by mu_
};

}  // namespace sigil::agent::workloadapi::testing
