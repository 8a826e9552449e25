#include "agent/creds/grant_cache.h"

#include <algorithm>

namespace sigil::agent::creds {
namespace {

std::string FlightKey(const std::string& binding, const std::vector<std::string>& allowed) {
  std::string key = binding;
  for (const auto& id : allowed) {
    key += '\n';
    key += id;
  }
  return key;
}

}  // namespace

TimePoint GrantCache::UsableUntil(const GrantInfo& info) const {
  const auto lifetime = info.expires_at - info.fetched_at;
  const auto margin = std::min<TimePoint::duration>(options_.refresh_margin, lifetime / 2);
  return std::min(info.fetched_at + options_.max_age, info.expires_at - margin);
}

const CredentialGrant* GrantCache::FindLocked(const std::string& binding,
                                              const std::vector<std::string>& allowed,
                                              TimePoint now,
                                              std::shared_ptr<const CredentialGrant>* out) {
  for (const auto& id : allowed) {
    auto it = entries_.find(Key{binding, id});
    if (it == entries_.end()) continue;
    if (now < it->second.usable_until) {
      *out = it->second.grant;
      return out->get();
    }
    entries_.erase(it);
  }
  return nullptr;
}

Result<CredentialGrantHandle> GrantCache::Get(const std::string& binding,
                                              const std::vector<std::string>& allowed,
                                              const FetchFn& fetch) {
  std::string flight;
  uint64_t epoch = 0;
  {
    std::unique_lock lock(mu_);
    std::shared_ptr<const CredentialGrant> hit;
    if (FindLocked(binding, allowed, clock_.Now(), &hit) != nullptr) {
      return CredentialGrantHandle(std::move(hit), false);
    }
    if (!allowed.empty()) {
      flight = FlightKey(binding, allowed);
      if (flights_.contains(flight)) {
        // Bounded by the leader's own fetch (the server call has a deadline).
        flight_cv_.wait(lock, [&] { return !flights_.contains(flight); });
        if (FindLocked(binding, allowed, clock_.Now(), &hit) != nullptr) {
          return CredentialGrantHandle(std::move(hit), false);
        }
      }
      flights_.insert(flight);
    }
    epoch = epoch_;
  }
  auto fetched = fetch();
  std::lock_guard lock(mu_);
  if (!flight.empty()) {
    flights_.erase(flight);
    flight_cv_.notify_all();
  }
  if (!fetched.ok()) return std::move(fetched).error();
  std::shared_ptr<const CredentialGrant> grant = std::move(fetched).value();
  const GrantInfo& info = grant->info();
  const TimePoint until = UsableUntil(info);
  const bool ours = std::find(allowed.begin(), allowed.end(), info.spiffe_id) != allowed.end();
  if (ours && epoch == epoch_ && info.binding == binding && clock_.Now() < until &&
      entries_.size() < options_.max_entries) {
    entries_[Key{binding, info.spiffe_id}] = Entry{grant, until};
  }
  return CredentialGrantHandle(std::move(grant), true);
}

void GrantCache::OnSync(const sigil::agent::v1::SyncResponse& message) {
  if (message.snapshot()) {
    Clear();
    return;
  }
  for (const auto& r : message.upserts()) {
    if (r.kind() == "CredentialBinding") DropBinding(r.name());
  }
  for (const auto& r : message.deletes()) {
    if (r.kind() == "CredentialBinding") DropBinding(r.name());
  }
  for (const auto& s : message.changed_credential_sources()) DropSource(s);
}

void GrantCache::DropBinding(const std::string& binding) {
  std::lock_guard lock(mu_);
  InvalidatedLocked();
  std::erase_if(entries_, [&](const auto& e) { return e.first.first == binding; });
}

size_t GrantCache::DropIf(
    const std::function<bool(const std::string& binding, const std::string& spiffe_id)>& drop) {
  std::lock_guard lock(mu_);
  InvalidatedLocked();
  return std::erase_if(entries_,
                       [&](const auto& e) { return drop(e.first.first, e.first.second); });
}

void GrantCache::DropSource(const std::string& source) {
  std::lock_guard lock(mu_);
  InvalidatedLocked();
  // A grant from a server that does not name its source cannot be matched: drop it too.
  std::erase_if(entries_, [&](const auto& e) {
    const std::string& s = e.second.grant->info().source;
    return s == source || s.empty();
  });
}

void GrantCache::Clear() {
  std::lock_guard lock(mu_);
  InvalidatedLocked();
  entries_.clear();
}

size_t GrantCache::Sweep() {
  const TimePoint now = clock_.Now();
  std::lock_guard lock(mu_);
  return std::erase_if(entries_, [&](const auto& e) { return now >= e.second.usable_until; });
}

size_t GrantCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace sigil::agent::creds
