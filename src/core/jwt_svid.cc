#include "core/jwt_svid.h"

#include <openssl/ecdsa.h>

#include <array>
#include <cmath>
#include <optional>

#include "common/encoding.h"
#include "core/jwk.h"

namespace sigil::core {
namespace {

using Json = nlohmann::json;

enum class Family { kRsaPkcs1, kRsaPss, kEcdsa };

struct Algorithm {
  std::string_view name;
  Family family;
  const EVP_MD* (*digest)();
  KeyType ec_key;   // ES* only: the one curve the alg may be used with
  size_t ec_bytes;  // ES* only: size of r and of s in the JWS signature
};

// The JWT-SVID allow-list (spiffe-reference.md section 3). Anything else, notably `none`,
// HS* and EdDSA, is rejected before any other part of the token is looked at.
constexpr std::array<Algorithm, 9> kAlgorithms = {{
    {"RS256", Family::kRsaPkcs1, EVP_sha256, KeyType::kEcP256, 0},
    {"RS384", Family::kRsaPkcs1, EVP_sha384, KeyType::kEcP256, 0},
    {"RS512", Family::kRsaPkcs1, EVP_sha512, KeyType::kEcP256, 0},
    {"PS256", Family::kRsaPss, EVP_sha256, KeyType::kEcP256, 0},
    {"PS384", Family::kRsaPss, EVP_sha384, KeyType::kEcP256, 0},
    {"PS512", Family::kRsaPss, EVP_sha512, KeyType::kEcP256, 0},
    {"ES256", Family::kEcdsa, EVP_sha256, KeyType::kEcP256, 32},
    {"ES384", Family::kEcdsa, EVP_sha384, KeyType::kEcP384, 48},
    {"ES512", Family::kEcdsa, EVP_sha512, KeyType::kEcP521, 66},
}};

// Largest NumericDate that still converts to a TimePoint (system_clock counts nanoseconds).
constexpr int64_t kMaxNumericDate =
    std::chrono::duration_cast<Seconds>(TimePoint::duration::max()).count();

const Algorithm* FindAlgorithm(std::string_view name) {
  for (const Algorithm& alg : kAlgorithms) {
    if (alg.name == name) return &alg;
  }
  return nullptr;
}

bool IsRsa(KeyType type) {
  return type == KeyType::kRsa2048 || type == KeyType::kRsa3072 || type == KeyType::kRsa4096;
}

bool KeyFitsAlgorithm(const Algorithm& alg, KeyType type) {
  return alg.family == Family::kEcdsa ? type == alg.ec_key : IsRsa(type);
}

// For error messages: attacker-chosen strings are shown only as short printable ASCII.
std::string Printable(std::string_view s) {
  constexpr size_t kMaxShown = 32;
  std::string out;
  for (char c : s.substr(0, kMaxShown)) {
    out += (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? c : '?';
  }
  if (s.size() > kMaxShown) out += "...";
  return out;
}

// ---- ECDSA signature formats: JWS uses r||s, OpenSSL uses DER ECDSA-Sig-Value ----

Result<std::vector<uint8_t>> EcdsaRawToDer(std::span<const uint8_t> raw) {
  const int half = static_cast<int>(raw.size() / 2);
  BignumPtr r(BN_bin2bn(raw.data(), half, nullptr));
  BignumPtr s(BN_bin2bn(raw.data() + half, half, nullptr));
  EcdsaSigPtr sig(ECDSA_SIG_new());
  if (!r || !s || !sig || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
    return OsslError("jwt: converting signature failed");
  }
  (void)r.release();  // owned by `sig` now
  (void)s.release();
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(sig.get(), &der);
  if (len <= 0) return OsslError("jwt: converting signature failed");
  std::vector<uint8_t> out(der, der + len);
  OPENSSL_free(der);
  return out;
}

Result<std::vector<uint8_t>> EcdsaDerToRaw(std::span<const uint8_t> der, size_t half) {
  const unsigned char* p = der.data();
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig) return OsslError("jwt: mint: malformed ECDSA signature");
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  std::vector<uint8_t> out(2 * half);
  if (BN_bn2binpad(r, out.data(), static_cast<int>(half)) < 0 ||
      BN_bn2binpad(s, out.data() + half, static_cast<int>(half)) < 0) {
    return Internal("jwt: mint: ECDSA signature component too large");
  }
  return out;
}

// ---- Parsing ----

struct ParsedToken {
  const Algorithm* alg = nullptr;
  std::string kid;  // empty when the header has none
  std::string_view signing_input;
  std::vector<uint8_t> signature;  // as carried in the token (r||s for ES*)
  Json claims;
};

Result<Json> DecodeJsonSegment(std::string_view segment, std::string_view what) {
  auto bytes = Base64UrlDecode(segment);
  if (!bytes.ok()) return std::move(bytes).error().WithContext(what);
  SIGIL_ASSIGN_OR_RETURN(Json doc, ParseUntrustedJson(AsChars(*bytes), what));
  if (!doc.is_object()) return InvalidArgument(std::string(what) + ": must be a JSON object");
  return doc;
}

Result<void> ParseHeader(std::string_view segment, ParsedToken& out) {
  SIGIL_ASSIGN_OR_RETURN(Json header, DecodeJsonSegment(segment, "jwt: header"));
  // The allow-list comes first: nothing else in the token is looked at for a bad alg.
  auto alg = header.find("alg");
  if (alg == header.end()) return InvalidArgument("jwt: header: alg is missing");
  if (!alg->is_string()) return InvalidArgument("jwt: header: alg must be a string");
  out.alg = FindAlgorithm(alg->get_ref<const std::string&>());
  if (out.alg == nullptr) {
    return InvalidArgument("jwt: header: alg \"" + Printable(alg->get_ref<const std::string&>()) +
                           "\" is not allowed");
  }
  for (const auto& [name, value] : header.items()) {
    if (name != "alg" && name != "kid" && name != "typ") {
      return InvalidArgument("jwt: header: member \"" + Printable(name) + "\" is not allowed");
    }
  }
  if (auto typ = header.find("typ"); typ != header.end()) {
    if (!typ->is_string() || (*typ != "JWT" && *typ != "JOSE")) {
      return InvalidArgument(R"(jwt: header: typ must be "JWT" or "JOSE")");
    }
  }
  if (auto kid = header.find("kid"); kid != header.end()) {
    if (!kid->is_string() || kid->get_ref<const std::string&>().empty()) {
      return InvalidArgument("jwt: header: kid must be a non-empty string");
    }
    out.kid = kid->get<std::string>();
  }
  return Ok();
}

// NumericDate (RFC 7519 section 2) as whole seconds; nullopt when absent and optional.
Result<std::optional<int64_t>> NumericDate(const Json& claims, const char* name, bool required) {
  const std::string what = std::string("jwt: claim \"") + name + "\"";
  auto it = claims.find(name);
  if (it == claims.end()) {
    if (required) return InvalidArgument(what + ": missing");
    return std::optional<int64_t>();
  }
  if (!it->is_number()) return InvalidArgument(what + ": must be a number");
  const auto max = static_cast<double>(kMaxNumericDate);
  if (it->is_number_unsigned()) {
    if (it->get<uint64_t>() > uint64_t{kMaxNumericDate}) {
      return InvalidArgument(what + ": out of range");
    }
    return std::optional<int64_t>(it->get<int64_t>());
  }
  if (it->is_number_integer()) {
    if (it->get<int64_t>() < 0) return InvalidArgument(what + ": out of range");
    return std::optional<int64_t>(it->get<int64_t>());
  }
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < 0 || v > max) return InvalidArgument(what + ": out of range");
  return std::optional<int64_t>(static_cast<int64_t>(std::floor(v)));
}

Result<std::vector<std::string>> Audience(const Json& claims) {
  auto aud = claims.find("aud");
  if (aud == claims.end()) return InvalidArgument("jwt: claim \"aud\": missing");
  std::vector<std::string> out;
  if (aud->is_string()) {
    out.push_back(aud->get<std::string>());
  } else if (aud->is_array() && !aud->empty()) {
    for (const Json& a : *aud) {
      if (!a.is_string()) return InvalidArgument("jwt: claim \"aud\": entries must be strings");
      out.push_back(a.get<std::string>());
    }
  } else {
    return InvalidArgument("jwt: claim \"aud\": must be a string or a non-empty array");
  }
  for (const std::string& a : out) {
    if (a.empty()) return InvalidArgument("jwt: claim \"aud\": empty audience");
  }
  return out;
}

Result<ParsedToken> ParseToken(std::string_view token) {
  if (token.size() > kMaxJwtBytes) return InvalidArgument("jwt: larger than 16 KiB");
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return InvalidArgument("jwt: not a compact JWS (exactly three '.'-separated segments)");
  }
  ParsedToken out;
  SIGIL_TRY(ParseHeader(token.substr(0, dot1), out));
  out.signing_input = token.substr(0, dot2);
  SIGIL_ASSIGN_OR_RETURN(out.claims,
                         DecodeJsonSegment(token.substr(dot1 + 1, dot2 - dot1 - 1), "jwt: claims"));
  auto signature = Base64UrlDecode(token.substr(dot2 + 1));
  if (!signature.ok()) return std::move(signature).error().WithContext("jwt: signature");
  if (signature->empty()) return InvalidArgument("jwt: signature: empty");
  if (out.alg->family == Family::kEcdsa && signature->size() != 2 * out.alg->ec_bytes) {
    return InvalidArgument("jwt: signature: must be " + std::to_string(2 * out.alg->ec_bytes) +
                           " bytes for " + std::string(out.alg->name));
  }
  out.signature = std::move(signature).value();
  return out;
}

