#include "agent/core/svid_cache.h"

#include <algorithm>

namespace sigil::agent {
namespace {

std::string SlotKey(const std::string& identity_name, const core::SpiffeId& id) {
  return identity_name + "\n" + id.str();
}

constexpr size_t kMaxJwtEntries = 4096;

}  // namespace

bool SvidCache::Fresh(const HeldSvid& svid) const {
  const TimePoint half = svid.issued_at + (svid.not_after - svid.issued_at) / 2;
  return clock_.Now() < half;
}

Result<std::shared_ptr<const HeldSvid>> SvidCache::Issue(
    const resources::WorkloadIdentitySpec& spec, const core::SpiffeId& id,
    const sigil::agent::v1::AttestedProcess& process) {
  SIGIL_ASSIGN_OR_RETURN(custody::WorkloadKey key, custody::WorkloadKey::Generate(id));
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> csr, key.CreateCsrDer());
  SIGIL_ASSIGN_OR_RETURN(std::vector<core::Certificate> chain, sign_(id.str(), csr, process));
  if (chain.empty()) return Internal("server returned an empty SVID chain for " + id.str());
  SIGIL_ASSIGN_OR_RETURN(core::PublicKey leaf_key, chain.front().PublicKeyOf());
  if (leaf_key.ToDer() != key.public_key().ToDer()) {
    return Internal("server returned an SVID for another key (" + id.str() + ")");
  }
  const TimePoint not_before = chain.front().NotBefore();
  const TimePoint not_after = chain.front().NotAfter();
  std::string serial = chain.front().SerialHex();
  return std::make_shared<const HeldSvid>(
      HeldSvid{spec.name, id, std::make_shared<const custody::WorkloadKey>(std::move(key)),
               std::move(chain), not_before, not_after, std::move(serial), clock_.Now()});
}

Result<std::shared_ptr<const HeldSvid>> SvidCache::Get(
    const resources::WorkloadIdentitySpec& spec, const core::SpiffeId& id,
    const sigil::agent::v1::AttestedProcess& process) {
  std::shared_ptr<Slot> slot;
  {
    std::lock_guard lock(mu_);
    auto& s = slots_[SlotKey(spec.name, id)];
    if (!s) s = std::make_shared<Slot>();
    slot = s;
  }
  std::lock_guard issue(slot->issue_mu);
  slot->spec = spec;
  slot->last_process = process;
  slot->last_used = clock_.Now();
  if (slot->current && Fresh(*slot->current) && slot->current->chain.size() > 0) {
    return slot->current;
  }
  auto held = Issue(spec, id, process);
  if (!held.ok()) {
    // The server is unreachable or refused: keep serving what we hold while it is valid.
    if (slot->current && clock_.Now() < slot->current->not_after &&
        (held.error().code() == ErrorCode::kUnavailable ||
         held.error().code() == ErrorCode::kDeadlineExceeded)) {
      return slot->current;
    }
    return std::move(held).error();
  }
  slot->current = *held;
  return held;
}

Result<HeldJwt> SvidCache::GetJwt(const core::SpiffeId& id, std::vector<std::string> audience,
                                  const sigil::agent::v1::AttestedProcess& process) {
  std::sort(audience.begin(), audience.end());
  audience.erase(std::unique(audience.begin(), audience.end()), audience.end());
  std::string key = id.str();
  for (const auto& a : audience) key += "\n" + a;
  const TimePoint now = clock_.Now();
  {
    std::lock_guard lock(mu_);
    auto it = jwts_.find(key);
    if (it != jwts_.end() &&
        now < it->second.issued_at + (it->second.expires_at - it->second.issued_at) / 2) {
      return it->second;
    }
  }
  SIGIL_ASSIGN_OR_RETURN(auto minted, mint_(id.str(), audience, process));
  HeldJwt jwt{std::move(minted.first), now, minted.second};
  std::lock_guard lock(mu_);
  if (jwts_.size() >= kMaxJwtEntries) {
    for (auto it = jwts_.begin(); it != jwts_.end();) {
      it = it->second.expires_at <= now ? jwts_.erase(it) : std::next(it);
    }
    if (jwts_.size() >= kMaxJwtEntries) jwts_.clear();
  }
  jwts_[key] = jwt;
  return jwt;
}

size_t SvidCache::Maintain(const std::vector<resources::WorkloadIdentitySpec>& current,
                           std::vector<Error>* errors) {
  std::vector<std::string> keys;
  std::vector<std::shared_ptr<Slot>> held;
  {
    std::lock_guard lock(mu_);
    keys.reserve(slots_.size());
    held.reserve(slots_.size());
    for (const auto& entry : slots_) {
      keys.push_back(entry.first);
      held.push_back(entry.second);
    }
  }
  size_t changed = 0;
  const TimePoint now = clock_.Now();
  for (size_t i = 0; i < held.size(); ++i) {
    const std::string& key = keys[i];
    Slot* slot = held[i].get();
    bool drop = false;
    {
      std::lock_guard issue(slot->issue_mu);
      auto spec = std::find_if(current.begin(), current.end(),
                               [&](const auto& s) { return s.name == slot->spec.name; });
      const bool gone = spec == current.end();
      const bool stale = slot->current && now - slot->last_used > 2 * (slot->current->not_after -
                                                                       slot->current->issued_at);
      if (gone || stale || !slot->current) {
        drop = true;
      } else if (!Fresh(*slot->current)) {
        auto renewed = Issue(*spec, slot->current->id, slot->last_process);
        if (renewed.ok()) {
          slot->current = std::move(renewed).value();
          slot->spec = *spec;
          ++changed;
        } else if (errors != nullptr) {
          errors->push_back(renewed.error().WithContext("renewing " + slot->current->id.str()));
        }
      }
    }
    if (drop) {
      std::lock_guard lock(mu_);
      auto it = slots_.find(key);
      if (it != slots_.end() && it->second.get() == slot) {
        slots_.erase(it);
        ++changed;
      }
    }
  }
  return changed;
}

size_t SvidCache::DropRevoked(const core::RevocationSet& revoked) {
  if (revoked.empty()) return 0;
  std::vector<std::shared_ptr<Slot>> held;
  size_t dropped = 0;
  {
    std::lock_guard lock(mu_);
    for (const auto& entry : slots_) held.push_back(entry.second);
    for (auto it = jwts_.begin(); it != jwts_.end();) {
      const std::string id = it->first.substr(0, it->first.find('\n'));
      if (revoked.FindIdentity(id) != nullptr) {
        it = jwts_.erase(it);
        ++dropped;
      } else {
        ++it;
      }
    }
  }
  for (const auto& slot : held) {
    std::lock_guard issue(slot->issue_mu);
    if (slot->current &&
        revoked.FindCertificate(slot->current->serial, slot->current->id.str()) != nullptr) {
      slot->current.reset();
      ++dropped;
    }
  }
  return dropped;
}

size_t SvidCache::size() const {
  std::lock_guard lock(mu_);
  return slots_.size();
}

void SvidCache::Clear() {
  std::lock_guard lock(mu_);
  slots_.clear();
  jwts_.clear();
}

}  // namespace sigil::agent
