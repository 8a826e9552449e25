// ControlPlane::ApplyResources: validated resources and their sealed secrets, one transaction.
#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

#include "server/control_plane.h"

namespace sigil::server {

Result<store::ApplyResult> ControlPlane::ApplyResources(std::span<const resources::Resource> batch,
                                                        const std::string& actor,
                                                        const std::string& audit_type) {
  std::vector<store::ResourceWrite> writes;
  std::vector<store::AuditEvent> events;
  std::vector<store::BlobWrite> blobs;
  std::vector<std::string> rotated;  // sources whose secret changed
  for (size_t i = 0; i < batch.size(); ++i) {
    const resources::Resource& r = batch[i];
    store::ResourceWrite w;
    w.kind = std::string(resources::KindName(r.kind));
    w.name = r.name;
    w.spec_json = resources::CanonicalSpecJson(r);
    w.expected_version = r.resource_version;
    store::AuditEvent e = Event(audit_type, actor);
    e.details_json = nlohmann::json{{"kind", w.kind}, {"name", w.name}, {"document", i + 1}}.dump();
    writes.push_back(std::move(w));
    events.push_back(std::move(e));
  }
  for (const resources::Resource& r : batch) {
    if (r.secrets.empty()) continue;
    nlohmann::json fields = nlohmann::json::object();
    std::vector<std::string> names;
    for (const auto& [path, value] : r.secrets) {
      fields[path] = std::string(value.view());
      names.push_back(path);
    }
    std::string text = fields.dump();
    SecretBytes plain = SecretBytes::Copy(text);
    OPENSSL_cleanse(text.data(), text.size());
    for (auto& [key, value] : fields.items()) {
      auto& field = value.get_ref<std::string&>();
      OPENSSL_cleanse(field.data(), field.size());
    }
    const std::string blob_name = std::string(kCredentialSecretBlobPrefix) + r.name;
    // A new secret under an unchanged spec (the spec only holds "[redacted]") must still move
    // the source's version, or agents would keep grants of the old secret (Sync reports
    // sources by their change-log entries).
    auto previous = OpenSealedBlob(blob_name);
    if (!previous.ok() || !previous->Equals(plain)) {
      for (store::ResourceWrite& w : writes) {
        if (w.kind == "CredentialSource" && w.name == r.name) w.force_new_version = true;
      }
      rotated.push_back(r.name);
    }
    SIGIL_ASSIGN_OR_RETURN(auto blob, SealBlob(blob_name, plain.span()));
    blobs.push_back(std::move(blob));
    store::AuditEvent e = Event("secret.store", actor);
    e.details_json = nlohmann::json{{"source", r.name}, {"fields", names}}.dump();
    events.push_back(std::move(e));
  }
  SIGIL_ASSIGN_OR_RETURN(auto applied, store_->ApplyWithBlobs(writes, blobs, events));
  for (const std::string& source : rotated) oauth2_.Invalidate(source);
  return applied;
}

}  // namespace sigil::server