// Reads sub, aud and exp (required) and type-checks nbf and iat.
Result<JwtSvid> ClaimsToSvid(ParsedToken& parsed, std::string_view token) {
  const Json& claims = parsed.claims;
  auto sub = claims.find("sub");
  if (sub == claims.end()) return InvalidArgument("jwt: claim \"sub\": missing");
  if (!sub->is_string()) return InvalidArgument("jwt: claim \"sub\": must be a string");
  auto id = SpiffeId::Parse(sub->get_ref<const std::string&>());
  if (!id.ok()) return std::move(id).error().WithContext("jwt: claim \"sub\"");
  SIGIL_ASSIGN_OR_RETURN(std::optional<int64_t> exp, NumericDate(claims, "exp", true));
  SIGIL_ASSIGN_OR_RETURN(std::vector<std::string> audience, Audience(claims));
  SIGIL_TRY(NumericDate(claims, "nbf", false));
  SIGIL_TRY(NumericDate(claims, "iat", false));
  return JwtSvid{std::move(id).value(), std::move(audience), FromUnixSeconds(*exp),
                 std::move(parsed.claims), std::string(token)};
}

// Time claims at one-second granularity, as go-jose does: exp is honoured until
// exp + leeway inclusive; nbf and iat may be up to `leeway` in the future.
Result<void> CheckTimes(const Json& claims, TimePoint now, Seconds leeway) {
  const int64_t now_s = ToUnixSeconds(now);
  const int64_t slack = leeway.count();
  // Both operands of each difference are within +-kMaxNumericDate, so none overflows.
  SIGIL_ASSIGN_OR_RETURN(std::optional<int64_t> exp, NumericDate(claims, "exp", true));
  if (now_s - *exp > slack) return Unauthenticated("jwt: token has expired");
  SIGIL_ASSIGN_OR_RETURN(std::optional<int64_t> nbf, NumericDate(claims, "nbf", false));
  if (nbf && *nbf - now_s > slack) return Unauthenticated("jwt: token is not valid yet (nbf)");
  SIGIL_ASSIGN_OR_RETURN(std::optional<int64_t> iat, NumericDate(claims, "iat", false));
  if (iat && *iat - now_s > slack) return Unauthenticated("jwt: token issued in the future (iat)");
  return Ok();
}

