#include "agent/creds/binding_index.h"

#include <nlohmann/json.hpp>

namespace sigil::agent::creds {
namespace {

Result<FileFormat> ParseFormat(std::string_view text) {
  if (text.empty() || text == "raw") return FileFormat::kRaw;
  if (text == "env") return FileFormat::kEnv;
  if (text == "aws-credentials") return FileFormat::kAwsCredentials;
  if (text == "svid-pem") return FileFormat::kSvidPem;
  return InvalidArgument("delivery.file.format: unknown format \"" + std::string(text) + "\"");
}

std::string StringAt(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::string_view FileFormatName(FileFormat format) {
  switch (format) {
    case FileFormat::kRaw:
      return "raw";
    case FileFormat::kEnv:
      return "env";
    case FileFormat::kAwsCredentials:
      return "aws-credentials";
    case FileFormat::kSvidPem:
      return "svid-pem";
  }
  return "raw";
}

bool BindingInfo::Allows(const core::SpiffeId& id) const {
  for (const auto& p : identities) {
    if (p.Matches(id)) return true;
  }
  return false;
}

Result<BindingInfo> ParseBinding(std::string name, std::string_view spec_json) {
  auto where = [&](std::string_view what) {
    return InvalidArgument("CredentialBinding " + name + ": " + std::string(what));
  };
  nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, false);
  if (!spec.is_object()) return where("spec is not a JSON object");
  BindingInfo out;
  out.source = StringAt(spec, "source");
  auto ids = spec.find("identities");
  if (ids == spec.end() || !ids->is_array() || ids->empty()) {
    return where("identities: missing or empty");
  }
  for (const auto& p : *ids) {
    if (!p.is_string()) return where("identities: not a list of strings");
    auto pattern = resources::IdentityPattern::Parse(p.get<std::string>());
    if (!pattern.ok()) return where("identities: " + pattern.error().message());
    out.identities.push_back(std::move(pattern).value());
  }
  auto delivery = spec.find("delivery");
  if (delivery != spec.end() && delivery->is_object()) {
    auto file = delivery->find("file");
    if (file != delivery->end() && file->is_object()) {
      FileDelivery f;
      f.file_name = StringAt(*file, "fileName");
      if (f.file_name.empty()) return where("delivery.file.fileName: missing");
      auto format = ParseFormat(StringAt(*file, "format"));
      if (!format.ok()) return where(format.error().message());
      f.format = *format;
      f.env_name = StringAt(*file, "envName");
      if (f.format == FileFormat::kEnv && f.env_name.empty()) {
        return where("delivery.file.envName: missing for format env");
      }
      if (f.format != FileFormat::kSvidPem && out.source.empty()) return where("source: missing");
      out.file = std::move(f);
    }
  }
  out.name = std::move(name);
  return out;
}

std::shared_ptr<const BindingSet> BindingIndex::Get(uint64_t revision, const Loader& load) {
  {
    std::lock_guard lock(mu_);
    if (set_ && revision_ == revision) return set_;
  }
  // Parsed outside the lock; two threads may both parse after a change, one result wins.
  auto set = std::make_shared<BindingSet>();
  size_t skipped = 0;
  for (auto& [name, json] : load()) {
    auto parsed = ParseBinding(name, json);
    if (!parsed.ok()) {
      ++skipped;
      continue;
    }
    set->emplace(name, std::move(parsed).value());
  }
  std::lock_guard lock(mu_);
  revision_ = revision;
  set_ = std::move(set);
  skipped_ = skipped;
  return set_;
}

size_t BindingIndex::skipped() const {
  std::lock_guard lock(mu_);
  return skipped_;
}

}  // namespace sigil::agent::creds
