// ControlPlane: the authority set in the store, shared by every server replica.
//
// The sealed set lives in blob kAuthoritiesBlob; every write of it also upserts the CaState
// resource (a public summary) in the same transaction, with expected_version = the version this
// replica last read or wrote. That version is the compare-and-swap token: of two replicas that
// rotate, record an issuance bound or create the first CA at the same time, exactly one write
// lands; the other gets Aborted, re-reads the stored set and runs its step again on it (which
// usually finds nothing left to do). The CaState change also reaches every other replica
// through the change log (LISTEN/NOTIFY with PostgreSQL), which re-reads the set at once.
// docs/operations.md, "Several server replicas".
#include <nlohmann/json.hpp>

#include "common/duration.h"
#include "server/ca_state.h"
#include "server/control_plane.h"

namespace sigil::server {
namespace {

// Conflicts need another replica writing the same set in between; a few attempts suffice
// unless something is badly wrong.
constexpr int kMaxAuthorityAttempts = 8;

std::string CaStateSpec(const core::TrustDomain& td, const core::AuthoritySet& set) {
  nlohmann::json spec = CaGenerationsJson(set.Bundle().sequence(), set.Generations());
  spec["trustDomain"] = td.name();
  return spec.dump();
}

nlohmann::json Time(const std::optional<TimePoint>& t) {
  return t ? nlohmann::json(FormatRfc3339(*t)) : nlohmann::json(nullptr);
}

}  // namespace

Result<core::AuthoritySet> ControlPlane::OpenAuthoritiesBlob(
    const std::vector<uint8_t>& sealed) const {
  auto plain = kek_.Open(sealed, kAuthoritiesBlob);
  if (!plain.ok()) {
    return Error(plain.error().code(),
                 "the CA keys in the store cannot be opened with this key-encryption key (" +
                     plain.error().message() +
                     "): every server replica needs the KEK file of the one that created the "
                     "store (--kek-file)");
  }
  return core::AuthoritySet::Deserialize(options_.ca, options_.rotation, options_.upstream, *plain);
}

Result<core::AuthoritySet> ControlPlane::CloneAuthoritiesLocked() const {
  SIGIL_ASSIGN_OR_RETURN(SecretBytes plain, authorities_->Serialize());
  return core::AuthoritySet::Deserialize(options_.ca, options_.rotation, options_.upstream, plain);
}

void ControlPlane::InstallAuthoritiesLocked(core::AuthoritySet set, uint64_t version) {
  authorities_.emplace(std::move(set));
  authorities_version_ = version;
  // Keep the bundle object when its sequence did not move: consumers compare the pointer
  // (agent_api's verified-peer cache), and an issuance bound changes no root.
  core::TrustBundle bundle = authorities_->Bundle();
  if (!bundle_ || bundle_->sequence() != bundle.sequence()) {
    bundle_ = std::make_shared<const core::TrustBundle>(std::move(bundle));
  }
  MarkDurableLocked();
}

Result<uint64_t> ControlPlane::PersistLocked(const core::AuthoritySet& set,
                                             const std::vector<store::AuditEvent>& audit) {
  SIGIL_ASSIGN_OR_RETURN(SecretBytes plain, set.Serialize());
  SIGIL_ASSIGN_OR_RETURN(auto sealed, kek_.Seal(plain.span(), kAuthoritiesBlob));
  store::ResourceWrite state;
  state.kind = std::string(kCaStateKind);
  state.name = std::string(kCaStateName);
  state.spec_json = CaStateSpec(trust_domain(), set);
  state.expected_version = authorities_version_;  // 0: must not exist yet
  state.force_new_version = true;
  store::BlobWrite blob;
  blob.name = std::string(kAuthoritiesBlob);
  blob.bytes = std::move(sealed);
  SIGIL_ASSIGN_OR_RETURN(store::ApplyResult applied,
                         store_->ApplyWithBlobs(std::span(&state, 1), std::span(&blob, 1), audit));
  return applied.writes.front().resource_version;
}

Result<bool> ControlPlane::MutateAuthoritiesLocked(const AuthorityStep& step) {
  for (int attempt = 0; attempt < kMaxAuthorityAttempts; ++attempt) {
    SIGIL_ASSIGN_OR_RETURN(core::AuthoritySet next, CloneAuthoritiesLocked());
    SIGIL_ASSIGN_OR_RETURN(auto audit, step(next));
    if (!audit) return false;
    auto version = PersistLocked(next, *audit);
    if (version.ok()) {
      InstallAuthoritiesLocked(std::move(next), *version);
      return true;
    }
    if (version.error().code() != ErrorCode::kAborted) return std::move(version).error();
    // Another replica wrote the set since we read it: take theirs and decide again.
    SIGIL_TRY(ReloadAuthoritiesLocked());
  }
  return Error(ErrorCode::kAborted,
               "the CA state kept changing under this write (other server replicas writing it "
               "concurrently); try again");
}

Result<bool> ControlPlane::ReloadAuthoritiesLocked() {
  auto state = store_->Get(std::string(kCaStateKind), std::string(kCaStateName));
  if (!state.ok()) {
    if (state.error().code() == ErrorCode::kNotFound) return false;
    return std::move(state).error().WithContext("reading the CA state");
  }
  if (state->resource_version <= authorities_version_) return false;
  // The blob is read after the version: it is at least as new. Holding an older version than
  // the blob's only makes the next compare-and-swap fail and re-read, never lose a write.
  SIGIL_ASSIGN_OR_RETURN(auto sealed, store_->GetBlob(std::string(kAuthoritiesBlob)));
  SIGIL_ASSIGN_OR_RETURN(core::AuthoritySet set, OpenAuthoritiesBlob(sealed));
  InstallAuthoritiesLocked(std::move(set), state->resource_version);
  return true;
}

Result<bool> ControlPlane::RefreshAuthorities() {
  std::lock_guard lock(mu_);
  return ReloadAuthoritiesLocked();
}

uint64_t ControlPlane::authorities_version() const {
  std::lock_guard lock(mu_);
  return authorities_version_;
}

Result<void> ControlPlane::LoadOrCreateAuthorities() {
  std::lock_guard lock(mu_);
  for (int attempt = 0; attempt < kMaxAuthorityAttempts; ++attempt) {
    uint64_t version = 0;
    auto state = store_->Get(std::string(kCaStateKind), std::string(kCaStateName));
    if (state.ok()) {
      version = state->resource_version;
    } else if (state.error().code() != ErrorCode::kNotFound) {
      return std::move(state).error().WithContext("reading the CA state");
    }
    auto sealed = store_->GetBlob(std::string(kAuthoritiesBlob));
    if (sealed.ok()) {
      auto set = OpenAuthoritiesBlob(*sealed);
      if (!set.ok()) return std::move(set).error().WithContext("loading the CA from the store");
      InstallAuthoritiesLocked(std::move(*set), version);
      if (version != 0) return Ok();
      // Stored before CaState existed (an upgrade): publish the summary, which also gives the
      // set its compare-and-swap token. Another replica doing the same first is fine.
      auto written = PersistLocked(*authorities_, {});
      if (written.ok()) {
        authorities_version_ = *written;
        return Ok();
      }
      if (written.error().code() != ErrorCode::kAborted) return std::move(written).error();
      continue;
    }
    if (sealed.error().code() != ErrorCode::kNotFound) return std::move(sealed).error();
    // First start of the first replica: create generation 1. A replica starting at the same
    // moment loses the compare-and-swap (expected version 0) and loads the winner's set.
    SIGIL_ASSIGN_OR_RETURN(auto set, core::AuthoritySet::Create(options_.ca, options_.rotation,
                                                                clock_.Now(), options_.upstream));
    authorities_version_ = version;
    store::AuditEvent e = Event("ca.init", "server");
    e.details_json = nlohmann::json{{"trust_domain", trust_domain().name()},
                                    {"ca_sha256", set.active().ca.root().Fingerprint()},
                                    {"upstream", options_.upstream.has_value()}}
                         .dump();
    auto written = PersistLocked(set, {e});
    if (written.ok()) {
      InstallAuthoritiesLocked(std::move(set), *written);
      created_ = true;
      return Ok();
    }
    if (written.error().code() != ErrorCode::kAborted) return std::move(written).error();
  }
  return Error(ErrorCode::kAborted,
               "loading the CA: the CA state kept changing while this server started (other "
               "replicas starting at the same time); start it again");
}

nlohmann::json CaGenerationJson(const core::GenerationInfo& g) {
  return {{"role", core::RoleName(g.role)},
          {"caSha256", g.ca_sha256},
          {"rootSha256", g.root_sha256},
          {"jwtKid", g.jwt_kid},
          {"notBefore", FormatRfc3339(g.not_before)},
          {"notAfter", FormatRfc3339(g.not_after)},
          {"activateAt", Time(g.activate_at)},
          {"activationScheduled", g.scheduled},
          {"x509IssuedUntil", Time(g.x509_issued_until)},
          {"jwtIssuedUntil", Time(g.jwt_issued_until)},
          {"leavesBundleAt", Time(g.leaves_bundle_at)}};
}

Result<std::optional<std::string>> StoredCaTrustDomain(store::Store& store) {
  auto state = store.Get(std::string(kCaStateKind), std::string(kCaStateName));
  if (!state.ok()) {
    if (state.error().code() == ErrorCode::kNotFound) return std::optional<std::string>();
    return std::move(state).error().WithContext("reading the CA state");
  }
  auto spec = nlohmann::json::parse(state->spec_json, nullptr, false);
  auto td = spec.is_object() ? spec.find("trustDomain") : spec.end();
  if (td == spec.end() || !td->is_string()) return std::optional<std::string>();
  return std::optional<std::string>(td->get<std::string>());
}

nlohmann::json CaGenerationsJson(uint64_t bundle_sequence,
                                 const std::vector<core::GenerationInfo>& generations) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& g : generations) out.push_back(CaGenerationJson(g));
  return {{"bundleSequence", bundle_sequence}, {"generations", std::move(out)}};
}

}  // namespace sigil::server
