// JWT-SVIDs (JWT-SVID standard; spiffe-reference.md section 3): minting and validation.
//
// Validation follows the standard's order exactly: compact JWS with one signature, `alg`
// checked against the allow-list FIRST (so `none` and HS* never reach key lookup), `sub`
// parsed as a SPIFFE ID, bundle of sub's trust domain, key by `kid`, signature, then `exp`
// (with leeway) and every expected audience.
#pragma once

#include <nlohmann/json.hpp>

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "core/keys.h"
#include "core/spiffe_id.h"
#include "core/trust_bundle.h"

namespace sigil::core {

inline constexpr size_t kMaxJwtBytes = size_t{16} * 1024;
inline constexpr Seconds kDefaultJwtLeeway{30};

struct JwtSvid {
  SpiffeId id;
  std::vector<std::string> audience;
  TimePoint expiry;
  nlohmann::json claims;  // every claim of the payload (ValidateJWTSVID returns them)
  std::string token;      // the compact serialisation
};

struct JwtMintParams {
  SpiffeId subject;
  std::vector<std::string> audience;  // at least one
  TimePoint issued_at;
  TimePoint expires_at;
};

// Signs with ES256/ES384/ES512 for P-256/P-384/P-521 keys and RS256 for RSA keys; Ed25519
// keys are refused (EdDSA is not a JWT-SVID algorithm). Header: {"alg","kid","typ":"JWT"}.
Result<std::string> MintJwtSvid(const PrivateKey& key, std::string_view kid,
                                const JwtMintParams& params);

struct JwtValidationOptions {
  Seconds leeway = kDefaultJwtLeeway;
};

// Errors: InvalidArgument for malformed tokens, Unauthenticated for a bad signature, an
// unknown kid, a missing bundle, expiry or audience mismatch. Messages never echo the token.
Result<JwtSvid> ValidateJwtSvid(std::string_view token, const BundleSet& bundles,
                                std::span<const std::string> expected_audience, TimePoint now,
                                const JwtValidationOptions& options = {});

// Parses the token without verifying anything (for logging its sub/exp or for tests).
Result<JwtSvid> ParseJwtSvidInsecure(std::string_view token);

}  // namespace sigil::core
