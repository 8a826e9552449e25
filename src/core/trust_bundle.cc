#include "core/trust_bundle.h"

#include <nlohmann/json.hpp>

#include <array>
#include <limits>

#include "common/encoding.h"
#include "core/jwk.h"

namespace sigil::core {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kUseX509 = "x509-svid";
constexpr std::string_view kUseJwt = "jwt-svid";
constexpr size_t kEd25519KeyBytes = 32;

std::string Where(size_t index) { return "jwks: keys[" + std::to_string(index) + "]"; }

Error EntryError(size_t index, std::string_view member, std::string_view why) {
  return InvalidArgument(Where(index) + ": member \"" + std::string(member) +
                         "\": " + std::string(why));
}

// The JWK key parameters of a CA certificate's key: EC/RSA as PublicKeyToJwk produces them,
// Ed25519 as an OKP key (RFC 8037). Ed25519 is fine for an X.509 authority; only JWT-SVIDs
// have no Ed25519 algorithm.
Result<Json> KeyParams(const PublicKey& key) {
  if (key.type() != KeyType::kEd25519) return PublicKeyToJwk(key);
  std::array<uint8_t, kEd25519KeyBytes> raw{};
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), raw.data(), &len) != 1 || len != raw.size()) {
    return OsslError("jwk: reading Ed25519 public key failed");
  }
  return Json{{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", Base64UrlEncode(raw)}};
}

bool IsX509KeyType(std::string_view kty) { return kty == "EC" || kty == "RSA" || kty == "OKP"; }
bool IsJwtKeyType(std::string_view kty) { return kty == "EC" || kty == "RSA"; }

// Returns the certificate of an x509-svid entry, or nullopt when the entry has no (or an
// empty) x5c and must be skipped.
Result<std::optional<Certificate>> X509EntryCertificate(const Json& entry, size_t index) {
  if (entry.contains("kid")) {
    return EntryError(index, "kid", "must not be set on an x509-svid entry");
  }
  auto x5c = entry.find("x5c");
  if (x5c == entry.end()) return std::optional<Certificate>();
  if (!x5c->is_array()) return EntryError(index, "x5c", "must be an array");
  if (x5c->empty()) return std::optional<Certificate>();
  const Json& first = x5c->front();  // the standard says: use x5c[0] only
  if (!first.is_string()) return EntryError(index, "x5c", "x5c[0] must be a string");
  auto der = Base64Decode(first.get_ref<const std::string&>());
  if (!der.ok()) return EntryError(index, "x5c", "x5c[0]: " + der.error().message());
  auto cert = Certificate::FromDer(*der);
  if (!cert.ok()) return EntryError(index, "x5c", "x5c[0]: " + cert.error().message());
  if (!cert->IsCa()) return EntryError(index, "x5c", "x5c[0] is not a CA certificate");
  return std::optional<Certificate>(std::move(cert).value());
}

// The entry's key parameters must describe the key of x5c[0] (go-jose rejects a mismatch
// too). Comparing against our canonical encoding also rejects non-minimal encodings.
Result<void> CheckKeyMatches(const Json& entry, const Certificate& cert, size_t index) {
  // A bundle is public: private key members mean someone published a secret by mistake.
  for (const char* member : {"d", "p", "q", "dp", "dq", "qi"}) {
    if (entry.contains(member)) {
      return EntryError(index, member, "private key material is not allowed");
    }
  }
  auto cert_key = cert.PublicKeyOf();
  if (!cert_key.ok()) return EntryError(index, "x5c", "x5c[0]: " + cert_key.error().message());
  auto params = KeyParams(*cert_key);
  if (!params.ok()) return EntryError(index, "x5c", "x5c[0]: " + params.error().message());
  for (const auto& [name, value] : params->items()) {
    auto it = entry.find(name);
    if (it == entry.end() || *it != value) {
      return EntryError(index, name, "does not match the key of x5c[0]");
    }
  }
  return Ok();
}

Result<void> ParseEntry(TrustBundle& bundle, const Json& entry, size_t index) {
  if (!entry.is_object()) return InvalidArgument(Where(index) + ": must be a JSON object");
  auto use = entry.find("use");
  if (use == entry.end() || !use->is_string()) return Ok();  // missing use: skip
  const auto& use_text = use->get_ref<const std::string&>();
  if (use_text != kUseX509 && use_text != kUseJwt) return Ok();  // unknown use: skip
  auto kty = entry.find("kty");
  if (kty == entry.end()) return EntryError(index, "kty", "missing");
  if (!kty->is_string()) return EntryError(index, "kty", "must be a string");
  const auto& kty_text = kty->get_ref<const std::string&>();

  if (use_text == kUseX509) {
    if (!IsX509KeyType(kty_text)) return Ok();  // unknown kty: skip
    SIGIL_ASSIGN_OR_RETURN(std::optional<Certificate> cert, X509EntryCertificate(entry, index));
    if (!cert) return Ok();  // missing or empty x5c: skip
    SIGIL_TRY(CheckKeyMatches(entry, *cert, index));
    bundle.AddX509Authority(std::move(*cert));
    return Ok();
  }

  if (!IsJwtKeyType(kty_text)) return Ok();  // no JWT-SVID algorithm for this kty: skip
  auto kid = entry.find("kid");
  if (kid == entry.end()) return EntryError(index, "kid", "required on a jwt-svid entry");
  if (!kid->is_string() || kid->get_ref<const std::string&>().empty()) {
    return EntryError(index, "kid", "must be a non-empty string");
  }
  auto key = PublicKeyFromJwk(entry);
  if (!key.ok()) return std::move(key).error().WithContext(Where(index));
  auto added = bundle.AddJwtAuthority(kid->get<std::string>(), std::move(key).value());
  if (!added.ok()) return std::move(added).error().WithContext(Where(index));
  return Ok();
}

Result<void> ParseMetadata(TrustBundle& bundle, const Json& doc) {
  if (auto seq = doc.find("spiffe_sequence"); seq != doc.end()) {
    if (!seq->is_number_unsigned() && !(seq->is_number_integer() && seq->get<int64_t>() >= 0)) {
      return InvalidArgument("jwks: member \"spiffe_sequence\": must be a non-negative integer");
    }
    bundle.set_sequence(seq->get<uint64_t>());
  }
  if (auto hint = doc.find("spiffe_refresh_hint"); hint != doc.end()) {
    const bool in_range =
        hint->is_number_integer() &&
        (hint->is_number_unsigned()
             ? hint->get<uint64_t>() <= uint64_t{std::numeric_limits<int64_t>::max()}
             : hint->get<int64_t>() >= 0);
    if (!in_range) {
      return InvalidArgument(
          "jwks: member \"spiffe_refresh_hint\": must be a non-negative integer (seconds)");
    }
    bundle.set_refresh_hint(Seconds(hint->get<int64_t>()));
  }
  return Ok();
}

std::string Dump(const Json& doc) {
  // `replace` keeps dump() from throwing on a kid that is not valid UTF-8 (possible only via
  // AddJwtAuthority; parsed kids are valid UTF-8).
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json JwtEntries(const std::vector<JwtAuthority>& authorities) {
  Json keys = Json::array();
  for (const JwtAuthority& authority : authorities) {
    auto jwk = PublicKeyToJwk(authority.key);
    if (!jwk.ok()) continue;  // unreachable: AddJwtAuthority admits EC and RSA keys only
    (*jwk)["use"] = kUseJwt;
    (*jwk)["kid"] = authority.kid;
    keys.push_back(std::move(jwk).value());
  }
  return keys;
}

}  // namespace

Result<TrustBundle> TrustBundle::ParseJwks(const TrustDomain& td, std::string_view json) {
  if (json.size() > kMaxJwksBytes) return ResourceExhausted("jwks: larger than 1 MiB");
  SIGIL_ASSIGN_OR_RETURN(Json doc, ParseUntrustedJson(json, "jwks"));
  if (!doc.is_object()) return InvalidArgument("jwks: must be a JSON object");
  auto keys = doc.find("keys");
  if (keys == doc.end()) return InvalidArgument("jwks: member \"keys\": missing");
  if (!keys->is_array()) return InvalidArgument("jwks: member \"keys\": must be an array");
  if (keys->size() > kMaxJwksKeys) {
    return ResourceExhausted("jwks: member \"keys\": more than " + std::to_string(kMaxJwksKeys) +
                             " entries");
  }
  TrustBundle bundle(td);
  SIGIL_TRY(ParseMetadata(bundle, doc));
  for (size_t i = 0; i < keys->size(); ++i) {
    SIGIL_TRY(ParseEntry(bundle, (*keys)[i], i));
  }
  return bundle;
}

Result<TrustBundle> TrustBundle::FromX509Pem(const TrustDomain& td, std::string_view pem) {
  auto certs = ParseCertificatesPem(pem);
  if (!certs.ok()) return std::move(certs).error().WithContext("x509 bundle");
  if (certs->empty()) return InvalidArgument("x509 bundle: no CERTIFICATE blocks");
  TrustBundle bundle(td);
  for (size_t i = 0; i < certs->size(); ++i) {
    if (!(*certs)[i].IsCa()) {
      return InvalidArgument("x509 bundle: certificate " + std::to_string(i) +
                             " is not a CA certificate");
    }
    bundle.AddX509Authority((*certs)[i]);
  }
  return bundle;
}

std::string TrustBundle::ToJwks() const {
  Json keys = Json::array();
  for (const Certificate& cert : x509_) {
    auto key = cert.PublicKeyOf();
    if (!key.ok()) continue;  // a key type a JWK cannot carry could never be parsed back
    auto jwk = KeyParams(*key);
    if (!jwk.ok()) continue;
    (*jwk)["use"] = kUseX509;
    (*jwk)["x5c"] = Json::array({Base64Encode(cert.ToDer())});
    keys.push_back(std::move(jwk).value());
  }
  for (Json& entry : JwtEntries(jwt_)) keys.push_back(std::move(entry));
  Json doc = {{"keys", std::move(keys)}, {"spiffe_sequence", sequence_}};
  if (refresh_hint_) doc["spiffe_refresh_hint"] = refresh_hint_->count();
  return Dump(doc);
}

std::string TrustBundle::ToJwtJwks() const {
  // Like go-spiffe's jwtbundle.Marshal: the keys only.
  return Dump(Json{{"keys", JwtEntries(jwt_)}});
}

std::string TrustBundle::X509AuthoritiesPem() const { return CertificatesToPem(x509_); }

std::vector<uint8_t> TrustBundle::X509AuthoritiesDer() const { return CertificatesToDer(x509_); }

void TrustBundle::AddX509Authority(Certificate cert) {
  const std::vector<uint8_t> der = cert.ToDer();
  for (const Certificate& existing : x509_) {
    if (existing.ToDer() == der) return;
  }
  x509_.push_back(std::move(cert));
}

Result<void> TrustBundle::AddJwtAuthority(std::string kid, PublicKey key) {
  if (kid.empty()) return InvalidArgument("jwt authority: kid must not be empty");
  if (key.type() == KeyType::kEd25519) {
    return InvalidArgument("jwt authority: Ed25519 keys have no JWT-SVID algorithm");
  }
  for (const JwtAuthority& existing : jwt_) {
    if (existing.kid != kid) continue;
    if (existing.key.Equals(key)) return Ok();
    return InvalidArgument("jwt authority: kid is already used by a different key");
  }
  jwt_.push_back(JwtAuthority{std::move(kid), std::move(key)});
  return Ok();
}

const JwtAuthority* TrustBundle::FindJwtAuthority(std::string_view kid) const {
  for (const JwtAuthority& authority : jwt_) {
    if (authority.kid == kid) return &authority;
  }
  return nullptr;
}

void BundleSet::Put(std::shared_ptr<const TrustBundle> bundle) {
  if (!bundle) return;
  TrustDomain td = bundle->trust_domain();
  by_td_.insert_or_assign(std::move(td), std::move(bundle));
}

std::shared_ptr<const TrustBundle> BundleSet::Find(const TrustDomain& td) const {
  auto it = by_td_.find(td);
  return it == by_td_.end() ? nullptr : it->second;
}

}  // namespace sigil::core
