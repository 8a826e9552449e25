// AuthoritySet: the signing authorities of one trust domain over time, with rotation.
//
// Each generation is an X.509 CA plus a JWT signing key with the same lifetime. Rotation
// follows the bundle rules of the SPIFFE federation standard (publish before use):
//
//   t = 0                  generation N active
//   t = prepare * ttl      generation N+1 created and published in the bundle (not used yet)
//   t = activate * ttl     N+1 becomes the signer; N stays in the bundle (overlap)
//   t = ttl                N expires and leaves the bundle
//
// With the defaults (ttl 24 h, prepare 1/2, activate 5/6) a new CA is in every relying
// party's bundle 8 h before it signs anything, and the retiring CA still has 4 h of life
// when it stops signing, more than the 1 h X.509-SVID TTL, so no issued leaf is ever cut
// short and no handshake sees an unknown CA.
//
// Thread-compatible: the owner serialises calls (the server wraps it in its own lock and
// publishes TrustBundle snapshots).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "core/ca.h"
#include "core/jwt_svid.h"
#include "core/trust_bundle.h"

namespace sigil::core {

struct RotationPolicy {
  double prepare_fraction = 0.5;
  double activate_fraction = 5.0 / 6.0;
  Seconds refresh_hint{300};
  Result<void> Validate(Seconds ca_ttl, Seconds max_svid_ttl) const;
};

struct UpstreamCa {
  std::vector<Certificate> chain;  // upstream signing certificate first, root last
  std::shared_ptr<const PrivateKey> key;
};

struct JwtSigningKey {
  std::string kid;
  PrivateKey key;
  TimePoint not_after;
};

struct AuthorityGeneration {
  X509Ca ca;
  JwtSigningKey jwt;
};

class AuthoritySet {
 public:
  // Creates generation 1 at `now`. Without `upstream` the CA is a self-signed root.
  static Result<AuthoritySet> Create(const CaOptions& options, const RotationPolicy& policy,
                                     TimePoint now, std::optional<UpstreamCa> upstream = {});

  // Prepares, activates and retires generations as `now` requires. Returns true when the
  // trust bundle changed (its sequence was bumped).
  Result<bool> Rotate(TimePoint now);

  const AuthorityGeneration& active() const { return *active_; }
  const AuthorityGeneration* prepared() const { return prepared_.get(); }
  size_t retired_count() const { return retired_.size(); }

  // Every unexpired generation's root and JWT key, sequence, refresh hint.
  TrustBundle Bundle() const;

  // Persistence: every generation (chains, CA and JWT private keys, kids, roles) and the
  // bundle sequence as JSON inside SecretBytes. The caller seals it (core::Kek) before it
  // touches a disk; temporary strings holding key material are cleansed.
  Result<SecretBytes> Serialize() const;
  // Rebuilds a set from Serialize() output. `options`, `policy` and `upstream` come from the
  // current configuration; the trust domain must match the stored generations.
  static Result<AuthoritySet> Deserialize(const CaOptions& options, const RotationPolicy& policy,
                                          std::optional<UpstreamCa> upstream,
                                          const SecretBytes& serialized);

  Result<IssuedX509Svid> IssueX509Svid(const X509SvidRequest& request, TimePoint now) const;
  // The token's exp is capped at the active JWT key's not_after.
  Result<std::string> MintJwtSvid(const SpiffeId& subject, std::vector<std::string> audience,
                                  TimePoint now, Seconds ttl) const;

 private:
  AuthoritySet(CaOptions options, RotationPolicy policy, std::optional<UpstreamCa> upstream)
      : options_(std::move(options)), policy_(policy), upstream_(std::move(upstream)) {}
  Result<std::unique_ptr<AuthorityGeneration>> NewGeneration(TimePoint now) const;
  TimePoint PrepareAt() const;
  TimePoint ActivateAt() const;

  CaOptions options_;
  RotationPolicy policy_;
  std::optional<UpstreamCa> upstream_;
  std::unique_ptr<AuthorityGeneration> active_;
  std::unique_ptr<AuthorityGeneration> prepared_;
  std::vector<std::unique_ptr<AuthorityGeneration>> retired_;  // still in the bundle
  uint64_t sequence_ = 1;
};

}  // namespace sigil::core
