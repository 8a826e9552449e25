// AuthoritySet persistence (Serialize / Deserialize).
#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

#include "common/encoding.h"
#include "core/authority_set.h"
#include "core/jwk.h"

namespace sigil::core {
namespace {

constexpr int kFormatVersion = 1;

// Cleanses a std::string that held key material before it is freed.
struct ScrubOnExit {
  std::string& s;
  ~ScrubOnExit() { OPENSSL_cleanse(s.data(), s.size()); }
};

// Whole Unix seconds, rounded up: a stored expiry bound must not fall below the real one.
int64_t CeilUnixSeconds(TimePoint t) {
  const int64_t s = ToUnixSeconds(t);
  return FromUnixSeconds(s) < t ? s + 1 : s;
}

nlohmann::json OptionalTime(const std::optional<TimePoint>& t) {
  return t ? nlohmann::json(CeilUnixSeconds(*t)) : nlohmann::json(nullptr);
}

Result<nlohmann::json> EncodeGeneration(const AuthorityGeneration& g, std::string_view role) {
  SIGIL_ASSIGN_OR_RETURN(SecretBytes ca_key, g.ca.key().ToPkcs8Der());
  SIGIL_ASSIGN_OR_RETURN(SecretBytes jwt_key, g.jwt.key.ToPkcs8Der());
  nlohmann::json j{{"role", role},
                   {"chain_pem", CertificatesToPem(g.ca.chain())},
                   {"ca_key", Base64Encode(ca_key.span())},
                   {"jwt_kid", g.jwt.kid},
                   {"jwt_key", Base64Encode(jwt_key.span())},
                   {"jwt_not_after", ToUnixSeconds(g.jwt.not_after)},
                   // null: signed nothing yet. Absent (a set stored by an older version): the
                   // CA's / JWT key's notAfter.
                   {"x509_issued_until", OptionalTime(g.x509_issued_until)},
                   {"jwt_issued_until", OptionalTime(g.jwt_issued_until)}};
  if (g.activate_at) j["activate_at"] = CeilUnixSeconds(*g.activate_at);
  return j;
}

// An optional time member: absent -> `absent`; null -> nullopt; else an integer of Unix seconds
// within [0, 2^40) (well past year 30000; keeps TimePoint arithmetic far from overflow).
Result<std::optional<TimePoint>> TimeMember(const nlohmann::json& j, const char* name, size_t index,
                                            std::optional<TimePoint> absent) {
  auto it = j.find(name);
  if (it == j.end()) return absent;
  if (it->is_null()) return std::optional<TimePoint>();
  if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
      it->get<int64_t>() >= (int64_t{1} << 40)) {
    return InvalidArgument("authorities: generation " + std::to_string(index) + ": member \"" +
                           name + "\" must be null or Unix seconds");
  }
  return std::optional<TimePoint>(FromUnixSeconds(it->get<int64_t>()));
}

Result<std::string> StringMember(const nlohmann::json& j, const char* name, size_t index) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) {
    return InvalidArgument("authorities: generation " + std::to_string(index) + ": member \"" +
                           name + "\" missing or not a string");
  }
  return it->get<std::string>();
}

Result<PrivateKey> KeyMember(const nlohmann::json& j, const char* name, size_t index) {
  SIGIL_ASSIGN_OR_RETURN(std::string b64, StringMember(j, name, index));
  ScrubOnExit scrub_b64{b64};
  auto der = Base64Decode(b64);
  if (!der.ok()) return std::move(der).error().WithContext(name);
  SecretBytes secret = SecretBytes::Copy(std::span<const uint8_t>(*der));
  OPENSSL_cleanse(der->data(), der->size());
  return PrivateKey::FromPkcs8Der(secret.span());
}

}  // namespace

Result<SecretBytes> AuthoritySet::Serialize() const {
  nlohmann::json gens = nlohmann::json::array();
  for (const auto& g : retired_) {
    SIGIL_ASSIGN_OR_RETURN(auto j, EncodeGeneration(*g, "retired"));
    gens.push_back(std::move(j));
  }
  SIGIL_ASSIGN_OR_RETURN(auto active, EncodeGeneration(*active_, "active"));
  gens.push_back(std::move(active));
  if (prepared_) {
    SIGIL_ASSIGN_OR_RETURN(auto j, EncodeGeneration(*prepared_, "prepared"));
    gens.push_back(std::move(j));
  }
  nlohmann::json doc = {{"version", kFormatVersion},
                        {"trust_domain", options_.trust_domain.name()},
                        {"sequence", sequence_},
                        {"generations", std::move(gens)}};
  std::string text = doc.dump();
  ScrubOnExit scrub{text};
  for (auto& g : doc["generations"]) {
    for (const char* k : {"ca_key", "jwt_key"}) {
      auto& v = g[k].get_ref<std::string&>();
      OPENSSL_cleanse(v.data(), v.size());
    }
  }
  return SecretBytes::Copy(text);
}

