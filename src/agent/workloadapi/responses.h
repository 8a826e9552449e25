// Building Workload API response messages from WorkloadSource data (pure functions; no I/O).
//
// Encodings (spiffe-reference.md section 5):
// - certificates: raw DER concatenated (chain leaf first; bundle = every X.509 authority);
// - x509_svid_key: the source's unencrypted PKCS#8 DER, copied only into the message;
// - bundle maps are keyed by the trust domain's SPIFFE ID ("spiffe://example.org"), as the
//   standard says ("keyed by the SPIFFE ID of the trust domain") and SPIRE sends; go-spiffe
//   and py-spiffe parse that form;
// - JWT bundle values: TrustBundle::ToJwtJwks(), a JWK Set of the jwt-svid keys only, each
//   with "use":"jwt-svid" and its "kid".
//
// Each builder also returns a signature: the response's NON-SECRET content (ids, hints,
// certificate DER, bundles) in a canonical, length-prefixed form, so a stream can tell whether
// anything changed without keeping key bytes around. A new key always comes with a new
// certificate, so the key needs no place in it.
#pragma once

#include <google/protobuf/struct.pb.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "agent/workloadapi/workload_source.h"
#include "common/result.h"
#include "core/trust_bundle.h"
#include "proto/workload.pb.h"

namespace sigil::agent::workloadapi {

template <class Response>
struct Snapshot {
  Response response;
  std::string signature;  // non-secret; equal signatures = equal responses (keys aside)
};

// svids in the source's order (the first is the default). A later SVID whose non-empty hint
// repeats an earlier one is dropped (hints must be unique; SPIRE keeps the first as well).
// Each SVID's bundle is the X.509 bundle of its own trust domain; federated_bundles holds every
// other trust domain of `bundles`.
// PermissionDenied "no identity issued" when `grants` is empty; Unavailable when the bundle of
// an SVID's trust domain is missing (nothing synced yet); Internal for a grant without
// certificates, key or a parseable SPIFFE ID.
Result<Snapshot<X509SVIDResponse>> BuildX509SvidResponse(const std::vector<X509SvidGrant>& grants,
                                                         const core::BundleSet& bundles);

// Every trust domain of `bundles`. Unavailable when `bundles` is empty (no bundle synced yet:
// the standard requires at least our own trust domain).
Result<Snapshot<X509BundlesResponse>> BuildX509BundlesResponse(const core::BundleSet& bundles);
Result<Snapshot<JWTBundlesResponse>> BuildJwtBundlesResponse(const core::BundleSet& bundles);

// Overwrites the key bytes of every SVID in `response` (best effort: gRPC has its own copy).
void WipeKeys(X509SVIDResponse& response);

// JWT claims -> google.protobuf.Struct: numbers stay numbers (double), strings, booleans,
// null, arrays and objects map to their Value kinds. A string "aud" becomes a one-element
// list, as SPIRE returns it (clients index it as a list). `claims` must be an object (else the
// Struct stays empty).
void ClaimsToStruct(const nlohmann::json& claims, google::protobuf::Struct& out);

}  // namespace sigil::agent::workloadapi
