#include "core/jwk.h"

#include <openssl/core_names.h>
#include <openssl/param_build.h>

#include <array>
#include <set>
#include <string>
#include <vector>

#include "common/encoding.h"
#include "common/ossl.h"

namespace sigil::core {
namespace {

using Json = nlohmann::json;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, OsslFree<OSSL_PARAM_BLD_free>>;
using ParamsPtr = std::unique_ptr<OSSL_PARAM, OsslFree<OSSL_PARAM_free>>;

constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 8192;
// OpenSSL refuses exponents above 64 bits for large moduli (RSA_MAX_PUBEXP_BITS).
constexpr size_t kMaxRsaExponentBytes = 8;

struct Curve {
  KeyType type;
  std::string_view jwk_name;
  std::string_view group;  // OpenSSL group name
  size_t coordinate_bytes;
};
constexpr std::array<Curve, 3> kCurves = {{
    {KeyType::kEcP256, "P-256", "prime256v1", 32},
    {KeyType::kEcP384, "P-384", "secp384r1", 48},
    {KeyType::kEcP521, "P-521", "secp521r1", 66},
}};

// Members that would carry private key material (RFC 7518 sections 6.2.2 and 6.3.2).
constexpr std::array<const char*, 6> kPrivateMembers = {"d", "p", "q", "dp", "dq", "qi"};

Error MemberError(std::string_view member, std::string_view why) {
  return InvalidArgument("jwk: member \"" + std::string(member) + "\": " + std::string(why));
}

Result<std::string_view> StringMember(const Json& jwk, const char* name) {
  auto it = jwk.find(name);
  if (it == jwk.end()) return MemberError(name, "missing");
  if (!it->is_string()) return MemberError(name, "must be a string");
  return std::string_view(it->get_ref<const std::string&>());
}

Result<std::vector<uint8_t>> Base64UrlMember(const Json& jwk, const char* name) {
  SIGIL_ASSIGN_OR_RETURN(std::string_view text, StringMember(jwk, name));
  auto bytes = Base64UrlDecode(text);
  if (!bytes.ok()) return MemberError(name, bytes.error().message());
  if (bytes->empty()) return MemberError(name, "empty");
  return bytes;
}

// Big-endian bytes of a BIGNUM key parameter; left-padded to `width` when non-zero.
Result<std::vector<uint8_t>> BnParam(const EVP_PKEY* key, const char* name, size_t width) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1) {
    return OsslError(std::string("jwk: reading key parameter ") + name + " failed");
  }
  BignumPtr bn(raw);
  auto len = static_cast<size_t>(BN_num_bytes(bn.get()));
  if (width != 0) {
    if (len > width) return Internal(std::string("jwk: key parameter ") + name + " too large");
    len = width;
  }
  std::vector<uint8_t> out(len);
  if (BN_bn2binpad(bn.get(), out.data(), static_cast<int>(len)) < 0) {
    return OsslError(std::string("jwk: encoding key parameter ") + name + " failed");
  }
  return out;
}

const Curve* CurveFor(KeyType type) {
  for (const Curve& c : kCurves) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

Result<EvpPkeyPtr> FromData(const char* algorithm, OSSL_PARAM* params) {
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, algorithm, nullptr));
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return OsslError("jwk: key import setup failed");
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params) != 1) {
    return OsslError("jwk: key import failed", ErrorCode::kInvalidArgument);
  }
  return EvpPkeyPtr(raw);
}

Result<PublicKey> Wrap(EVP_PKEY* key) {
  auto pub = PublicKey::FromEvp(key);
  if (!pub.ok()) return std::move(pub).error().WithContext("jwk");
  return pub;
}

