// Typed view of a WorkloadIdentity for the issuing path (server SignWorkloadSVID, agent
// matching): selector matching, node scoping and SPIFFE ID templates.
//
// Templates: "{{node}}" and "{{uid}}" may appear inside path segments of spec.spiffeId
// ("spiffe://td/host/{{node}}/u{{uid}}"), never in the trust domain. No other "{" or "}" is
// allowed. Value type; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "core/spiffe_id.h"
#include "resources/resource.h"

namespace sigil::resources {

struct TemplateValues {
  std::string_view node;        // node name, as in spiffe://TD/sigil/node/NAME
  std::optional<uint32_t> uid;  // the process's attested uid
};

// Checks the template grammar and that a rendering is a valid SPIFFE ID with a path outside
// the reserved /sigil/ tree (node identities live there).
Result<void> ValidateSpiffeIdTemplate(std::string_view spiffe_id_template);
// Substitutes the placeholders and parses the result. Errors when a used value is missing
// or the rendered ID is invalid (e.g. a node name with characters a path may not hold).
Result<core::SpiffeId> RenderSpiffeId(std::string_view spiffe_id_template,
                                      const TemplateValues& values);

struct WorkloadIdentitySpec {
  std::string name;
  std::string spiffe_id;               // may contain templates
  std::vector<std::string> selectors;  // canonical, sorted, at least one
  Seconds ttl{3600};
  std::vector<std::string> dns_names;
  std::vector<std::string> nodes;  // empty = every node; "web-*" = prefix
  std::vector<std::string> jwt_audiences;

  // Reads a Resource produced by the parser (kind must be WorkloadIdentity).
  static Result<WorkloadIdentitySpec> FromResource(const Resource& resource);

  // All selectors present among `attested` (see SelectorsMatch).
  bool Matches(std::span<const std::string> attested) const;
  // Whether the identity may be issued on `node_name` (spec.nodes).
  bool AllowsNode(std::string_view node_name) const;
  Result<core::SpiffeId> Render(const TemplateValues& values) const {
    return RenderSpiffeId(spiffe_id, values);
  }
  // The ID this identity gives a process on `node` with `uid` and `attested` selectors: every
  // selector present, the node allowed, the rendering valid (so outside /sigil) and in
  // `trust_domain`. nullopt otherwise. The server (issuance) and the agent (what to fetch)
  // apply exactly this rule.
  std::optional<core::SpiffeId> IdFor(std::string_view node, uint32_t uid,
                                      const core::TrustDomain& trust_domain,
                                      std::span<const std::string> attested) const;
};

}  // namespace sigil::resources
