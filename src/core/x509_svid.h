// X.509-SVID verification (X509-SVID standard section 5; spiffe-reference.md section 2).
#pragma once

#include <span>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "core/certificate.h"
#include "core/keys.h"
#include "core/spiffe_id.h"
#include "core/trust_bundle.h"

namespace sigil::core {

// An SVID together with its private key, as held by an agent or delivered to a workload.
struct X509Svid {
  SpiffeId id;
  std::vector<Certificate> chain;  // leaf first
  PrivateKey key;
};

// The SPIFFE ID of a certificate: exactly one URI SAN, which must parse as a SPIFFE ID.
Result<SpiffeId> SpiffeIdFromCertificate(const Certificate& cert);

// Leaf rules: cA=false; KeyUsage present and critical, with digitalSignature and without
// keyCertSign/cRLSign; exactly one URI SAN with a non-root path; EKU, if present, includes
// serverAuth and clientAuth.
Result<SpiffeId> CheckLeafProfile(const Certificate& leaf);

// Full verification: leaf profile, then RFC 5280 path validation with the bundle of the
// trust domain named in the leaf's ID as the only trust anchors and the remaining
// certificates of `chain` as untrusted intermediates, at time `now`. Returns the verified ID.
// Unauthenticated when the chain does not validate or there is no bundle for the domain.
Result<SpiffeId> VerifyX509Svid(std::span<const Certificate> chain, const BundleSet& bundles,
                                TimePoint now);

}  // namespace sigil::core