Result<PublicKey> EcFromJwk(const Json& jwk) {
  SIGIL_ASSIGN_OR_RETURN(std::string_view crv, StringMember(jwk, "crv"));
  const Curve* curve = nullptr;
  for (const Curve& c : kCurves) {
    if (c.jwk_name == crv) curve = &c;
  }
  if (curve == nullptr) return MemberError("crv", "must be P-256, P-384 or P-521");
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> x, Base64UrlMember(jwk, "x"));
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> y, Base64UrlMember(jwk, "y"));
  const std::string want = "must be " + std::to_string(curve->coordinate_bytes) + " bytes for " +
                           std::string(curve->jwk_name);
  if (x.size() != curve->coordinate_bytes) return MemberError("x", want);
  if (y.size() != curve->coordinate_bytes) return MemberError("y", want);

  std::vector<uint8_t> point;  // SEC1 uncompressed: 0x04 || x || y
  point.reserve(1 + 2 * curve->coordinate_bytes);
  point.push_back(0x04);
  point.insert(point.end(), x.begin(), x.end());
  point.insert(point.end(), y.begin(), y.end());
  std::string group(curve->group);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group.data(), 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
      OSSL_PARAM_construct_end()};
  const std::string off_curve = "(x, y) is not a point on " + std::string(curve->jwk_name);
  auto key = FromData("EC", params);
  if (!key.ok()) {
    ClearOsslErrors();
    return MemberError("x", off_curve);
  }
  // Full public-key validation: on the curve, not infinity, in the prime-order subgroup.
  EvpPkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key->get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ClearOsslErrors();
    return MemberError("x", off_curve);
  }
  // Import reduces coordinates modulo p; insist on the canonical (< p) encoding we received.
  SIGIL_ASSIGN_OR_RETURN(auto x2, BnParam(key->get(), OSSL_PKEY_PARAM_EC_PUB_X, x.size()));
  SIGIL_ASSIGN_OR_RETURN(auto y2, BnParam(key->get(), OSSL_PKEY_PARAM_EC_PUB_Y, y.size()));
  if (x2 != x) return MemberError("x", "not reduced modulo the field prime");
  if (y2 != y) return MemberError("y", "not reduced modulo the field prime");
  return Wrap(key->get());
}

Result<PublicKey> RsaFromJwk(const Json& jwk) {
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> n, Base64UrlMember(jwk, "n"));
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> e, Base64UrlMember(jwk, "e"));
  // RFC 7518 section 6.3.1: both use the minimum number of octets.
  if (n.front() == 0) return MemberError("n", "has a leading zero octet");
  if (e.front() == 0) return MemberError("e", "has a leading zero octet");
  int bits = static_cast<int>(n.size() - 1) * 8;
  for (unsigned top = n.front(); top != 0; top >>= 1) ++bits;
  if (bits < kMinRsaBits || bits > kMaxRsaBits) {
    return MemberError("n", "modulus of " + std::to_string(bits) + " bits is outside 2048..8192");
  }
  if ((n.back() & 1) == 0) return MemberError("n", "modulus must be odd");
  if (e.size() > kMaxRsaExponentBytes) return MemberError("e", "exponent larger than 64 bits");
  if ((e.back() & 1) == 0) return MemberError("e", "exponent must be odd");
  if (e.size() == 1 && e.front() == 1) return MemberError("e", "exponent must be greater than 1");

  BignumPtr bn_n(BN_bin2bn(n.data(), static_cast<int>(n.size()), nullptr));
  BignumPtr bn_e(BN_bin2bn(e.data(), static_cast<int>(e.size()), nullptr));
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bn_n || !bn_e || !bld ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return OsslError("jwk: building RSA parameters failed");
  }
  ParamsPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
  if (!params) return OsslError("jwk: building RSA parameters failed");
  // No EVP_PKEY_public_check here: for RSA it runs Miller-Rabin on n, which an attacker
  // can make expensive with a prime "modulus"; the checks above are what a verifier needs.
  auto key = FromData("RSA", params.get());
  if (!key.ok()) {
    ClearOsslErrors();
    return MemberError("n", "not a usable RSA public key");
  }
  return Wrap(key->get());
}