Result<AuthoritySet> AuthoritySet::Deserialize(const CaOptions& options,
                                               const RotationPolicy& policy,
                                               std::optional<UpstreamCa> upstream,
                                               const SecretBytes& serialized) {
  auto doc = nlohmann::json::parse(serialized.view(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgument("authorities: stored state is not a JSON object");
  }
  if (doc.value("version", 0) != kFormatVersion) {
    return FailedPrecondition("authorities: unsupported stored format version");
  }
  if (!doc.contains("trust_domain") || !doc["trust_domain"].is_string() ||
      doc["trust_domain"].get<std::string>() != options.trust_domain.name()) {
    return FailedPrecondition("authorities: stored CA belongs to trust domain \"" +
                              doc.value("trust_domain", std::string("?")) +
                              "\", the configuration says \"" + options.trust_domain.name() + "\"");
  }
  if (!doc.contains("generations") || !doc["generations"].is_array() || !doc.contains("sequence") ||
      !doc["sequence"].is_number_unsigned()) {
    return InvalidArgument("authorities: stored state lacks generations or sequence");
  }
  AuthoritySet set(options, policy, std::move(upstream));
  set.sequence_ = doc["sequence"].get<uint64_t>();
  size_t index = 0;
  for (auto& g : doc["generations"]) {
    if (!g.is_object()) return InvalidArgument("authorities: generation is not an object");
    SIGIL_ASSIGN_OR_RETURN(std::string role, StringMember(g, "role", index));
    SIGIL_ASSIGN_OR_RETURN(std::string chain_pem, StringMember(g, "chain_pem", index));
    SIGIL_ASSIGN_OR_RETURN(std::string kid, StringMember(g, "jwt_kid", index));
    SIGIL_ASSIGN_OR_RETURN(PrivateKey ca_key, KeyMember(g, "ca_key", index));
    SIGIL_ASSIGN_OR_RETURN(PrivateKey jwt_key, KeyMember(g, "jwt_key", index));
    for (const char* k : {"ca_key", "jwt_key"}) {
      auto& v = g[k].get_ref<std::string&>();
      OPENSSL_cleanse(v.data(), v.size());
    }
    if (!g.contains("jwt_not_after") || !g["jwt_not_after"].is_number_integer()) {
      return InvalidArgument("authorities: generation lacks jwt_not_after");
    }
    SIGIL_ASSIGN_OR_RETURN(auto chain, ParseCertificatesPem(chain_pem));
    SIGIL_ASSIGN_OR_RETURN(X509Ca ca, X509Ca::Load(options.trust_domain, std::move(chain),
                                                   std::move(ca_key), options.backdate));
    const TimePoint jwt_not_after = FromUnixSeconds(g["jwt_not_after"].get<int64_t>());
    SIGIL_ASSIGN_OR_RETURN(auto x509_until,
                           TimeMember(g, "x509_issued_until", index, ca.not_after()));
    SIGIL_ASSIGN_OR_RETURN(auto jwt_until, TimeMember(g, "jwt_issued_until", index, jwt_not_after));
    SIGIL_ASSIGN_OR_RETURN(auto activate_at, TimeMember(g, "activate_at", index, std::nullopt));
    if (activate_at && role != "prepared") {
      return InvalidArgument("authorities: generation " + std::to_string(index) +
                             ": activate_at on a generation that is not prepared");
    }
    auto gen = std::make_unique<AuthorityGeneration>(
        AuthorityGeneration{std::move(ca),
                            {kid, std::move(jwt_key), jwt_not_after},
                            x509_until,
                            jwt_until,
                            activate_at});
    if (role == "active") {
      if (set.active_) return InvalidArgument("authorities: two active generations");
      set.active_ = std::move(gen);
    } else if (role == "prepared") {
      if (set.prepared_) return InvalidArgument("authorities: two prepared generations");
      set.prepared_ = std::move(gen);
    } else if (role == "retired") {
      set.retired_.push_back(std::move(gen));
    } else {
      return InvalidArgument("authorities: unknown generation role \"" + role + "\"");
    }
    ++index;
  }
  if (!set.active_) return InvalidArgument("authorities: no active generation");
  return set;
}

}  // namespace sigil::core
