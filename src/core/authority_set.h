// AuthoritySet: the signing authorities of one trust domain over time, with rotation.
//
// Each generation is an X.509 CA plus a JWT signing key with the same lifetime. Rotation
// follows the bundle rules of the SPIFFE federation standard (publish before use):
//
//   t = 0                  generation N active
//   t = prepare * ttl      generation N+1 created and published in the bundle (not used yet)
//   t = activate * ttl     N+1 becomes the signer; N stays in the bundle (overlap)
//   later                  N leaves the bundle once everything it signed has expired
//
// With the defaults (ttl 24 h, prepare 1/2, activate 5/6) a new CA is in every relying
// party's bundle 8 h before it signs anything, and the retiring CA still has 4 h of life
// when it stops signing, more than the 1 h X.509-SVID TTL, so no issued leaf is ever cut
// short and no handshake sees an unknown CA.
//
// Besides this schedule, RotateNow (`sigil ca rotate`) prepares a generation at once and
// activates it after an operator-chosen propagation delay.
//
// Every generation records the latest expiry of what it signed: the notAfter of its X.509
// leaves and the exp of its JWT-SVIDs. A generation that no longer signs leaves the bundle
// once the last of those has expired (plus the JWT validation leeway when it minted JWTs),
// which after an early rotation is long before its CA certificate expires.
//
// Thread-compatible: the owner serialises calls (the server wraps it in its own lock and
// publishes TrustBundle snapshots).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
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
  // The latest notAfter of any X.509 certificate this generation signed, and the latest exp
  // of any JWT-SVID it minted; nullopt while it signed none. Deserialize of a set stored
  // before these were recorded takes the CA's (the JWT key's) notAfter: the old rule.
  std::optional<TimePoint> x509_issued_until;
  std::optional<TimePoint> jwt_issued_until;
  // A prepared generation: when RotateNow scheduled its activation (nullopt: the automatic
  // schedule alone).
  std::optional<TimePoint> activate_at;

  // When this generation may leave the bundle once it no longer signs: after the last of its
  // X.509 leaves and (with kDefaultJwtLeeway) JWT-SVIDs expired, at the latest when its CA
  // expires. Removal happens at the first Rotate with now > LeavesBundleAt().
  TimePoint LeavesBundleAt() const;
};

enum class GenerationRole { kPrepared, kActive, kRetiring };
std::string_view RoleName(GenerationRole role);  // "prepared", "active", "retiring"

// What AuthoritySet::Generations reports about one generation (for `sigil ca status`).
struct GenerationInfo {
  GenerationRole role = GenerationRole::kActive;
  std::string ca_sha256;    // the generation's CA certificate (its intermediate under upstream)
  std::string root_sha256;  // the trust anchor it chains to
  std::string jwt_kid;
  TimePoint not_before;
  TimePoint not_after;
  // Prepared: when it becomes the signer (the earlier of a RotateNow schedule and the
  // automatic one); `scheduled` says RotateNow set it.
  std::optional<TimePoint> activate_at;
  bool scheduled = false;
  std::optional<TimePoint> x509_issued_until;
  std::optional<TimePoint> jwt_issued_until;
  // Retiring: AuthorityGeneration::LeavesBundleAt().
  std::optional<TimePoint> leaves_bundle_at;
};

// One step Rotate or RotateNow took.
struct RotationStep {
  enum class Kind {
    kPrepared,   // a new generation was published (not signing yet)
    kActivated,  // the prepared generation signs now; `previous` is retiring
    kRetired,    // a generation left the bundle
  };
  Kind kind = Kind::kPrepared;
  GenerationInfo generation;               // the generation the step is about, after the step
  std::optional<GenerationInfo> previous;  // kActivated: the generation that stopped signing
  bool expired = false;  // kActivated: the active CA had expired (the server was down)
};

class AuthoritySet {
 public:
  // Creates generation 1 at `now`. Without `upstream` the CA is a self-signed root.
  static Result<AuthoritySet> Create(const CaOptions& options, const RotationPolicy& policy,
                                     TimePoint now, std::optional<UpstreamCa> upstream = {});

  // Prepares, activates and retires generations as `now` requires. Returns true when the
  // trust bundle changed (its sequence was bumped). Appends what it did to `steps`.
  Result<bool> Rotate(TimePoint now, std::vector<RotationStep>* steps = nullptr);
  // Whether Rotate(now) would change anything (cheap; no key generation).
  bool RotationDue(TimePoint now) const;

  // Explicit rotation: prepares (and publishes) a new generation now unless one is prepared
  // already, and schedules the prepared generation's activation at now + activate_after,
  // rounded up to a whole second (a later Rotate activates it; the automatic activation time
  // still applies if it comes first). Returns the prepared generation; `created` tells whether it
  // is new (the bundle changed then). InvalidArgument for a negative delay.
  Result<GenerationInfo> RotateNow(TimePoint now, Seconds activate_after, bool* created = nullptr);

  const AuthorityGeneration& active() const { return *active_; }
  const AuthorityGeneration* prepared() const { return prepared_.get(); }
  size_t retired_count() const { return retired_.size(); }
  // Retiring generations (oldest first), the active one, then the prepared one.
  std::vector<GenerationInfo> Generations() const;

  // Raises the active generation's recorded expiries to at least these (each capped at the
  // CA's, the JWT key's, notAfter): a bound written ahead of issuance so that a persisted
  // state always covers what was issued since (see ControlPlane).
  void ExtendIssuedUntil(std::optional<TimePoint> x509, std::optional<TimePoint> jwt);
  // The same for the generation whose JWT key id is `jwt_kid`, whatever its role now (another
  // server replica may have activated a newer generation since this one signed). False when no
  // generation in the set has that kid (it left the bundle).
  bool ExtendIssuedUntil(std::string_view jwt_kid, std::optional<TimePoint> x509,
                         std::optional<TimePoint> jwt);

  // Every generation still in the bundle: root and JWT key, sequence, refresh hint.
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

  // Both record the expiry of what they sign in the active generation.
  Result<IssuedX509Svid> IssueX509Svid(const X509SvidRequest& request, TimePoint now);
  // The token's exp is capped at the active JWT key's not_after.
  Result<std::string> MintJwtSvid(const SpiffeId& subject, std::vector<std::string> audience,
                                  TimePoint now, Seconds ttl);

 private:
  AuthoritySet(CaOptions options, RotationPolicy policy, std::optional<UpstreamCa> upstream)
      : options_(std::move(options)), policy_(policy), upstream_(std::move(upstream)) {}
  Result<std::unique_ptr<AuthorityGeneration>> NewGeneration(TimePoint now) const;
  TimePoint PrepareAt() const;
  TimePoint ActivateAt() const;  // of the prepared generation: automatic or scheduled
  GenerationInfo Info(const AuthorityGeneration& g, GenerationRole role) const;

  CaOptions options_;
  RotationPolicy policy_;
  std::optional<UpstreamCa> upstream_;
  std::unique_ptr<AuthorityGeneration> active_;
  std::unique_ptr<AuthorityGeneration> prepared_;
  std::vector<std::unique_ptr<AuthorityGeneration>> retired_;  // still in the bundle
  uint64_t sequence_ = 1;
};

}  // namespace sigil::core
