#include "resources/resource.h"

#include <algorithm>
#include <array>

#include <yaml-cpp/emitter.h>

#include "resources/document_reader.h"

namespace sigil::resources {
namespace {

constexpr std::array<std::string_view, 5> kKindNames = {
    "WorkloadIdentity", "Service", "CredentialSource", "CredentialBinding", "AccessPolicy"};

constexpr std::string_view kStaticSecrets[] = {"value"};
constexpr std::string_view kAwsSecrets[] = {"secretAccessKey", "sessionToken"};
constexpr std::string_view kOauth2Secrets[] = {"clientSecret"};

// Dumps never throw on bad UTF-8 (input is checked, but escapes can still produce it).
std::string Dump(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json Document(const Resource& r, bool with_version) {
  nlohmann::json meta = {{"name", r.name}};
  if (with_version && r.resource_version) {
    meta["resourceVersion"] = std::to_string(*r.resource_version);
  }
  nlohmann::json spec = r.spec;
  // Defence in depth: a Resource built by hand may still carry secrets in spec.
  if (spec.is_object()) ExtractSecrets(r.kind, spec);
  return {
      {"apiVersion", kApiVersion}, {"kind", KindName(r.kind)}, {"metadata", meta}, {"spec", spec}};
}

void Emit(YAML::Emitter& out, const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object:
      if (j.empty()) out << YAML::Flow;
      out << YAML::BeginMap;
      for (const auto& [k, v] : j.items()) {
        out << YAML::Key << k << YAML::Value;
        Emit(out, v);
      }
      out << YAML::EndMap;
      break;
    case nlohmann::json::value_t::array:
      if (j.empty()) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const auto& v : j) Emit(out, v);
      out << YAML::EndSeq;
      break;
    case nlohmann::json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      if (s.find('\n') != std::string::npos) {
        out << YAML::Literal << s;
      } else if (!internal::PlainScalarIsString(s)) {
        out << YAML::DoubleQuoted << s;
      } else {
        out << s;
      }
      break;
    }
    case nlohmann::json::value_t::boolean:
      out << j.get<bool>();
      break;
    case nlohmann::json::value_t::number_integer:
      out << j.get<int64_t>();
      break;
    case nlohmann::json::value_t::number_unsigned:
      out << j.get<uint64_t>();
      break;
    case nlohmann::json::value_t::number_float:
      out << j.get<double>();
      break;
    default:
      out << YAML::Null;
      break;
  }
}

}  // namespace

std::string_view KindName(Kind kind) { return kKindNames[static_cast<size_t>(kind)]; }

std::optional<Kind> KindFromName(std::string_view name) {
  for (size_t i = 0; i < kKindNames.size(); ++i) {
    if (kKindNames[i] == name) return static_cast<Kind>(i);
  }
  return std::nullopt;
}

std::span<const std::string_view> SecretFieldNames(Kind kind, std::string_view source_type) {
  if (kind != Kind::kCredentialSource) return {};
  if (source_type == "static") return kStaticSecrets;
  if (source_type == "aws") return kAwsSecrets;
  if (source_type == "oauth2-client-credentials") return kOauth2Secrets;
  return {};
}

SecretFields ExtractSecrets(Kind kind, nlohmann::json& spec) {
  SecretFields out;
  if (!spec.is_object()) return out;
  auto type = spec.find("type");
  if (type == spec.end() || !type->is_string()) return out;
  for (std::string_view field : SecretFieldNames(kind, type->get_ref<const std::string&>())) {
    auto it = spec.find(field);
    if (it == spec.end() || !it->is_string()) continue;
    auto& value = it->get_ref<std::string&>();
    if (value == kRedactedMarker) continue;
    out.emplace("spec." + std::string(field), SecretBytes::Copy(value));
    // Best effort: wipe the clear copy before the string is reused for the marker.
    std::fill(value.begin(), value.end(), '\0');
    *it = kRedactedMarker;
  }
  return out;
}

std::string CanonicalSpecJson(const Resource& resource) {
  nlohmann::json spec = resource.spec;
  if (spec.is_object()) ExtractSecrets(resource.kind, spec);
  return Dump(spec, -1);
}

Result<Resource> ResourceFromStored(std::string_view kind, std::string_view name,
                                    std::string_view spec_json, uint64_t resource_version) {
  auto k = KindFromName(kind);
  if (!k) return InvalidArgument("stored resource: unknown kind \"" + std::string(kind) + "\"");
  Resource r;
  r.kind = *k;
  r.name = std::string(name);
  r.resource_version = resource_version;
  r.spec = nlohmann::json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (!r.spec.is_object()) {
    return InvalidArgument("stored resource " + std::string(kind) + "/" + r.name +
                           ": spec is not a JSON object");
  }
  return r;
}

std::string ToCanonicalJson(const Resource& resource) {
  return Dump(Document(resource, /*with_version=*/false), -1);
}

std::string ToJson(const Resource& resource) {
  return Dump(Document(resource, /*with_version=*/true), 2) + "\n";
}

std::string ToJson(std::span<const Resource> resources) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& r : resources) list.push_back(Document(r, /*with_version=*/true));
  return Dump(list, 2) + "\n";
}

std::string ToYaml(const Resource& resource) {
  YAML::Emitter out;
  Emit(out, Document(resource, /*with_version=*/true));
  return std::string(out.c_str()) + "\n";
}

std::string ToYaml(std::span<const Resource> resources) {
  std::string text;
  for (const auto& r : resources) text += "---\n" + ToYaml(r);
  return text;
}

}  // namespace sigil::resources
