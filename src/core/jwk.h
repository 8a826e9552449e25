// JSON Web Key (RFC 7517/7518) conversion for public keys: EC (P-256/P-384/P-521) and RSA.
// Ed25519 (OKP) keys have no JWT-SVID algorithm and are not representable here.
#pragma once

#include <nlohmann/json.hpp>

#include <string_view>

#include "common/result.h"
#include "core/keys.h"

namespace sigil::core {

// {"kty":"EC","crv":"P-256","x":..,"y":..} or {"kty":"RSA","n":..,"e":..}.
Result<nlohmann::json> PublicKeyToJwk(const PublicKey& key);
// Validates every member it reads (base64url, coordinate length, point on curve, RSA size
// 2048..8192 bits, odd exponent); error messages name the member.
Result<PublicKey> PublicKeyFromJwk(const nlohmann::json& jwk);

// Nesting bound applied by ParseUntrustedJson (JWKS and JOSE objects are at most 3 deep).
inline constexpr int kMaxUntrustedJsonDepth = 32;

// The one JSON entry point for untrusted text (JWKS, JOSE header, JWT claims). Never throws.
// Rejects invalid JSON or UTF-8, nesting deeper than kMaxUntrustedJsonDepth (nlohmann's dump,
// copy and comparison recurse), and duplicate member names in any object (RFC 7515 section 5.2:
// parsers that keep the first vs. the last duplicate would disagree on e.g. `alg`).
// `what` prefixes error messages ("jwks", "jwt: header").
Result<nlohmann::json> ParseUntrustedJson(std::string_view text, std::string_view what);

}  // namespace sigil::core
