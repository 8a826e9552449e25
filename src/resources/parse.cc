#include "resources/parse.h"

#include <map>
#include <utility>

#include "resources/document_reader.h"
#include "resources/field_reader.h"
#include "resources/kinds.h"
#include "resources/syntax.h"

namespace sigil::resources {
namespace {

using internal::Need;
using internal::ObjectReader;
using internal::Problems;

struct Identity {
  std::string kind;  // known kind name, or ""
  std::string name;  // valid metadata.name, or ""
};

// Validates one document into `out`; returns false (with problems recorded) when invalid.
bool ValidateDocument(const nlohmann::json& doc, Problems& problems, Identity& who, Resource& out) {
  size_t before = problems.size();
  ObjectReader top(doc, "", problems);
  if (auto api = top.String("apiVersion", Need::kRequired)) {
    if (*api != kApiVersion) {
      top.Report("apiVersion", "unsupported apiVersion " + internal::Quote(*api) + " (expected \"" +
                                   std::string(kApiVersion) + "\")");
    }
  }
  std::optional<Kind> kind;
  if (auto k = top.String("kind", Need::kRequired)) {
    kind = KindFromName(*k);
    if (kind) {
      who.kind = *k;
    } else {
      top.Report("kind", "unknown kind " + internal::Quote(*k) +
                             " (expected one of WorkloadIdentity, Service, CredentialSource, "
                             "CredentialBinding, AccessPolicy)");
    }
  }
  if (auto meta = top.Child("metadata", Need::kRequired)) {
    if (auto name = meta->String("name", Need::kRequired)) {
      auto ok = internal::ValidateName(*name);
      if (ok.ok()) {
        who.name = *name;
      } else {
        meta->Report("name", ok.error().message());
      }
    }
    if (const nlohmann::json* rv = meta->Get("resourceVersion")) {
      std::string text = rv->is_string() ? rv->get<std::string>() : rv->dump();
      auto v = internal::ParseDecimal(text, UINT64_MAX);
      if ((rv->is_string() || rv->is_number_integer()) && v) {
        out.resource_version = *v;
      } else {
        meta->Report(
            "resourceVersion",
            "expected a decimal revision like \"42\", got " +
                (rv->is_string() ? internal::Quote(text) : std::string(internal::TypeName(*rv))));
      }
    }
    meta->RejectUnknown();
  }
  auto spec = top.Child("spec", Need::kRequired);
  top.RejectUnknown();
  if (kind && spec) {
    switch (*kind) {
      case Kind::kWorkloadIdentity:
        out.spec = internal::ValidateWorkloadIdentity(*spec);
        break;
      case Kind::kService:
        out.spec = internal::ValidateService(*spec);
        break;
      case Kind::kCredentialSource:
        out.spec = internal::ValidateCredentialSource(*spec);
        break;
      case Kind::kCredentialBinding:
        out.spec = internal::ValidateCredentialBinding(*spec);
        break;
      case Kind::kAccessPolicy:
        out.spec = internal::ValidateAccessPolicy(*spec);
        break;
    }
  }
  if (problems.size() != before || !kind) return false;
  out.kind = *kind;
  out.name = who.name;
  out.secrets = ExtractSecrets(out.kind, out.spec);
  return true;
}

class BatchParser {
 public:
  BatchParser(const ParseOptions& options, ParseReport& report)
      : options_(options), report_(report) {}

  // DocumentSink: validates, checks (kind, name) uniqueness, keeps going while under the
  // error cap.
  bool OnDocument(size_t index, const nlohmann::json& doc) {
    ++documents_;
    Problems problems;
    Identity who;
    Resource r;
    bool ok = ValidateDocument(doc, problems, who, r);
    // Invalid documents with a known kind and name still claim it, so a duplicate is
    // reported together with the other problems.
    if (auto kind = KindFromName(who.kind); kind && !who.name.empty()) {
      auto [it, inserted] = seen_.emplace(std::make_pair(*kind, who.name), index);
      if (!inserted) {
        problems.push_back({"metadata.name", "duplicate " + who.kind + " " +
                                                 internal::Quote(who.name) + " (also in document " +
                                                 std::to_string(it->second) + ")"});
        ok = false;
      }
    }
    for (auto& p : problems) Add({index, who.kind, who.name, p.path, std::move(p.message)});
    if (ok && report_.diagnostics.empty()) report_.resources.push_back(std::move(r));
    if (!report_.diagnostics.empty()) report_.resources.clear();
    return !report_.truncated;
  }

  void Add(Diagnostic d) {
    if (report_.diagnostics.size() >= options_.max_errors) {
      report_.truncated = true;
      return;
    }
    report_.diagnostics.push_back(std::move(d));
  }

  size_t documents() const { return documents_; }

 private:
  const ParseOptions& options_;
  ParseReport& report_;
  std::map<std::pair<Kind, std::string>, size_t> seen_;
  size_t documents_ = 0;
};

}  // namespace

std::string Diagnostic::ToString() const {
  std::string head = document > 0 ? "document " + std::to_string(document) : "";
  std::string id = kind.empty() ? "" : (name.empty() ? kind : kind + "/" + name);
  if (!id.empty()) head = head.empty() ? id : head + " (" + id + ")";
  if (head.empty() && path.empty()) head = "input";
  std::string out = head;
  if (!path.empty()) out += (out.empty() ? "" : ": ") + path;
  return out + ": " + message;
}

ParseReport ParseDocumentsDetailed(std::string_view text, const ParseOptions& options) {
  ParseReport report;
  if (text.size() > options.max_input_bytes) {
    report.limit_exceeded = true;
    report.diagnostics.push_back({0, "", "", "",
                                  "input is " + std::to_string(text.size()) +
                                      " bytes; the limit is " +
                                      std::to_string(options.max_input_bytes)});
    return report;
  }
  BatchParser batch(options, report);
  internal::ReadLimits limits{options.max_documents, options.max_depth,
                              options.max_nodes_per_document};
  auto err = internal::ReadDocuments(text, limits, [&](size_t index, nlohmann::json&& doc) {
    return batch.OnDocument(index, doc);
  });
  if (err) {
    report.limit_exceeded = report.limit_exceeded || err->exhausted;
    batch.Add({err->document, "", "", "", err->message});
    report.resources.clear();
  } else if (batch.documents() == 0) {
    batch.Add({0, "", "", "", "no documents"});
  }
  if (report.truncated) {
    report.diagnostics.push_back(
        {0, "", "", "", "too many errors; stopped after " + std::to_string(options.max_errors)});
  }
  return report;
}

Result<std::vector<Resource>> ParseDocuments(std::string_view text, const ParseOptions& options) {
  ParseReport report = ParseDocumentsDetailed(text, options);
  if (report.diagnostics.empty()) return std::move(report.resources);
  std::string message;
  for (const auto& d : report.diagnostics) {
    if (!message.empty()) message += '\n';
    message += d.ToString();
  }
  return Error(report.limit_exceeded ? ErrorCode::kResourceExhausted : ErrorCode::kInvalidArgument,
               std::move(message));
}

Result<Resource> ParseResource(const nlohmann::json& document) {
  Problems problems;
  Identity who;
  Resource r;
  if (ValidateDocument(document, problems, who, r)) return r;
  std::string message;
  for (auto& p : problems) {
    if (!message.empty()) message += '\n';
    message += Diagnostic{0, who.kind, who.name, p.path, p.message}.ToString();
  }
  return InvalidArgument(std::move(message));
}

}  // namespace sigil::resources
