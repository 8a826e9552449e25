#include "core/authority_set.h"

#include <algorithm>

namespace sigil::core {
namespace {

// Times the set records are whole seconds, as stored (Serialize), so a restored or copied set
// makes exactly the same decisions. Rounded up: an expiry bound never falls below the truth.
TimePoint CeilToSecond(TimePoint t) {
  TimePoint floor = std::chrono::floor<Seconds>(t);
  return floor == t ? t : floor + Seconds(1);
}

TimePoint At(const X509Ca& ca, double fraction) {
  auto life = ca.not_after() - ca.not_before();
  return ca.not_before() + std::chrono::duration_cast<TimePoint::duration>(life * fraction);
}

}  // namespace

TimePoint AuthorityGeneration::LeavesBundleAt() const {
  std::optional<TimePoint> last = x509_issued_until;
  if (jwt_issued_until) {
    // A validator still accepts a JWT-SVID for kDefaultJwtLeeway past its exp.
    TimePoint jwt_last = *jwt_issued_until + kDefaultJwtLeeway;
    if (!last || jwt_last > *last) last = jwt_last;
  }
  if (!last) return ca.not_before();  // signed nothing: nothing to wait for
  return std::min(*last, ca.not_after());
}

std::string_view RoleName(GenerationRole role) {
  switch (role) {
    case GenerationRole::kPrepared:
      return "prepared";
    case GenerationRole::kActive:
      return "active";
    case GenerationRole::kRetiring:
      return "retiring";
  }
  return "?";
}

Result<void> RotationPolicy::Validate(Seconds ca_ttl, Seconds max_svid_ttl) const {
  if (!(prepare_fraction > 0 && prepare_fraction < activate_fraction && activate_fraction < 1)) {
    return InvalidArgument("rotation: need 0 < prepare_fraction < activate_fraction < 1");
  }
  auto remaining = std::chrono::duration_cast<Seconds>(ca_ttl * (1 - activate_fraction));
  if (remaining < max_svid_ttl) {
    return InvalidArgument(
        "rotation: a CA stops signing with " + std::to_string(remaining.count()) +
        "s left, less than the SVID ttl of " + std::to_string(max_svid_ttl.count()) +
        "s; raise the CA ttl or lower the SVID ttl");
  }
  return Ok();
}

Result<AuthoritySet> AuthoritySet::Create(const CaOptions& options, const RotationPolicy& policy,
                                          TimePoint now, std::optional<UpstreamCa> upstream) {
  if (upstream && (upstream->chain.empty() || !upstream->key)) {
    return InvalidArgument("upstream ca: chain and key are required");
  }
  SIGIL_TRY(policy.Validate(options.ttl, Seconds(0)));
  AuthoritySet set(options, policy, std::move(upstream));
  SIGIL_ASSIGN_OR_RETURN(set.active_, set.NewGeneration(now));
  return set;
}

Result<std::unique_ptr<AuthorityGeneration>> AuthoritySet::NewGeneration(TimePoint now) const {
  Result<X509Ca> ca =
      upstream_ ? X509Ca::CreateIntermediate(options_, upstream_->chain, *upstream_->key, now)
                : X509Ca::CreateSelfSigned(options_, now);
  if (!ca.ok()) return std::move(ca).error();
  SIGIL_ASSIGN_OR_RETURN(PrivateKey jwt_key, PrivateKey::Generate(KeyType::kEcP256));
  SIGIL_ASSIGN_OR_RETURN(std::string kid, RandomKeyId());
  TimePoint not_after = ca->not_after();
  return std::make_unique<AuthorityGeneration>(
      AuthorityGeneration{std::move(ca).value(),
                          {std::move(kid), std::move(jwt_key), not_after},
                          std::nullopt,
                          std::nullopt,
                          std::nullopt});
}

TimePoint AuthoritySet::PrepareAt() const { return At(active_->ca, policy_.prepare_fraction); }

TimePoint AuthoritySet::ActivateAt() const {
  TimePoint automatic = At(active_->ca, policy_.activate_fraction);
  if (prepared_ && prepared_->activate_at) return std::min(automatic, *prepared_->activate_at);
  return automatic;
}

GenerationInfo AuthoritySet::Info(const AuthorityGeneration& g, GenerationRole role) const {
  GenerationInfo info;
  info.role = role;
  info.ca_sha256 = g.ca.certificate().Fingerprint();
  info.root_sha256 = g.ca.root().Fingerprint();
  info.jwt_kid = g.jwt.kid;
  info.not_before = g.ca.not_before();
  info.not_after = g.ca.not_after();
  if (role == GenerationRole::kPrepared && &g == prepared_.get()) {
    info.activate_at = ActivateAt();
    info.scheduled = g.activate_at.has_value();
  }
  info.x509_issued_until = g.x509_issued_until;
  info.jwt_issued_until = g.jwt_issued_until;
  if (role == GenerationRole::kRetiring) info.leaves_bundle_at = g.LeavesBundleAt();
  return info;
}

std::vector<GenerationInfo> AuthoritySet::Generations() const {
  std::vector<GenerationInfo> out;
  for (const auto& g : retired_) out.push_back(Info(*g, GenerationRole::kRetiring));
  out.push_back(Info(*active_, GenerationRole::kActive));
  if (prepared_) out.push_back(Info(*prepared_, GenerationRole::kPrepared));
  return out;
}

bool AuthoritySet::RotationDue(TimePoint now) const {
  // The conditions Rotate acts on, in its order.
  for (const auto& g : retired_) {
    if (now > g->LeavesBundleAt()) return true;
  }
  if (!prepared_ && now >= PrepareAt()) return true;
  if (prepared_ && now >= ActivateAt()) return true;
  return now >= active_->ca.not_after();
}

Result<bool> AuthoritySet::Rotate(TimePoint now, std::vector<RotationStep>* steps) {
  auto note = [steps](RotationStep s) {
    if (steps != nullptr) steps->push_back(std::move(s));
  };
  bool changed = false;
  // Loop: after a long pause (a server that was down for days) several steps may be due.
  for (int step = 0; step < 8; ++step) {
    bool acted = false;
    for (auto it = retired_.begin(); it != retired_.end();) {
      if (now > (*it)->LeavesBundleAt()) {
        note({RotationStep::Kind::kRetired, Info(**it, GenerationRole::kRetiring), {}, false});
        it = retired_.erase(it);
        acted = true;
      } else {
        ++it;
      }
    }
    if (!prepared_ && now >= PrepareAt()) {
      SIGIL_ASSIGN_OR_RETURN(prepared_, NewGeneration(now));
      note({RotationStep::Kind::kPrepared, Info(*prepared_, GenerationRole::kPrepared), {}, false});
      acted = true;
    }
    if (prepared_ && now >= ActivateAt()) {
      prepared_->activate_at.reset();
      retired_.push_back(std::move(active_));
      active_ = std::move(prepared_);
      note({RotationStep::Kind::kActivated, Info(*active_, GenerationRole::kActive),
            Info(*retired_.back(), GenerationRole::kRetiring), false});
      acted = true;
    }
    // An active generation that already expired (server was down past its end) is replaced
    // at once: signing with it is impossible anyway.
    if (now >= active_->ca.not_after()) {
      retired_.push_back(std::move(active_));
      SIGIL_ASSIGN_OR_RETURN(active_, NewGeneration(now));
      note({RotationStep::Kind::kActivated, Info(*active_, GenerationRole::kActive),
            Info(*retired_.back(), GenerationRole::kRetiring), true});
      acted = true;
    }
    if (!acted) break;
    changed = true;
  }
  if (changed) ++sequence_;
  return changed;
}

Result<GenerationInfo> AuthoritySet::RotateNow(TimePoint now, Seconds activate_after,
                                               bool* created) {
  if (activate_after < Seconds(0)) {
    return InvalidArgument("ca rotate: activate_after must not be negative");
  }
  if (created != nullptr) *created = false;
  if (!prepared_) {
    SIGIL_ASSIGN_OR_RETURN(prepared_, NewGeneration(now));
    ++sequence_;  // published: the bundle changed
    if (created != nullptr) *created = true;
  }
  prepared_->activate_at = CeilToSecond(now + activate_after);
  return Info(*prepared_, GenerationRole::kPrepared);
}

namespace {

void RaiseIssuedUntil(AuthorityGeneration& g, std::optional<TimePoint> x509,
                      std::optional<TimePoint> jwt) {
  auto raise = [](std::optional<TimePoint>& field, std::optional<TimePoint> to, TimePoint cap) {
    if (!to) return;
    TimePoint v = std::min(CeilToSecond(*to), cap);
    if (!field || v > *field) field = v;
  };
  raise(g.x509_issued_until, x509, g.ca.not_after());
  raise(g.jwt_issued_until, jwt, g.jwt.not_after);
}

}  // namespace

void AuthoritySet::ExtendIssuedUntil(std::optional<TimePoint> x509, std::optional<TimePoint> jwt) {
  RaiseIssuedUntil(*active_, x509, jwt);
}

bool AuthoritySet::ExtendIssuedUntil(std::string_view jwt_kid, std::optional<TimePoint> x509,
                                     std::optional<TimePoint> jwt) {
  AuthorityGeneration* found = nullptr;
  if (active_->jwt.kid == jwt_kid) found = active_.get();
  if (found == nullptr && prepared_ && prepared_->jwt.kid == jwt_kid) found = prepared_.get();
  for (auto& g : retired_) {
    if (found == nullptr && g->jwt.kid == jwt_kid) found = g.get();
  }
  if (found == nullptr) return false;
  RaiseIssuedUntil(*found, x509, jwt);
  return true;
}

TrustBundle AuthoritySet::Bundle() const {
  TrustBundle bundle(options_.trust_domain);
  auto add = [&](const AuthorityGeneration& g) {
    bundle.AddX509Authority(g.ca.root());
    // Kids are random 128-bit values, so a collision is not a real case.
    (void)bundle.AddJwtAuthority(g.jwt.kid, g.jwt.key.Public());
  };
  for (const auto& g : retired_) add(*g);
  add(*active_);
  if (prepared_) add(*prepared_);
  bundle.set_sequence(sequence_);
  bundle.set_refresh_hint(policy_.refresh_hint);
  return bundle;
}

Result<IssuedX509Svid> AuthoritySet::IssueX509Svid(const X509SvidRequest& request, TimePoint now) {
  SIGIL_ASSIGN_OR_RETURN(IssuedX509Svid svid, active_->ca.IssueX509Svid(request, now));
  const TimePoint not_after = svid.leaf.NotAfter();
  auto& until = active_->x509_issued_until;
  if (!until || not_after > *until) until = not_after;
  return svid;
}

Result<std::string> AuthoritySet::MintJwtSvid(const SpiffeId& subject,
                                              std::vector<std::string> audience, TimePoint now,
                                              Seconds ttl) {
  if (!subject.IsMemberOf(options_.trust_domain)) {
    return PermissionDenied("jwt: " + subject.str() + " is not in trust domain " +
                            options_.trust_domain.name());
  }
  if (subject.IsTrustDomainId()) {
    return InvalidArgument("jwt: a JWT-SVID needs a SPIFFE ID with a path");
  }
  if (ttl <= Seconds(0)) return InvalidArgument("jwt: ttl must be positive");
  if (now >= active_->jwt.not_after) return FailedPrecondition("jwt: signing key expired");
  TimePoint exp = std::min(now + ttl, active_->jwt.not_after);
  SIGIL_ASSIGN_OR_RETURN(std::string token,
                         core::MintJwtSvid(active_->jwt.key, active_->jwt.kid,
                                           {subject, std::move(audience), now, exp}));
  auto& until = active_->jwt_issued_until;
  if (!until || CeilToSecond(exp) > *until) until = CeilToSecond(exp);
  return token;
}

}  // namespace sigil::core
