// X509Ca: one signing authority of a trust domain, and X.509-SVID issuance.
//
// A CA is either a self-signed root carrying the trust domain's SPIFFE ID (no path), or an
// intermediate that Sigil mints under an operator-supplied upstream CA. Either way the
// issued leaves satisfy every rule of the X509-SVID standard (spiffe-reference.md section 2):
// one URI SAN, cA=false, critical KeyUsage with digitalSignature (never keyCertSign/cRLSign),
// EKU serverAuth+clientAuth, optional DNS SANs, 128-bit random serial, a small notBefore
// backdate, and notAfter never past the signer's notAfter.
//
// X509Ca is immutable after creation; IssueX509Svid may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "core/certificate.h"
#include "core/keys.h"
#include "core/spiffe_id.h"

namespace sigil::core {

inline constexpr Seconds kDefaultCaTtl{24 * 3600};
inline constexpr Seconds kDefaultX509SvidTtl{3600};
inline constexpr Seconds kDefaultJwtSvidTtl{300};
inline constexpr Seconds kDefaultBackdate{10};
inline constexpr size_t kMaxDnsSans = 32;

struct CaOptions {
  TrustDomain trust_domain;
  KeyType key_type = KeyType::kEcP256;
  Seconds ttl = kDefaultCaTtl;
  Seconds backdate = kDefaultBackdate;
};

struct X509SvidRequest {
  SpiffeId id;
  PublicKey public_key;  // from a verified CSR, or an agent-held key
  std::vector<std::string> dns_names;
  Seconds ttl = kDefaultX509SvidTtl;
};

struct IssuedX509Svid {
  Certificate leaf;
  // leaf first, then the CA's intermediates (never the root): what a TLS peer presents.
  std::vector<Certificate> chain;
  // The DER of `leaf` exactly as signed (leaf.ToDer() yields the same bytes, at the cost of a
  // re-encoding): what the server sends, without encoding the certificate again.
  std::vector<uint8_t> der;
};

class X509Ca {
 public:
  // New key pair and self-signed root valid from now-backdate to now+ttl.
  static Result<X509Ca> CreateSelfSigned(const CaOptions& options, TimePoint now);
  // New key pair and an intermediate signed by `upstream_key`. `upstream_chain` starts with
  // the certificate of `upstream_key` and must end with a self-signed root; the minted
  // intermediate is path-validated against that root before it is returned. Its notAfter is
  // capped at the upstream certificate's.
  static Result<X509Ca> CreateIntermediate(const CaOptions& options,
                                           std::span<const Certificate> upstream_chain,
                                           const PrivateKey& upstream_key, TimePoint now);
  // Rebuilds a CA persisted earlier: `chain` = signing certificate first, root last (one
  // element for a self-signed CA). Checks the key matches and the chain links.
  static Result<X509Ca> Load(const TrustDomain& td, std::vector<Certificate> chain, PrivateKey key,
                             Seconds backdate = kDefaultBackdate);

  X509Ca(X509Ca&&) noexcept = default;
  X509Ca& operator=(X509Ca&&) noexcept = default;

  Result<IssuedX509Svid> IssueX509Svid(const X509SvidRequest& request, TimePoint now) const;
  // Issues a throwaway leaf and verifies it against root(): proves the chain works end to end.
  Result<void> SelfTest(TimePoint now) const;

  const TrustDomain& trust_domain() const { return td_; }
  const Certificate& certificate() const { return chain_.front(); }
  // The trust anchor that goes into the bundle (the root of the chain).
  const Certificate& root() const { return chain_.back(); }
  // signing certificate first, root last.
  const std::vector<Certificate>& chain() const { return chain_; }
  const PrivateKey& key() const { return key_; }
  TimePoint not_before() const { return not_before_; }
  TimePoint not_after() const { return not_after_; }

 private:
  X509Ca(TrustDomain td, std::vector<Certificate> chain, PrivateKey key, Seconds backdate);
  // Everything a leaf shares with every other leaf of this CA, encoded once (names, fixed
  // extensions, AKID, an initialised signing context). Issuance copies from it.
  struct LeafTemplate;
  static Result<std::shared_ptr<const LeafTemplate>> BuildLeafTemplate(const X509Ca& ca);
  static Result<void> TemplateSignatureAlgorithm(const X509Ca& ca, LeafTemplate& t);
  Result<X509Ca> Finish() &&;
  Result<X509Ptr> NewLeafObject(std::span<const uint8_t> serial, TimePoint not_before,
                                TimePoint not_after, const PublicKey& key) const;
  Result<std::vector<uint8_t>> SignLeaf(std::span<const uint8_t> tbs) const;

  TrustDomain td_;
  std::vector<Certificate> chain_;
  std::vector<Certificate> leaf_suffix_;  // chain_ minus the root
  PrivateKey key_;
  Seconds backdate_;
  TimePoint not_before_;
  TimePoint not_after_;
  std::shared_ptr<const LeafTemplate> leaf_template_;
};

// 16 random bytes as a positive ASN.1 INTEGER (never zero).
Result<Asn1IntegerPtr> RandomSerial();
// 128 random bits, base64url: the kid of a new JWT authority.
Result<std::string> RandomKeyId();

}  // namespace sigil::core