Result<void> VerifyTokenSignature(const ParsedToken& parsed, const PublicKey& key) {
  std::vector<uint8_t> der;
  std::span<const uint8_t> signature = parsed.signature;
  if (parsed.alg->family == Family::kEcdsa) {
    SIGIL_ASSIGN_OR_RETURN(der, EcdsaRawToDer(parsed.signature));
    signature = der;
  }
  auto verified = VerifySignature(key, AsBytes(parsed.signing_input), signature,
                                  parsed.alg->digest(), parsed.alg->family == Family::kRsaPss);
  if (!verified.ok()) return Unauthenticated("jwt: signature verification failed");
  return Ok();
}

// ---- Minting ----

Result<const Algorithm*> MintAlgorithm(KeyType type) {
  switch (type) {
    case KeyType::kEcP256:
      return FindAlgorithm("ES256");
    case KeyType::kEcP384:
      return FindAlgorithm("ES384");
    case KeyType::kEcP521:
      return FindAlgorithm("ES512");
    case KeyType::kRsa2048:
    case KeyType::kRsa3072:
    case KeyType::kRsa4096:
      return FindAlgorithm("RS256");
    case KeyType::kEd25519:
      break;
  }
  return InvalidArgument("jwt: mint: " + std::string(KeyTypeName(type)) +
                         " keys cannot sign JWT-SVIDs");
}

