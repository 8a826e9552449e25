// Workload selectors: "type:value" attributes an attestor reports for a process and a
// WorkloadIdentity requires (SPIRE semantics: an identity applies when ALL of its selectors
// are among the process's attested selectors).
//
// Types and value syntax (docs/resources.md has the full table):
//   unix:uid:N  unix:gid:N            decimal 0..4294967294
//   unix:user:NAME  unix:group:NAME   [A-Za-z0-9._-], not starting with '-', <= 32
//   unix:path:/abs/path               absolute, normalised (no //, ., .., trailing /)
//   unix:sha256:HEX                   64 hex digits (canonical: lowercase)
//   cgroup:/prefix                    absolute cgroup v2 path; matches by path segments
//   container:ID                      64 hex digits (canonical: lowercase)
//   k8s:ns:NAME k8s:sa:NAME k8s:pod-name:NAME k8s:pod-uid:UUID k8s:pod-label:KEY:VALUE
//   k8s:container-name:NAME k8s:container-image:IMAGE k8s:node-name:NAME
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sigil::resources {

// Validates `text` and returns its canonical spelling. Errors quote the selector and say
// what its value must look like.
Result<std::string> CanonicalSelector(std::string_view text);

// Whether a required (canonical) selector is satisfied by one attested selector: equality,
// except cgroup:/a/b which matches cgroup:/a/b and cgroup:/a/b/c but not cgroup:/a/bc.
bool SelectorSatisfiedBy(std::string_view required, std::string_view attested);

// True when every required selector is satisfied by some attested selector. An empty
// `required` list never matches (a WorkloadIdentity always has at least one selector).
bool SelectorsMatch(std::span<const std::string> required, std::span<const std::string> attested);

}  // namespace sigil::resources
