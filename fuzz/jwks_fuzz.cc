// Fuzzes TrustBundle::ParseJwks. Invariant: a bundle that parsed re-encodes (ToJwks) to JSON
// that parses again to the same authorities, sequence and refresh hint, and re-encoding is a
// fixed point. The jwt-only encoding (ToJwtJwks) must parse as well.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "core/trust_bundle.h"

using sigil::core::TrustBundle;
using sigil::core::TrustDomain;

namespace {

[[noreturn]] void Fail(const char* what, const sigil::Error* error = nullptr) {
  (void)std::fprintf(stderr, "jwks_fuzz: %s %s\n", what, error ? error->ToString().c_str() : "");
  std::abort();
}

bool SameAuthorities(const TrustBundle& a, const TrustBundle& b) {
  if (a.x509_authorities().size() != b.x509_authorities().size()) return false;
  for (size_t i = 0; i < a.x509_authorities().size(); ++i) {
    if (a.x509_authorities()[i].ToDer() != b.x509_authorities()[i].ToDer()) return false;
  }
  if (a.jwt_authorities().size() != b.jwt_authorities().size()) return false;
  for (const auto& authority : a.jwt_authorities()) {
    const auto* other = b.FindJwtAuthority(authority.kid);
    if (other == nullptr || !other->key.Equals(authority.key)) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const TrustDomain td = *TrustDomain::Parse("example.org");
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto bundle = TrustBundle::ParseJwks(td, text);
  if (!bundle.ok()) return 0;

  const std::string encoded = bundle->ToJwks();
  auto again = TrustBundle::ParseJwks(td, encoded);
  if (!again.ok()) Fail("re-parse of ToJwks failed:", &again.error());
  if (!SameAuthorities(*bundle, *again)) Fail("authorities changed in round trip");
  if (again->sequence() != bundle->sequence()) Fail("sequence changed in round trip");
  if (again->refresh_hint() != bundle->refresh_hint()) Fail("refresh hint changed");
  if (again->ToJwks() != encoded) Fail("ToJwks is not a fixed point");

  auto jwt_only = TrustBundle::ParseJwks(td, bundle->ToJwtJwks());
  if (!jwt_only.ok()) Fail("re-parse of ToJwtJwks failed:", &jwt_only.error());
  if (!jwt_only->x509_authorities().empty() ||
      jwt_only->jwt_authorities().size() != bundle->jwt_authorities().size()) {
    Fail("ToJwtJwks lost or added keys");
  }
  return 0;
}
