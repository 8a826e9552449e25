#include "agent/core/synced_state.h"

#include "resources/resource.h"

namespace sigil::agent {
namespace {
constexpr std::string_view kRevocationKind = "Revocation";
}  // namespace

SyncedState::SyncedState(core::TrustDomain trust_domain)
    : trust_domain_(std::move(trust_domain)),
      identities_(std::make_shared<std::vector<resources::WorkloadIdentitySpec>>()),
      revocations_(std::make_shared<core::RevocationSet>()) {}

Result<void> SyncedState::Apply(const sigil::agent::v1::SyncResponse& message) {
  std::shared_ptr<const core::TrustBundle> bundle;
  if (!message.trust_bundle_jwks().empty()) {
    SIGIL_ASSIGN_OR_RETURN(
        auto parsed, core::TrustBundle::ParseJwks(trust_domain_, message.trust_bundle_jwks()));
    bundle = std::make_shared<core::TrustBundle>(std::move(parsed));
  }
  {
    std::lock_guard lock(mu_);
    bool revocations_changed = false;
    if (message.snapshot()) {
      revocations_changed = revocations_->size() > 0;
      resources_.clear();
      has_snapshot_ = true;
    }
    for (const auto& r : message.upserts()) {
      if (r.kind() == kRevocationKind) revocations_changed = true;
      resources_[{r.kind(), r.name()}] = {r.resource_version(), r.spec_json()};
    }
    for (const auto& d : message.deletes()) {
      if (d.kind() == kRevocationKind) revocations_changed = true;
      resources_.erase({d.kind(), d.name()});
    }
    if (revocations_changed) RebuildRevocationsLocked();
    if (bundle) {
      bundle_ = std::move(bundle);
      bundle_jwks_ = message.trust_bundle_jwks();
    }
    if (message.revision() > revision_ || message.snapshot()) revision_ = message.revision();
    RebuildIdentitiesLocked();
    ++generation_;
  }
  cv_.notify_all();
  return Ok();
}

Result<void> SyncedState::SetBundleJwks(const std::string& jwks) {
  SIGIL_ASSIGN_OR_RETURN(auto parsed, core::TrustBundle::ParseJwks(trust_domain_, jwks));
  {
    std::lock_guard lock(mu_);
    bundle_ = std::make_shared<core::TrustBundle>(std::move(parsed));
    bundle_jwks_ = jwks;
    ++generation_;
  }
  cv_.notify_all();
  return Ok();
}

void SyncedState::RebuildIdentitiesLocked() {
  auto specs = std::make_shared<std::vector<resources::WorkloadIdentitySpec>>();
  for (const auto& [key, value] : resources_) {
    if (key.first != "WorkloadIdentity") continue;
    auto resource = resources::ResourceFromStored(key.first, key.second, value.second, value.first);
    if (!resource.ok()) continue;  // written by a newer server: skip rather than fail the sync
    auto spec = resources::WorkloadIdentitySpec::FromResource(*resource);
    if (spec.ok()) specs->push_back(std::move(spec).value());
  }
  identities_ = std::move(specs);
}

void SyncedState::RebuildRevocationsLocked() {
  std::vector<std::pair<std::string, std::string>> items;
  for (auto it = resources_.lower_bound({std::string(kRevocationKind), ""});
       it != resources_.end() && it->first.first == kRevocationKind; ++it) {
    items.emplace_back(it->first.second, it->second.second);
  }
  revocations_ = std::make_shared<core::RevocationSet>(core::RevocationSet::FromResources(items));
}

std::shared_ptr<const core::RevocationSet> SyncedState::revocations() const {
  std::lock_guard lock(mu_);
  return revocations_;
}

uint64_t SyncedState::revision() const {
  std::lock_guard lock(mu_);
  return revision_;
}
bool SyncedState::has_snapshot() const {
  std::lock_guard lock(mu_);
  return has_snapshot_;
}
std::shared_ptr<const core::TrustBundle> SyncedState::bundle() const {
  std::lock_guard lock(mu_);
  return bundle_;
}
std::string SyncedState::bundle_jwks() const {
  std::lock_guard lock(mu_);
  return bundle_jwks_;
}
std::vector<std::pair<std::string, std::string>> SyncedState::ResourcesOfKind(
    const std::string& kind) const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = resources_.lower_bound({kind, ""});
       it != resources_.end() && it->first.first == kind; ++it) {
    out.emplace_back(it->first.second, it->second.second);
  }
  return out;
}

SyncedState::Identities SyncedState::identities() const {
  std::lock_guard lock(mu_);
  return identities_;
}
size_t SyncedState::resource_count() const {
  std::lock_guard lock(mu_);
  return resources_.size();
}
uint64_t SyncedState::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

uint64_t SyncedState::WaitForChange(uint64_t seen, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return closed_ || generation_ != seen; });
  return generation_;
}

void SyncedState::Close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

void SyncedState::Touch() {
  {
    std::lock_guard lock(mu_);
    ++generation_;
  }
  cv_.notify_all();
}

}  // namespace sigil::agent
