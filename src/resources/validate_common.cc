// Field checks shared by several kinds.
#include <algorithm>

#include "common/duration.h"
#include "core/certificate.h"
#include "resources/identity_pattern.h"
#include "resources/kinds.h"
#include "resources/syntax.h"

namespace sigil::resources::internal {

void ReadDuration(ObjectReader& obj, std::string_view key, Seconds min, Seconds max,
                  Seconds fallback, nlohmann::json& out) {
  std::string k(key);
  if (!obj.Has(key)) {
    obj.Get(key);
    out[k] = FormatDuration(fallback);
    return;
  }
  auto text = obj.String(key, Need::kOptional, "a string like \"1h\"");
  if (!text) return;
  auto d = ParseDuration(*text);
  if (!d.ok()) {
    obj.Report(key, d.error().message());
    return;
  }
  if (*d < min || *d > max) {
    obj.Report(key, Quote(*text) + " is out of range (" + FormatDuration(min) + " to " +
                        FormatDuration(max) + ")");
    return;
  }
  out[k] = FormatDuration(*d);
}

bool CanonicalList(std::vector<std::string>& items, const std::string& path, Problems& problems,
                   bool sort, const std::function<Result<std::string>(const std::string&)>& check) {
  bool ok = true;
  for (size_t i = 0; i < items.size(); ++i) {
    auto c = check(items[i]);
    if (!c.ok()) {
      problems.push_back({IndexPath(path, i), c.error().message()});
      ok = false;
      continue;
    }
    items[i] = std::move(c).value();
  }
  if (!ok) return false;
  size_t before = problems.size();
  ReportDuplicates(items, path, problems);
  if (problems.size() != before) return false;
  if (sort) std::sort(items.begin(), items.end());
  return true;
}

void ReadIdentityPatterns(ObjectReader& obj, std::string_view key, nlohmann::json& out) {
  auto list = obj.StringList(key, 1, "a SPIFFE ID or pattern like \"spiffe://td/ns/*\"");
  if (!list) return;
  bool ok = CanonicalList(*list, obj.PathOf(key), obj.problems(), true,
                          [](const std::string& s) -> Result<std::string> {
                            SIGIL_ASSIGN_OR_RETURN(auto p, IdentityPattern::Parse(s));
                            return p.str();
                          });
  if (ok) out[std::string(key)] = *list;
}

void ReadCaBundle(ObjectReader& obj, std::string_view key, nlohmann::json& out) {
  auto pem = obj.String(key, Need::kOptional, "a string of PEM certificates");
  if (!pem) return;
  auto certs = core::ParseCertificatesPem(*pem);
  if (!certs.ok()) {
    obj.Report(key, certs.error().message());
    return;
  }
  if (certs->empty()) {
    obj.Report(key, "contains no certificate");
    return;
  }
  out[std::string(key)] = *pem;
}

}  // namespace sigil::resources::internal
