// Admin API: resource routes (/apis/sigil.dev/v1alpha1/...).
#include <string_view>

#include "resources/parse.h"
#include "resources/resource.h"
#include "server/admin_internal.h"

namespace sigil::server::admin {
namespace {

// Accepts the Kind name ("WorkloadIdentity"), case-insensitively, and its plural.
std::optional<resources::Kind> KindFromPath(std::string_view segment) {
  auto lower = [](std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  };
  std::string seg = lower(segment);
  for (auto kind : {resources::Kind::kWorkloadIdentity, resources::Kind::kService,
                    resources::Kind::kCredentialSource, resources::Kind::kCredentialBinding,
                    resources::Kind::kAccessPolicy}) {
    std::string name = lower(resources::KindName(kind));
    std::string plural = name.ends_with("y") ? name.substr(0, name.size() - 1) + "ies"
                                             : name + (name.ends_with("s") ? "es" : "s");
    if (seg == name || seg == plural) return kind;
  }
  return std::nullopt;
}

std::optional<resources::Kind> KindOrError(std::string_view segment, httplib::Response& res) {
  auto kind = KindFromPath(segment);
  if (!kind) {
    SendError(res, 404, "NotFound",
              "unknown kind \"" + std::string(segment) +
                  "\" (allowed: WorkloadIdentity, Service, CredentialSource, "
                  "CredentialBinding, AccessPolicy)");
  }
  return kind;
}

// The stored resource as a document with metadata.resourceVersion (secrets redacted).
nlohmann::json ToOutput(const store::StoredResource& r) {
  auto rebuilt = resources::ResourceFromStored(r.kind, r.name, r.spec_json, r.resource_version);
  if (!rebuilt.ok())
    return {
        {"kind", r.kind}, {"metadata", {{"name", r.name}}}, {"error", rebuilt.error().message()}};
  auto j = nlohmann::json::parse(resources::ToJson(*rebuilt), nullptr, false);
  return j.is_discarded() ? nlohmann::json::object() : j;
}

std::string Who(size_t index, const resources::Resource& r) {
  return "document " + std::to_string(index) + " (" + std::string(resources::KindName(r.kind)) +
         "/" + r.name + ")";
}

nlohmann::json Diagnostics(const resources::ParseReport& report) {
  nlohmann::json errors = nlohmann::json::array();
  for (const auto& d : report.diagnostics) errors.push_back(d.ToString());
  nlohmann::json body = {{"errors", errors}};
  if (report.truncated) body["truncated"] = true;
  return body;
}

// Validates every document, then commits them in one store transaction with one audit
// event per document. `put_target` restricts the batch to that single (kind, name).
void ApplyBatch(ControlPlane& cp, const httplib::Request& req, httplib::Response& res,
                const std::string& actor, const std::string& audit_type,
                std::optional<std::pair<resources::Kind, std::string>> put_target) {
  resources::ParseReport report = resources::ParseDocumentsDetailed(req.body);
  if (!report.diagnostics.empty()) {
    SendJson(res, report.limit_exceeded ? 413 : 400, Diagnostics(report));
    return;
  }
  if (put_target) {
    if (report.resources.size() != 1) {
      SendJson(res, 400, {{"errors", {"PUT takes exactly one document"}}});
      return;
    }
    const auto& r = report.resources[0];
    if (r.kind != put_target->first || r.name != put_target->second) {
      SendJson(
          res, 400,
          {{"errors",
            {Who(1, r) + ": does not match the request path " +
             std::string(resources::KindName(put_target->first)) + "/" + put_target->second}}});
      return;
    }
  }
  auto applied = cp.ApplyResources(report.resources, actor, audit_type);
  if (!applied.ok()) {
    SendError(res, applied.error());
    return;
  }
  if (put_target) {
    auto got = cp.store().Get(applied->writes[0].kind, applied->writes[0].name);
    if (!got.ok()) return SendError(res, got.error());
    SendJson(res, 200, ToOutput(*got));
    return;
  }
  nlohmann::json results = nlohmann::json::array();
  for (const auto& w : applied->writes) {
    results.push_back({{"kind", w.kind},
                       {"name", w.name},
                       {"resourceVersion", std::to_string(w.resource_version)},
                       {"changed", w.changed}});
  }
  SendJson(res, 200, {{"revision", applied->revision}, {"results", results}});
}

}  // namespace

void RegisterResourceRoutes(httplib::Server& s, ControlPlane& cp, Logger& /*log*/) {
  const std::string base = R"(/apis/sigil\.dev/v1alpha1)";
  const core::TrustDomain& td = cp.trust_domain();
  s.Post(base + "/apply",
         Guarded(td, true,
                 [&cp](const httplib::Request& req, httplib::Response& res, const Caller& c) {
                   ApplyBatch(cp, req, res, c.spiffe_id, "resource.apply", std::nullopt);
                 }));
  s.Get(
      base + R"(/([A-Za-z]+))",
      Guarded(td, false, [&cp](const httplib::Request& req, httplib::Response& res, const Caller&) {
        auto kind = KindOrError(req.matches[1].str(), res);
        if (!kind) return;
        auto list = cp.store().List(std::string(resources::KindName(*kind)));
        if (!list.ok()) return SendError(res, list.error());
        nlohmann::json items = nlohmann::json::array();
        for (const auto& r : list->items) items.push_back(ToOutput(r));
        SendJson(res, 200, {{"kind", "List"}, {"revision", list->revision}, {"items", items}});
      }));
  const std::string one = base + R"(/([A-Za-z]+)/([^/]+))";
  s.Get(
      one,
      Guarded(td, false, [&cp](const httplib::Request& req, httplib::Response& res, const Caller&) {
        auto kind = KindOrError(req.matches[1].str(), res);
        if (!kind) return;
        auto got = cp.store().Get(std::string(resources::KindName(*kind)), req.matches[2].str());
        if (!got.ok()) return SendError(res, got.error());
        SendJson(res, 200, ToOutput(*got));
      }));
  s.Put(one, Guarded(td, true,
                     [&cp](const httplib::Request& req, httplib::Response& res, const Caller& c) {
                       auto kind = KindOrError(req.matches[1].str(), res);
                       if (!kind) return;
                       ApplyBatch(cp, req, res, c.spiffe_id, "resource.replace",
                                  std::make_pair(*kind, req.matches[2].str()));
                     }));
  s.Delete(
      one,
      Guarded(td, true,
              [&cp](const httplib::Request& req, httplib::Response& res, const Caller& c) {
                auto kind = KindOrError(req.matches[1].str(), res);
                if (!kind) return;
                store::ResourceWrite w;
                w.kind = std::string(resources::KindName(*kind));
                w.name = req.matches[2].str();
                w.op = store::WriteOp::kDelete;
                store::AuditEvent e;
                e.type = "resource.delete";
                e.actor = c.spiffe_id;
                e.details_json = nlohmann::json{{"kind", w.kind}, {"name", w.name}}.dump();
                // A CredentialSource's sealed secret goes in the same transaction.
                std::vector<store::BlobWrite> blobs;
                if (*kind == resources::Kind::kCredentialSource) {
                  blobs.push_back({std::string(kCredentialSecretBlobPrefix) + w.name, {}, true});
                }
                auto applied = cp.store().ApplyWithBlobs(std::span(&w, 1), blobs, std::span(&e, 1));
                if (!applied.ok()) return SendError(res, applied.error());
                if (*kind == resources::Kind::kCredentialSource) cp.ForgetCredentialSource(w.name);
                SendJson(res, 200, {{"kind", w.kind}, {"name", w.name}, {"deleted", true}});
              }));
}

}  // namespace sigil::server::admin
