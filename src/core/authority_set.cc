#include "core/authority_set.h"

namespace sigil::core {
namespace {

TimePoint At(const X509Ca& ca, double fraction) {
  auto life = ca.not_after() - ca.not_before();
  return ca.not_before() + std::chrono::duration_cast<TimePoint::duration>(life * fraction);
}

}  // namespace

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
      AuthorityGeneration{std::move(ca).value(), {std::move(kid), std::move(jwt_key), not_after}});
}

TimePoint AuthoritySet::PrepareAt() const { return At(active_->ca, policy_.prepare_fraction); }
TimePoint AuthoritySet::ActivateAt() const { return At(active_->ca, policy_.activate_fraction); }

Result<bool> AuthoritySet::Rotate(TimePoint now) {
  bool changed = false;
  // Loop: after a long pause (a server that was down for days) several steps may be due.
  for (int step = 0; step < 8; ++step) {
    bool acted = false;
    std::erase_if(retired_, [&](const auto& g) {
      bool expired = now >= g->ca.not_after();
      acted |= expired;
      return expired;
    });
    if (!prepared_ && now >= PrepareAt()) {
      SIGIL_ASSIGN_OR_RETURN(prepared_, NewGeneration(now));
      acted = true;
    }
    if (prepared_ && now >= ActivateAt()) {
      retired_.push_back(std::move(active_));
      active_ = std::move(prepared_);
      acted = true;
    }
    // An active generation that already expired (server was down past its end) is replaced
    // at once: signing with it is impossible anyway.
    if (now >= active_->ca.not_after()) {
      retired_.push_back(std::move(active_));
      SIGIL_ASSIGN_OR_RETURN(active_, NewGeneration(now));
      acted = true;
    }
    if (!acted) break;
    changed = true;
  }
  if (changed) ++sequence_;
  return changed;
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

Result<IssuedX509Svid> AuthoritySet::IssueX509Svid(const X509SvidRequest& request,
                                                   TimePoint now) const {
  return active_->ca.IssueX509Svid(request, now);
}

Result<std::string> AuthoritySet::MintJwtSvid(const SpiffeId& subject,
                                              std::vector<std::string> audience, TimePoint now,
                                              Seconds ttl) const {
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
  return core::MintJwtSvid(active_->jwt.key, active_->jwt.kid,
                           {subject, std::move(audience), now, exp});
}

}  // namespace sigil::core
