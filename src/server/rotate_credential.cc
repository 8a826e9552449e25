// ControlPlane::RotateCredentialSecret: `sigil credential rotate SOURCE`.
#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

#include "server/control_plane.h"

namespace sigil::server {
namespace {

// The secret field `sigil credential rotate` replaces, per source type; an error for types
// without one (or, aws, where a new secret comes with a new key id).
Result<std::string> RotatedField(const std::string& source, const std::string& type) {
  if (type == "static") return std::string("spec.value");
  if (type == "oauth2-client-credentials") return std::string("spec.clientSecret");
  const std::string who = "credential source \"" + source + "\" is type " + type;
  if (type == "aws") {
    return FailedPrecondition(who +
                              ": a new AWS secret key comes with a new accessKeyId; apply "
                              "the new pair with `sigil apply`");
  }
  if (type == "jwt") {
    return FailedPrecondition(who + ": it has no stored secret (a JWT-SVID is minted per grant)");
  }
  return FailedPrecondition(who + ": no secret to rotate");
}

}  // namespace

Result<RotatedCredential> ControlPlane::RotateCredentialSecret(const std::string& source,
                                                               const SecretBytes& secret,
                                                               const std::string& actor) {
  const std::string who = "credential source \"" + source + "\"";
  if (secret.empty()) return InvalidArgument("new secret for " + who + " is empty");
  if (secret.size() > kMaxCredentialSecretBytes) {
    return InvalidArgument("new secret for " + who + " is longer than 64 KiB");
  }
  if (secret.view() == SecretBytes::kRedacted) {
    return InvalidArgument("new secret for " + who + " is the redaction marker \"" +
                           std::string(SecretBytes::kRedacted) + "\"; supply the secret itself");
  }
  auto stored = store_->Get("CredentialSource", source);
  if (!stored.ok()) {
    if (stored.error().code() == ErrorCode::kNotFound) return NotFound(who + " not found");
    return std::move(stored).error();
  }
  nlohmann::json spec = nlohmann::json::parse(stored->spec_json, nullptr, false);
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    return Internal(who + ": stored spec unreadable");
  }
  RotatedCredential out;
  out.source = source;
  out.source_type = spec["type"].get<std::string>();
  SIGIL_ASSIGN_OR_RETURN(out.field, RotatedField(source, out.source_type));

  // The other sealed fields stay as they are; only `field` changes.
  const std::string blob_name = std::string(kCredentialSecretBlobPrefix) + source;
  nlohmann::json fields = nlohmann::json::object();
  if (auto plain = OpenSealedBlob(blob_name); plain.ok()) {
    fields = nlohmann::json::parse(plain->view(), nullptr, false);
    if (!fields.is_object()) return Internal(who + ": sealed secret is not a JSON object");
  } else if (plain.error().code() != ErrorCode::kNotFound) {
    return plain.error().WithContext(who + ": sealed secret");
  }
  auto wipe_fields = [&fields] {
    for (auto& [key, value] : fields.items()) {
      if (!value.is_string()) continue;
      auto& text = value.get_ref<std::string&>();
      OPENSSL_cleanse(text.data(), text.size());
    }
  };
  if (auto old = fields.find(out.field); old != fields.end() && old->is_string()) {
    auto& text = old->get_ref<std::string&>();
    OPENSSL_cleanse(text.data(), text.size());
  }
  fields[out.field] = std::string(secret.view());
  std::string text = fields.dump();
  wipe_fields();
  SecretBytes plain = SecretBytes::Copy(text);
  OPENSSL_cleanse(text.data(), text.size());
  SIGIL_ASSIGN_OR_RETURN(store::BlobWrite blob, SealBlob(blob_name, plain.span()));

  store::ResourceWrite write;
  write.kind = "CredentialSource";
  write.name = source;
  write.spec_json = stored->spec_json;
  write.expected_version = stored->resource_version;
  write.force_new_version = true;  // same spec, new secret: agents must see a change
  store::AuditEvent e = Event("credential.rotated", actor);
  e.details_json = nlohmann::json{{"source", source},
                                  {"type", out.source_type},
                                  {"field", out.field},
                                  {"previous_version", stored->resource_version}}
                       .dump();
  auto applied =
      store_->ApplyWithBlobs(std::span(&write, 1), std::span(&blob, 1), std::span(&e, 1));
  if (!applied.ok()) {
    if (applied.error().code() == ErrorCode::kAborted) {
      return Error(ErrorCode::kAborted, who + " changed while it was being rotated; try again");
    }
    return std::move(applied).error();
  }
  out.resource_version = applied->writes[0].resource_version;
  out.revision = applied->revision;
  // After the commit: a grant racing with this either reads the new version (and fetches
  // anew) or fetched under the old one, which the generation bump keeps out of the cache.
  out.cached_token_dropped = oauth2_.Invalidate(source);
  return out;
}

}  // namespace sigil::server
