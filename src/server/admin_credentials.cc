// Admin API: credential operations (`sigil credential rotate`).
//
//   POST /apis/sigil.dev/v1alpha1/credentialsources/NAME/rotate   {"secret": "..."}
//
// The new secret travels inside the admin API's mutual TLS only; the answer and the logs
// carry the source's name, type and new version, never the secret.
#include <openssl/crypto.h>

#include "server/admin_internal.h"

namespace sigil::server::admin {
namespace {

void Rotate(ControlPlane& cp, Logger& log, const httplib::Request& req, httplib::Response& res,
            const Caller& caller) {
  const std::string source = req.matches[1].str();
  auto body = JsonBody(req, res);
  if (!body) return;
  auto wipe = [&body] {
    for (auto& [key, value] : body->items()) {
      if (!value.is_string()) continue;
      auto& text = value.get_ref<std::string&>();
      OPENSSL_cleanse(text.data(), text.size());
    }
  };
  auto field = body->find("secret");
  if (field == body->end() || !field->is_string()) {
    wipe();
    return SendError(res, 400, "InvalidArgument", "secret: required string");
  }
  SecretBytes secret = SecretBytes::Copy(field->get_ref<const std::string&>());
  wipe();
  auto rotated = cp.RotateCredentialSecret(source, secret, caller.spiffe_id);
  if (!rotated.ok()) return SendError(res, rotated.error());
  log.Info("credential.rotated", {{"source", rotated->source},
                                  {"type", rotated->source_type},
                                  {"resource_version", rotated->resource_version},
                                  {"caller", caller.spiffe_id}});
  SendJson(res, 200,
           {{"source", rotated->source},
            {"type", rotated->source_type},
            {"field", rotated->field},
            {"resourceVersion", std::to_string(rotated->resource_version)},
            {"revision", rotated->revision},
            {"cachedTokenDropped", rotated->cached_token_dropped}});
}

}  // namespace

void RegisterCredentialRoutes(httplib::Server& s, ControlPlane& cp, Logger& log) {
  const core::TrustDomain& td = cp.trust_domain();
  s.Post(R"(/apis/sigil\.dev/v1alpha1/credentialsources/([^/]+)/rotate)",
         Guarded(td, true,
                 [&cp, &log](const httplib::Request& req, httplib::Response& res, const Caller& c) {
                   Rotate(cp, log, req, res, c);
                 }));
}

}  // namespace sigil::server::admin
