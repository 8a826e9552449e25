// Lexical rules a selector value must satisfy before the attestor reports it. They mirror
// the resource validator (src/resources/selector.cc, docs/resources.md) so that every
// selector we emit is one a WorkloadIdentity can name; the tests check each emitted
// selector against resources::CanonicalSelector. Pure functions (fuzz-safe).
#pragma once

#include <cstddef>
#include <string_view>

namespace sigil::agent::attest::internal {

// Absolute, normalised path: starts with '/', no empty, "." or ".." segment, no trailing
// '/' ("/" itself only when allow_root), no control bytes, at most 4096 bytes.
bool IsNormalizedAbsolutePath(std::string_view path, bool allow_root);
// unix:user / unix:group value: [A-Za-z0-9._-], 1..32 bytes, not starting with '-'.
bool IsSelectorUnixName(std::string_view name);
// Exactly `len` lowercase hex digits.
bool IsLowerHex(std::string_view s, size_t len);
// Lowercase 8-4-4-4-12 UUID (k8s:pod-uid).
bool IsLowerUuid(std::string_view s);

}  // namespace sigil::agent::attest::internal
