#include "agent/workloadapi/responses.h"

#include <openssl/crypto.h>

#include <set>
#include <string_view>
#include <utility>

#include "core/certificate.h"
#include "core/spiffe_id.h"

namespace sigil::agent::workloadapi {
namespace {

void AppendField(std::string& signature, std::string_view field) {
  signature.append(std::to_string(field.size()));
  signature.push_back(':');
  signature.append(field);
}

std::string_view AsChars(const std::vector<uint8_t>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

void ObjectToStruct(const nlohmann::json& object, google::protobuf::Struct& out);

void ToValue(const nlohmann::json& j, google::protobuf::Value& out) {
  switch (j.type()) {
    case nlohmann::json::value_t::boolean:
      out.set_bool_value(j.get<bool>());
      return;
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      out.set_number_value(j.get<double>());
      return;
    case nlohmann::json::value_t::string:
      out.set_string_value(j.get_ref<const std::string&>());
      return;
    case nlohmann::json::value_t::array: {
      google::protobuf::ListValue* list = out.mutable_list_value();
      for (const nlohmann::json& item : j) ToValue(item, *list->add_values());
      return;
    }
    case nlohmann::json::value_t::object:
      ObjectToStruct(j, *out.mutable_struct_value());
      return;
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::binary:
    case nlohmann::json::value_t::discarded:
      out.set_null_value(google::protobuf::NULL_VALUE);
      return;
  }
  out.set_null_value(google::protobuf::NULL_VALUE);
}

void ObjectToStruct(const nlohmann::json& object, google::protobuf::Struct& out) {
  auto& fields = *out.mutable_fields();
  for (const auto& [name, value] : object.items()) ToValue(value, fields[name]);
}

}  // namespace

Result<Snapshot<X509SVIDResponse>> BuildX509SvidResponse(const std::vector<X509SvidGrant>& grants,
                                                         const core::BundleSet& bundles) {
  if (grants.empty()) return PermissionDenied("no identity issued");
  Snapshot<X509SVIDResponse> out;
  std::set<std::string> hints;
  std::set<core::TrustDomain> own_domains;
  for (const X509SvidGrant& grant : grants) {
    auto id = core::SpiffeId::Parse(grant.spiffe_id);
    if (!id.ok()) return Internal("source returned an SVID with an invalid SPIFFE ID");
    if (grant.chain.empty()) return Internal("source returned no certificate for " + id->str());
    if (grant.key_pkcs8_der.empty()) return Internal("source returned no key for " + id->str());
    if (!grant.hint.empty() && !hints.insert(grant.hint).second) continue;
    std::shared_ptr<const core::TrustBundle> bundle = bundles.Find(id->trust_domain());
    if (!bundle) {
      return Unavailable("no trust bundle for trust domain \"" + id->trust_domain().name() +
                         "\" yet");
    }
    own_domains.insert(id->trust_domain());
    const std::vector<uint8_t> chain_der = core::CertificatesToDer(grant.chain);
    const std::vector<uint8_t> bundle_der = bundle->X509AuthoritiesDer();
    X509SVID* svid = out.response.add_svids();
    svid->set_spiffe_id(grant.spiffe_id);
    svid->set_x509_svid(chain_der.data(), chain_der.size());
    svid->set_x509_svid_key(grant.key_pkcs8_der.data(), grant.key_pkcs8_der.size());
    svid->set_bundle(bundle_der.data(), bundle_der.size());
    svid->set_hint(grant.hint);
    AppendField(out.signature, "svid");
    AppendField(out.signature, grant.spiffe_id);
    AppendField(out.signature, grant.hint);
    AppendField(out.signature, AsChars(chain_der));
    AppendField(out.signature, AsChars(bundle_der));
  }
  for (const auto& [td, bundle] : bundles.all()) {
    if (own_domains.contains(td)) continue;
    const std::vector<uint8_t> der = bundle->X509AuthoritiesDer();
    (*out.response.mutable_federated_bundles())[td.IdString()] = std::string(AsChars(der));
    AppendField(out.signature, "federated");
    AppendField(out.signature, td.IdString());
    AppendField(out.signature, AsChars(der));
  }
  return out;
}

Result<Snapshot<X509BundlesResponse>> BuildX509BundlesResponse(const core::BundleSet& bundles) {
  if (bundles.all().empty()) return Unavailable("no trust bundle synced yet");
  Snapshot<X509BundlesResponse> out;
  for (const auto& [td, bundle] : bundles.all()) {
    const std::vector<uint8_t> der = bundle->X509AuthoritiesDer();
    (*out.response.mutable_bundles())[td.IdString()] = std::string(AsChars(der));
    AppendField(out.signature, td.IdString());
    AppendField(out.signature, AsChars(der));
  }
  return out;
}

Result<Snapshot<JWTBundlesResponse>> BuildJwtBundlesResponse(const core::BundleSet& bundles) {
  if (bundles.all().empty()) return Unavailable("no trust bundle synced yet");
  Snapshot<JWTBundlesResponse> out;
  for (const auto& [td, bundle] : bundles.all()) {
    std::string jwks = bundle->ToJwtJwks();
    AppendField(out.signature, td.IdString());
    AppendField(out.signature, jwks);
    (*out.response.mutable_bundles())[td.IdString()] = std::move(jwks);
  }
  return out;
}

void WipeKeys(X509SVIDResponse& response) {
  for (X509SVID& svid : *response.mutable_svids()) {
    std::string* key = svid.mutable_x509_svid_key();
    if (!key->empty()) OPENSSL_cleanse(key->data(), key->size());
    key->clear();
  }
}

void ClaimsToStruct(const nlohmann::json& claims, google::protobuf::Struct& out) {
  if (!claims.is_object()) return;
  ObjectToStruct(claims, out);
  auto& fields = *out.mutable_fields();
  auto aud = fields.find("aud");
  if (aud != fields.end() && aud->second.kind_case() == google::protobuf::Value::kStringValue) {
    std::string single = aud->second.string_value();
    aud->second.mutable_list_value()->add_values()->set_string_value(std::move(single));
  }
}

}  // namespace sigil::agent::workloadapi
