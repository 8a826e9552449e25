// CredentialBinding spec: which identities may use which source, for which service, how.
#include <algorithm>
#include <array>

#include "resources/kinds.h"
#include "resources/syntax.h"

namespace sigil::resources::internal {
namespace {

constexpr size_t kMaxHeaderTemplate = 4096;
constexpr std::string_view kSecretPlaceholder = "{{secret}}";

// Headers whose value frames or routes the request; injecting them would let a binding
// break HTTP framing or redirect the connection.
constexpr std::array<std::string_view, 10> kForbiddenHeaders = {
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
    "te",   "trailer",        "proxy-connection",  "expect"};

Result<void> CheckHeaderTemplate(std::string_view t) {
  if (t.size() > kMaxHeaderTemplate) return InvalidArgument("is longer than 4096 bytes");
  if (t.find_first_of("\r\n") != std::string_view::npos) {
    return InvalidArgument("must not contain CR or LF (header injection)");
  }
  if (!IsPrintable(t, /*allow_tab=*/true)) {
    return InvalidArgument("must not contain control characters");
  }
  size_t first = t.find(kSecretPlaceholder);
  if (first == std::string_view::npos) {
    return InvalidArgument(Quote(t) + " must contain the placeholder {{secret}} exactly once");
  }
  if (t.find(kSecretPlaceholder, first + 1) != std::string_view::npos) {
    return InvalidArgument(Quote(t) + " contains {{secret}} more than once");
  }
  std::string rest(t);
  rest.erase(first, kSecretPlaceholder.size());
  if (rest.find("{{") != std::string::npos || rest.find("}}") != std::string::npos) {
    return InvalidArgument(Quote(t) + ": the only placeholder is {{secret}}");
  }
  if (!t.empty() &&
      (t.front() == ' ' || t.front() == '\t' || t.back() == ' ' || t.back() == '\t')) {
    return InvalidArgument(Quote(t) + " must not start or end with whitespace");
  }
  return Ok();
}

nlohmann::json ReadHeader(ObjectReader& h) {
  nlohmann::json out = nlohmann::json::object();
  if (auto name = h.String("name", Need::kRequired, "a header name")) {
    std::string lower = ToLower(*name);
    if (!IsHttpToken(*name)) {
      h.Report("name", Quote(*name) + " is not a valid HTTP header name (RFC 9110 token)");
    } else if (std::find(kForbiddenHeaders.begin(), kForbiddenHeaders.end(), lower) !=
               kForbiddenHeaders.end()) {
      h.Report("name", Quote(*name) + " controls HTTP framing or routing and cannot be injected");
    } else {
      out["name"] = *name;
    }
  }
  out["template"] = std::string(kSecretPlaceholder);
  if (auto t = h.String("template", Need::kOptional, "a string like \"Bearer {{secret}}\"")) {
    auto ok = CheckHeaderTemplate(*t);
    if (ok.ok()) {
      out["template"] = *t;
    } else {
      h.Report("template", ok.error().message());
    }
  }
  h.RejectUnknown();
  return out;
}

nlohmann::json ReadSigv4(ObjectReader& s) {
  nlohmann::json out = nlohmann::json::object();
  auto check = [&](std::string_view key, std::string_view what) {
    auto v = s.String(key, Need::kRequired);
    if (!v) return;
    bool ok = !v->empty() && v->size() <= 64 && std::all_of(v->begin(), v->end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    });
    if (ok) {
      out[std::string(key)] = *v;
    } else {
      s.Report(key, Quote(*v) + " is not " + std::string(what));
    }
  };
  check("region", "an AWS region name (like \"eu-west-1\")");
  check("service", "an AWS service name (like \"s3\")");
  s.RejectUnknown();
  return out;
}

nlohmann::json ReadFile(ObjectReader& f) {
  nlohmann::json out = nlohmann::json::object();
  if (auto n = f.String("fileName", Need::kRequired, "a file name")) {
    bool ok = !n->empty() && n->size() <= 255 && *n != "." && *n != ".." &&
              std::all_of(n->begin(), n->end(), [](char c) {
                return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '.' || c == '-' || c == '_';
              });
    if (ok) {
      out["fileName"] = *n;
    } else {
      f.Report("fileName", Quote(*n) + " is not a plain file name ([A-Za-z0-9._-], no '/')");
    }
  }
  std::string format = "raw";
  if (f.Has("format")) {
    auto v = f.Enum("format", Need::kOptional, {"raw", "env", "aws-credentials", "svid-pem"});
    format = v.value_or("");
  } else {
    f.Get("format");
  }
  if (!format.empty()) out["format"] = format;
  if (format == "env") {
    if (auto e = f.String("envName", Need::kRequired, "an environment variable name")) {
      bool ok = !e->empty() && e->size() <= 128 && !(e->front() >= '0' && e->front() <= '9') &&
                std::all_of(e->begin(), e->end(), [](char c) {
                  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (c >= '0' && c <= '9') || c == '_';
                });
      if (ok) {
        out["envName"] = *e;
      } else {
        f.Report("envName", Quote(*e) + " is not an environment variable name");
      }
    }
  } else if (!format.empty()) {
    f.Forbid("envName", "format is \"" + format + "\"");
  }
  f.RejectUnknown({format.empty() ? "envName" : ""});
  return out;
}

}  // namespace

nlohmann::json ValidateCredentialBinding(ObjectReader& spec) {
  nlohmann::json out = nlohmann::json::object();
  ReadIdentityPatterns(spec, "identities", out);
  std::string method;  // header | sigv4 | file
  if (auto d = spec.Child("delivery", Need::kRequired)) {
    std::vector<std::string> present;
    for (auto k : {"header", "sigv4", "file"}) {
      if (d->Has(k)) present.emplace_back(k);
    }
    if (present.size() != 1) {
      d->Report("", "needs exactly one of header, sigv4, file" +
                        (present.empty() ? std::string()
                                         : " (found " + std::to_string(present.size()) + ")"));
    }
    nlohmann::json delivery = nlohmann::json::object();
    if (auto h = d->Child("header", Need::kOptional)) delivery["header"] = ReadHeader(*h);
    if (auto s = d->Child("sigv4", Need::kOptional)) delivery["sigv4"] = ReadSigv4(*s);
    if (auto f = d->Child("file", Need::kOptional)) delivery["file"] = ReadFile(*f);
    d->RejectUnknown();
    if (present.size() == 1) method = present.front();
    out["delivery"] = std::move(delivery);
  }
  bool own_svid = method == "file" && out["delivery"]["file"].value("format", "") == "svid-pem";
  auto read_name = [&](std::string_view key, Need need) {
    if (auto v = spec.String(key, need, "a resource name")) {
      auto ok = ValidateName(*v);
      if (ok.ok()) {
        out[std::string(key)] = *v;
      } else {
        spec.Report(key, ok.error().message());
      }
    }
  };
  if (own_svid) {
    spec.Forbid("source", "delivery.file.format is \"svid-pem\" (the process's own SVID)");
  } else {
    read_name("source", Need::kRequired);
  }
  if (method == "file") {
    spec.Forbid("service", "delivery is a file");
  } else {
    read_name("service", method.empty() ? Need::kOptional : Need::kRequired);
  }
  spec.RejectUnknown();
  return out;
}

}  // namespace sigil::resources::internal
