// Sigil resources (apiVersion sigil.dev/v1alpha1): the validated, canonical form of the
// documents operators `sigil apply`, and their output forms for `sigil get`.
//
// A Resource is produced only by the parser in parse.h, so its spec is always valid and
// canonical: keys sorted (nlohmann::json's std::map), every default filled in, set-like lists
// sorted. Secret fields (CredentialSource values) never stay in `spec`: they are moved into
// `secrets` and the spec holds kRedactedMarker instead. Schema: docs/resources.md.
// Thread-compatible value types.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/secret_bytes.h"

namespace sigil::resources {

inline constexpr std::string_view kApiVersion = "sigil.dev/v1alpha1";
// What a secret field reads as in every stored or printed spec.
inline constexpr std::string_view kRedactedMarker = SecretBytes::kRedacted;

enum class Kind {
  kWorkloadIdentity,
  kService,
  kCredentialSource,
  kCredentialBinding,
  kAccessPolicy,
};

std::string_view KindName(Kind kind);  // "WorkloadIdentity", ...
std::optional<Kind> KindFromName(std::string_view name);

// Secret values keyed by field path ("spec.clientSecret"). The server encrypts each value.
using SecretFields = std::map<std::string, SecretBytes, std::less<>>;

struct Resource {
  Kind kind = Kind::kWorkloadIdentity;
  std::string name;  // metadata.name: DNS label, 1..63 bytes
  // metadata.resourceVersion ("42" or 42 in the document): the store revision the writer
  // expects (optimistic concurrency; see Store::ResourceWrite::expected_version).
  std::optional<uint64_t> resource_version;
  nlohmann::json spec;   // canonical spec; secret fields hold kRedactedMarker
  SecretFields secrets;  // empty except for CredentialSource
};

// Field names (relative to `spec`) that hold secrets for a CredentialSource of the given
// `type` ("aws" -> secretAccessKey, sessionToken). Empty for every other kind/type.
std::span<const std::string_view> SecretFieldNames(Kind kind, std::string_view source_type);

// Moves every present secret field of `spec` into the returned map (keys "spec.<field>") and
// replaces it in `spec` with kRedactedMarker. Fields already holding the marker, and
// non-string values, are left alone. Idempotent.
SecretFields ExtractSecrets(Kind kind, nlohmann::json& spec);

// The canonical spec alone, compact (Store's spec_json): equal specs give equal bytes.
// Secret changes do not show here: compare Resource::secrets separately.
std::string CanonicalSpecJson(const Resource& resource);
// Rebuilds a Resource from what the store holds (kind name, name, CanonicalSpecJson text,
// revision) for `sigil get` output. Not re-validated: the store only holds validated specs.
Result<Resource> ResourceFromStored(std::string_view kind, std::string_view name,
                                    std::string_view spec_json, uint64_t resource_version);

// {"apiVersion","kind","metadata":{"name"},"spec"} with sorted keys, compact, secrets
// redacted, without resourceVersion: the byte-stable form the store keeps and hashes.
std::string ToCanonicalJson(const Resource& resource);
// Output for `sigil get -o json|yaml`: includes metadata.resourceVersion when set; secrets
// always read as kRedactedMarker. Several resources: a JSON list / "---"-separated YAML.
std::string ToJson(const Resource& resource);
std::string ToJson(std::span<const Resource> resources);
std::string ToYaml(const Resource& resource);
std::string ToYaml(std::span<const Resource> resources);

}  // namespace sigil::resources
