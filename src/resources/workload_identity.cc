#include "resources/workload_identity.h"

#include <algorithm>

#include "common/duration.h"
#include "common/json_util.h"
#include "resources/selector.h"
#include "resources/syntax.h"

namespace sigil::resources {
namespace {

constexpr std::string_view kNodePlaceholder = "{{node}}";
constexpr std::string_view kUidPlaceholder = "{{uid}}";
// Node SVIDs are spiffe://TD/sigil/node/NAME: no workload may be issued an ID under /sigil.
constexpr std::string_view kReservedPath = "/sigil";

struct Rendered {
  std::string text;
  bool uses_node = false;
  bool uses_uid = false;
};

// Substitutes placeholders (when values are given) and checks the template grammar.
Result<Rendered> Substitute(std::string_view tmpl, std::string_view node, std::string_view uid) {
  Rendered out;
  size_t scheme_end = tmpl.find("://");
  size_t path_start = scheme_end == std::string_view::npos ? std::string_view::npos
                                                           : tmpl.find('/', scheme_end + 3);
  for (size_t i = 0; i < tmpl.size();) {
    char c = tmpl[i];
    if (c != '{' && c != '}') {
      out.text += c;
      ++i;
      continue;
    }
    std::string_view rest = tmpl.substr(i);
    bool node_ph = rest.starts_with(kNodePlaceholder);
    bool uid_ph = rest.starts_with(kUidPlaceholder);
    if (!node_ph && !uid_ph) {
      return InvalidArgument("spiffe id template: unexpected '" + std::string(1, c) +
                             "' at offset " + std::to_string(i) +
                             " (placeholders are {{node}} and {{uid}})");
    }
    if (path_start == std::string_view::npos || i < path_start) {
      return InvalidArgument("spiffe id template: placeholders are allowed only in the path");
    }
    out.uses_node |= node_ph;
    out.uses_uid |= uid_ph;
    out.text += node_ph ? node : uid;
    i += node_ph ? kNodePlaceholder.size() : kUidPlaceholder.size();
  }
  return out;
}

Result<core::SpiffeId> CheckRendered(const std::string& text) {
  SIGIL_ASSIGN_OR_RETURN(auto id, core::SpiffeId::Parse(text));
  if (id.IsTrustDomainId()) return InvalidArgument("spiffe id: a workload identity needs a path");
  const std::string& path = id.path();
  if (path.starts_with(kReservedPath) &&
      (path.size() == kReservedPath.size() || path[kReservedPath.size()] == '/')) {
    return InvalidArgument("spiffe id: paths under /sigil are reserved for node identities");
  }
  return id;
}

}  // namespace

Result<void> ValidateSpiffeIdTemplate(std::string_view spiffe_id_template) {
  // Sample values that are valid path characters; a bad literal part still fails.
  SIGIL_ASSIGN_OR_RETURN(auto r, Substitute(spiffe_id_template, "node", "0"));
  SIGIL_TRY(CheckRendered(r.text));
  return Ok();
}

Result<core::SpiffeId> RenderSpiffeId(std::string_view spiffe_id_template,
                                      const TemplateValues& values) {
  std::string uid = values.uid ? std::to_string(*values.uid) : "";
  SIGIL_ASSIGN_OR_RETURN(auto r, Substitute(spiffe_id_template, values.node, uid));
  if (r.uses_node && values.node.empty()) {
    return InvalidArgument("spiffe id template uses {{node}} but no node name was given");
  }
  if (r.uses_uid && !values.uid) {
    return InvalidArgument("spiffe id template uses {{uid}} but the process has no attested uid");
  }
  return CheckRendered(r.text);
}

Result<WorkloadIdentitySpec> WorkloadIdentitySpec::FromResource(const Resource& resource) {
  if (resource.kind != Kind::kWorkloadIdentity) {
    return InvalidArgument("resource " + resource.name + " is a " +
                           std::string(KindName(resource.kind)) + ", not a WorkloadIdentity");
  }
  const nlohmann::json& spec = resource.spec;
  WorkloadIdentitySpec out;
  out.name = resource.name;
  out.spiffe_id = spec.value("spiffeId", "");
  out.selectors = JsonStringList(spec, "selectors");
  SIGIL_ASSIGN_OR_RETURN(out.ttl, ParseDuration(spec.value("ttl", "1h")));
  out.dns_names = JsonStringList(spec, "dnsNames");
  out.nodes = JsonStringList(spec, "nodes");
  out.jwt_audiences = JsonStringList(spec, "jwtAudiences");
  if (out.spiffe_id.empty() || out.selectors.empty()) {
    return InvalidArgument("WorkloadIdentity " + resource.name + ": spec is not canonical");
  }
  return out;
}

bool WorkloadIdentitySpec::Matches(std::span<const std::string> attested) const {
  return SelectorsMatch(selectors, attested);
}

std::optional<core::SpiffeId> WorkloadIdentitySpec::IdFor(
    std::string_view node, uint32_t uid, const core::TrustDomain& trust_domain,
    std::span<const std::string> attested) const {
  if (!AllowsNode(node) || !Matches(attested)) return std::nullopt;
  auto id = Render({node, uid});
  if (!id.ok() || id->trust_domain() != trust_domain) return std::nullopt;
  return std::move(id).value();
}

bool WorkloadIdentitySpec::AllowsNode(std::string_view node_name) const {
  if (nodes.empty()) return true;
  return std::any_of(nodes.begin(), nodes.end(), [&](const std::string& n) {
    if (n.ends_with('*')) return node_name.starts_with(std::string_view(n).substr(0, n.size() - 1));
    return n == node_name;
  });
}

}  // namespace sigil::resources
