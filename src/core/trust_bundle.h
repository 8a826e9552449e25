// Trust bundles (SPIFFE Trust Domain and Bundle standard; spiffe-reference.md section 4).
//
// A TrustBundle is the set of X.509 authorities (CA certificates) and JWT authorities
// (kid -> public key) of ONE trust domain, with its spiffe_sequence and spiffe_refresh_hint.
// Bundles of different trust domains are never merged: BundleSet keys them by trust domain.
// TrustBundle is a value type (thread-compatible); share snapshots as
// std::shared_ptr<const TrustBundle>.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "core/certificate.h"
#include "core/keys.h"
#include "core/spiffe_id.h"

namespace sigil::core {

inline constexpr size_t kMaxJwksBytes = size_t{1024} * 1024;
inline constexpr size_t kMaxJwksKeys = 256;

struct JwtAuthority {
  std::string kid;
  PublicKey key;
};

class TrustBundle {
 public:
  explicit TrustBundle(TrustDomain td) : td_(std::move(td)) {}

  // Decodes a SPIFFE bundle (RFC 7517 JWK Set). Entries with an unknown/missing `use` or
  // unknown `kty` are skipped, as the standard requires; entries that claim a known use but
  // are malformed (x509-svid with a kid, bad base64, jwt-svid without kid, ...) are errors
  // naming the key index and member.
  static Result<TrustBundle> ParseJwks(const TrustDomain& td, std::string_view json);
  // X.509 authorities only, from one or more PEM CERTIFICATE blocks.
  static Result<TrustBundle> FromX509Pem(const TrustDomain& td, std::string_view pem);

  // {"keys":[...],"spiffe_sequence":N,"spiffe_refresh_hint":S}; x509-svid entries carry the
  // key parameters plus x5c (no kid); jwt-svid entries carry kid.
  std::string ToJwks() const;
  // Only the jwt-svid entries (Workload API JWTBundlesResponse values).
  std::string ToJwtJwks() const;
  // Concatenated PEM of the X.509 authorities (for openssl -CAfile, curl --cacert, ...).
  std::string X509AuthoritiesPem() const;
  // Concatenated DER of the X.509 authorities (Workload API encoding).
  std::vector<uint8_t> X509AuthoritiesDer() const;

  // Adds a CA certificate; a certificate already present (same DER) is ignored.
  void AddX509Authority(Certificate cert);
  // Adds a JWT key. The same kid with an equal key is a no-op; with a different key it is
  // InvalidArgument (kids must be unique within a bundle).
  Result<void> AddJwtAuthority(std::string kid, PublicKey key);
  // Borrowed pointer into this bundle, or nullptr.
  const JwtAuthority* FindJwtAuthority(std::string_view kid) const;

  const TrustDomain& trust_domain() const { return td_; }
  const std::vector<Certificate>& x509_authorities() const { return x509_; }
  const std::vector<JwtAuthority>& jwt_authorities() const { return jwt_; }
  uint64_t sequence() const { return sequence_; }
  void set_sequence(uint64_t s) { sequence_ = s; }
  std::optional<Seconds> refresh_hint() const { return refresh_hint_; }
  void set_refresh_hint(std::optional<Seconds> hint) { refresh_hint_ = hint; }

 private:
  TrustDomain td_;
  std::vector<Certificate> x509_;
  std::vector<JwtAuthority> jwt_;
  uint64_t sequence_ = 0;
  std::optional<Seconds> refresh_hint_;
};

// Bundles by trust domain. Thread-compatible; publish a new BundleSet rather than mutating a
// shared one.
class BundleSet {
 public:
  void Put(std::shared_ptr<const TrustBundle> bundle);
  // nullptr when there is no bundle for `td` (an SVID of that domain is then untrusted).
  std::shared_ptr<const TrustBundle> Find(const TrustDomain& td) const;
  const std::map<TrustDomain, std::shared_ptr<const TrustBundle>>& all() const { return by_td_; }

 private:
  std::map<TrustDomain, std::shared_ptr<const TrustBundle>> by_td_;
};

}  // namespace sigil::core