// Maximum nesting of brackets outside strings; stops counting once `limit` is exceeded.
int MaxNesting(std::string_view text, int limit) {
  int depth = 0;
  int max_depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) max_depth = depth;
      if (max_depth > limit) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

}  // namespace

Result<nlohmann::json> PublicKeyToJwk(const PublicKey& input) {
  if (input.type() == KeyType::kEd25519) {
    return InvalidArgument("jwk: Ed25519 keys are not representable (no JWT-SVID algorithm)");
  }
  // Re-decode from SubjectPublicKeyInfo: keys cached on freshly built certificates may be
  // legacy (EC_KEY/RSA) objects, whose parameters OpenSSL 3.0 does not expose as "qx"/"qy".
  const std::vector<uint8_t> spki = input.ToDer();
  if (spki.empty()) return OsslError("jwk: encoding public key failed");
  SIGIL_ASSIGN_OR_RETURN(PublicKey key, PublicKey::FromDer(spki));
  Json jwk = Json::object();
  if (const Curve* curve = CurveFor(key.type())) {
    SIGIL_ASSIGN_OR_RETURN(auto x,
                           BnParam(key.get(), OSSL_PKEY_PARAM_EC_PUB_X, curve->coordinate_bytes));
    SIGIL_ASSIGN_OR_RETURN(auto y,
                           BnParam(key.get(), OSSL_PKEY_PARAM_EC_PUB_Y, curve->coordinate_bytes));
    jwk["kty"] = "EC";
    jwk["crv"] = std::string(curve->jwk_name);
    jwk["x"] = Base64UrlEncode(x);
    jwk["y"] = Base64UrlEncode(y);
    return jwk;
  }
  SIGIL_ASSIGN_OR_RETURN(auto n, BnParam(key.get(), OSSL_PKEY_PARAM_RSA_N, 0));
  SIGIL_ASSIGN_OR_RETURN(auto e, BnParam(key.get(), OSSL_PKEY_PARAM_RSA_E, 0));
  jwk["kty"] = "RSA";
  jwk["n"] = Base64UrlEncode(n);
  jwk["e"] = Base64UrlEncode(e);
  return jwk;
}

Result<PublicKey> PublicKeyFromJwk(const nlohmann::json& jwk) {
  if (!jwk.is_object()) return InvalidArgument("jwk: must be a JSON object");
  for (const char* member : kPrivateMembers) {
    if (jwk.contains(member)) return MemberError(member, "private key material is not allowed");
  }
  SIGIL_ASSIGN_OR_RETURN(std::string_view kty, StringMember(jwk, "kty"));
  if (kty == "EC") return EcFromJwk(jwk);
  if (kty == "RSA") return RsaFromJwk(jwk);
  return MemberError("kty", "unsupported key type (EC or RSA)");
}

Result<nlohmann::json> ParseUntrustedJson(std::string_view text, std::string_view what) {
  const std::string prefix(what);
  if (MaxNesting(text, kMaxUntrustedJsonDepth) > kMaxUntrustedJsonDepth) {
    return InvalidArgument(prefix + ": JSON nested deeper than " +
                           std::to_string(kMaxUntrustedJsonDepth) + " levels");
  }
  // Member names seen so far in each open object, innermost last.
  std::vector<std::set<std::string>> open;
  bool duplicate = false;
  auto on_event = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open.empty()) open.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!open.empty() && parsed.is_string() &&
            !open.back().insert(parsed.get_ref<const std::string&>()).second) {
          duplicate = true;
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json out;
  try {
    out = Json::parse(text.begin(), text.end(), on_event, /*allow_exceptions=*/false);
  } catch (const std::exception&) {  // belt: allow_exceptions=false should make this dead
    return InvalidArgument(prefix + ": not valid JSON");
  }
  if (out.is_discarded()) return InvalidArgument(prefix + ": not valid JSON");
  if (duplicate) return InvalidArgument(prefix + ": duplicate member name");
  return out;
}

}  // namespace sigil::core
