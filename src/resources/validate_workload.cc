// WorkloadIdentity and AccessPolicy specs.
#include "resources/kinds.h"
#include "resources/selector.h"
#include "resources/syntax.h"
#include "resources/workload_identity.h"

namespace sigil::resources::internal {
namespace {

constexpr size_t kMaxAudienceLength = 256;

// "web-1", "ip-10-0-0-1.ec2.internal", or a prefix pattern "web-*" ("*" = every node).
Result<std::string> CheckNodePattern(const std::string& s) {
  std::string_view base = s;
  if (base.ends_with('*')) base.remove_suffix(1);
  if (base.empty()) return s;
  if (base.size() > 253) return InvalidArgument(Quote(s) + " is longer than 253 characters");
  for (char c : base) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) {
      return InvalidArgument(
          Quote(s) +
          " is not a node name (lowercase letters, digits, '-', '.'; optional '*' at "
          "the end)");
    }
  }
  return s;
}

}  // namespace

nlohmann::json ValidateWorkloadIdentity(ObjectReader& spec) {
  nlohmann::json out = nlohmann::json::object();
  if (auto id = spec.String("spiffeId", Need::kRequired, "a SPIFFE ID string")) {
    auto ok = ValidateSpiffeIdTemplate(*id);
    if (ok.ok()) {
      out["spiffeId"] = *id;
    } else {
      spec.Report("spiffeId", ok.error().message());
    }
  }
  if (auto sels = spec.StringList("selectors", 1, "a selector string like \"unix:uid:1000\"")) {
    if (CanonicalList(*sels, spec.PathOf("selectors"), spec.problems(), true,
                      [](const std::string& s) { return CanonicalSelector(s); })) {
      out["selectors"] = *sels;
    }
  }
  ReadDuration(spec, "ttl", Seconds(10), Seconds(24 * 3600), Seconds(3600), out);

  auto dns = spec.StringList("dnsNames", 0, "a DNS name").value_or(std::vector<std::string>{});
  if (CanonicalList(dns, spec.PathOf("dnsNames"), spec.problems(), false,
                    [](const std::string& s) -> Result<std::string> {
                      SIGIL_TRY(ValidateDnsName(s, /*allow_wildcard=*/true));
                      return s;
                    })) {
    out["dnsNames"] = dns;
  }
  auto nodes = spec.StringList("nodes", 0, "a node name").value_or(std::vector<std::string>{});
  if (CanonicalList(nodes, spec.PathOf("nodes"), spec.problems(), true, CheckNodePattern)) {
    out["nodes"] = nodes;
  }
  auto auds =
      spec.StringList("jwtAudiences", 0, "an audience string").value_or(std::vector<std::string>{});
  if (CanonicalList(auds, spec.PathOf("jwtAudiences"), spec.problems(), true,
                    [](const std::string& s) -> Result<std::string> {
                      if (s.empty() || s.size() > kMaxAudienceLength || !IsPrintable(s) ||
                          s.find(' ') != std::string::npos) {
                        return InvalidArgument(
                            Quote(s) +
                            " is not an audience (1-256 printable characters, no "
                            "spaces)");
                      }
                      return s;
                    })) {
    out["jwtAudiences"] = auds;
  }
  spec.RejectUnknown();
  return out;
}

nlohmann::json ValidateAccessPolicy(ObjectReader& spec) {
  nlohmann::json out = nlohmann::json::object();
  ReadIdentityPatterns(spec, "sources", out);
  if (auto dests = spec.StringList("destinations", 1, "a Service name")) {
    if (CanonicalList(*dests, spec.PathOf("destinations"), spec.problems(), true,
                      [](const std::string& s) -> Result<std::string> {
                        SIGIL_TRY(ValidateName(s));
                        return s;
                      })) {
      out["destinations"] = *dests;
    }
  }
  if (!spec.Has("action")) {
    out["action"] = "allow";
    spec.Get("action");
  } else if (auto a = spec.Enum("action", Need::kOptional, {"allow", "deny"})) {
    out["action"] = *a;
  }
  spec.RejectUnknown();
  return out;
}

}  // namespace sigil::resources::internal
