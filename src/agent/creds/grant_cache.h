// GrantCache: credential grants the agent holds between FetchCredential calls.
//
// Key: (binding, SPIFFE ID the server granted for). A grant belongs to an identity, not to a
// process: any process that holds that identity (by the agent's matching, the rule the server
// also applies) and that the binding allows may be served the same grant. Callers pass the
// identities the process holds that the binding allows (`allowed`); a cached grant for any of
// them is returned. A grant whose identity is not among them (the agent's synced view lags the
// server's) is returned but not cached. Refusals are never cached: every refused request goes
// to the server, which audits it.
//
// Lifetime: a grant is served while now < UsableUntil (the earlier of fetched_at + max_age and
// expires_at - min(refresh_margin, lifetime / 2)), so a JWT is never handed out moments before
// it expires. Expired entries are dropped on lookup and by Sweep() (the agent's maintenance
// thread, once a second), which frees their secrets (SecretBytes: wiped). Handles already
// given out keep their grant alive until released.
//
// Invalidation (OnSync): a Sync snapshot drops everything; a delta drops the grants of every
// CredentialBinding it upserts or deletes and of every CredentialSource it names as changed
// (SyncResponse.changed_credential_sources), so a rotated secret is fetched on the next use.
// A fetch that was in flight while an invalidation happened is returned to its caller but not
// cached (it may predate the change).
//
// Concurrent misses for the same (binding, allowed) wait for the one fetch in flight, then
// look again; a waiter whose leader failed (e.g. refused for the leader's process) fetches for
// itself. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent/creds/grant.h"
#include "common/clock.h"
#include "common/result.h"
#include "proto/agent.pb.h"

namespace sigil::agent::creds {

struct GrantCacheOptions {
  std::chrono::seconds max_age{300};        // never serve a grant longer than this after fetch
  std::chrono::seconds refresh_margin{30};  // stop serving this long before expiry (<= half)
  size_t max_entries = 4096;                // beyond this, new grants are not cached
};

class GrantCache {
 public:
  // Asks the server (FetchCredential) for `binding` on behalf of the process being served.
  using FetchFn = std::function<Result<std::shared_ptr<const CredentialGrant>>()>;

  explicit GrantCache(const Clock& clock, GrantCacheOptions options = {})
      : clock_(clock), options_(options) {}

  Result<CredentialGrantHandle> Get(const std::string& binding,
                                    const std::vector<std::string>& allowed, const FetchFn& fetch);

  void OnSync(const sigil::agent::v1::SyncResponse& message);
  void DropBinding(const std::string& binding);
  void DropSource(const std::string& source);
  // Drops every grant for which `drop(binding, spiffe_id)` is true (revocations); returns how
  // many.
  size_t DropIf(
      const std::function<bool(const std::string& binding, const std::string& spiffe_id)>& drop);
  void Clear();
  // Drops expired grants; returns how many.
  size_t Sweep();
  size_t size() const;

  TimePoint UsableUntil(const GrantInfo& info) const;

 private:
  struct Entry {
    std::shared_ptr<const CredentialGrant> grant;
    TimePoint usable_until;
  };
  using Key = std::pair<std::string, std::string>;  // (binding, spiffe_id)

  // Bumps the epoch (an invalidation happened); caller holds mu_.
  void InvalidatedLocked() { ++epoch_; }
  const CredentialGrant* FindLocked(const std::string& binding,
                                    const std::vector<std::string>& allowed, TimePoint now,
                                    std::shared_ptr<const CredentialGrant>* out);

  const Clock& clock_;
  const GrantCacheOptions options_;
  mutable std::mutex mu_;
  std::condition_variable flight_cv_;
  std::map<Key, Entry> entries_;   // guarded by mu_
  std::set<std::string> flights_;  // guarded by mu_: (binding, allowed) keys being fetched
  uint64_t epoch_ = 0;             // guarded by mu_
};

}  // namespace sigil::agent::creds