// base64url(header) "." base64url(claims), after checking the parameters.
Result<std::string> MintSigningInput(const Algorithm& alg, std::string_view kid,
                                     const JwtMintParams& params) {
  if (kid.empty()) return InvalidArgument("jwt: mint: kid is required");
  if (params.audience.empty()) return InvalidArgument("jwt: mint: at least one audience");
  for (const std::string& a : params.audience) {
    if (a.empty()) return InvalidArgument("jwt: mint: empty audience");
  }
  if (params.expires_at <= params.issued_at) {
    return InvalidArgument("jwt: mint: expires_at must be after issued_at");
  }
  const Json header = {{"alg", alg.name}, {"kid", kid}, {"typ", "JWT"}};
  const Json aud =
      params.audience.size() == 1 ? Json(params.audience.front()) : Json(params.audience);
  const Json claims = {{"sub", params.subject.str()},
                       {"aud", aud},
                       {"exp", ToUnixSeconds(params.expires_at)},
                       {"iat", ToUnixSeconds(params.issued_at)}};
  try {
    return Base64UrlEncode(header.dump()) + "." + Base64UrlEncode(claims.dump());
  } catch (const Json::exception&) {  // dump() throws on invalid UTF-8
    return InvalidArgument("jwt: mint: kid and audience must be valid UTF-8");
  }
}

// ---- Validation ----

// Caller errors: an empty expectation would accept a token minted for anyone.
Result<void> CheckValidationArguments(std::span<const std::string> expected_audience,
                                      const JwtValidationOptions& options) {
  if (expected_audience.empty()) return InvalidArgument("jwt: no expected audience given");
  for (const std::string& a : expected_audience) {
    if (a.empty()) return InvalidArgument("jwt: expected audience is empty");
  }
  if (options.leeway < Seconds(0)) return InvalidArgument("jwt: leeway must not be negative");
  return Ok();
}

// go-spiffe semantics: every expected audience must be in the token.
Result<void> CheckAudience(const std::vector<std::string>& audience,
                           std::span<const std::string> expected_audience) {
  for (const std::string& expected : expected_audience) {
    bool found = false;
    for (const std::string& a : audience) found = found || a == expected;
    if (!found) {
      return Unauthenticated("jwt: audience does not include \"" + Printable(expected) + "\"");
    }
  }
  return Ok();
}

}  // namespace

Result<std::string> MintJwtSvid(const PrivateKey& key, std::string_view kid,
                                const JwtMintParams& params) {
  SIGIL_ASSIGN_OR_RETURN(const Algorithm* alg, MintAlgorithm(key.type()));
  SIGIL_ASSIGN_OR_RETURN(std::string token, MintSigningInput(*alg, kid, params));
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> signature,
                         key.Sign(AsBytes(token), alg->digest(), false));
  if (alg->family == Family::kEcdsa) {
    SIGIL_ASSIGN_OR_RETURN(signature, EcdsaDerToRaw(signature, alg->ec_bytes));
  }
  token += ".";
  token += Base64UrlEncode(signature);
  // Never hand out a token that validators (ours included) would refuse on size.
  if (token.size() > kMaxJwtBytes) return InvalidArgument("jwt: mint: token larger than 16 KiB");
  return token;
}

Result<JwtSvid> ParseJwtSvidInsecure(std::string_view token) {
  SIGIL_ASSIGN_OR_RETURN(ParsedToken parsed, ParseToken(token));
  return ClaimsToSvid(parsed, token);
}

Result<JwtSvid> ValidateJwtSvid(std::string_view token, const BundleSet& bundles,
                                std::span<const std::string> expected_audience, TimePoint now,
                                const JwtValidationOptions& options) {
  SIGIL_TRY(CheckValidationArguments(expected_audience, options));
  SIGIL_ASSIGN_OR_RETURN(ParsedToken parsed, ParseToken(token));  // alg allow-list first
  if (parsed.kid.empty()) return InvalidArgument("jwt: header: kid is missing");
  SIGIL_ASSIGN_OR_RETURN(JwtSvid svid, ClaimsToSvid(parsed, token));

  const TrustDomain& td = svid.id.trust_domain();
  std::shared_ptr<const TrustBundle> bundle = bundles.Find(td);
  if (!bundle) {
    return Unauthenticated("jwt: no bundle for trust domain \"" + td.name() + "\"");
  }
  const JwtAuthority* authority = bundle->FindJwtAuthority(parsed.kid);
  if (authority == nullptr) {
    return Unauthenticated("jwt: kid \"" + Printable(parsed.kid) +
                           "\" is not a JWT authority of \"" + td.name() + "\"");
  }
  if (!KeyFitsAlgorithm(*parsed.alg, authority->key.type())) {
    return Unauthenticated("jwt: alg " + std::string(parsed.alg->name) +
                           " does not match the key type (" +
                           std::string(KeyTypeName(authority->key.type())) + ") of the kid");
  }
  SIGIL_TRY(VerifyTokenSignature(parsed, authority->key));
  SIGIL_TRY(CheckTimes(svid.claims, now, options.leeway));
  SIGIL_TRY(CheckAudience(svid.audience, expected_audience));
  return svid;
}

}  // namespace sigil::core
