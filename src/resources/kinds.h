// Per-kind spec validators. Internal to sigil_resources.
//
// Each reads the document's `spec` through `spec` (which records problems with full paths)
// and returns the canonical spec: known fields only, defaults filled in, set-like lists
// sorted. The returned value is meaningful only when no problem was recorded. Secret fields
// are returned in clear; the caller moves them out with ExtractSecrets.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/result.h"
#include "resources/field_reader.h"

namespace sigil::resources::internal {

nlohmann::json ValidateWorkloadIdentity(ObjectReader& spec);
nlohmann::json ValidateService(ObjectReader& spec);
nlohmann::json ValidateCredentialSource(ObjectReader& spec);
nlohmann::json ValidateCredentialBinding(ObjectReader& spec);
nlohmann::json ValidateAccessPolicy(ObjectReader& spec);

// Shared field checks.
// A duration string within [min, max]; writes the canonical form ("1h30m") to out[key], or
// `fallback` when absent.
void ReadDuration(ObjectReader& obj, std::string_view key, Seconds min, Seconds max,
                  Seconds fallback, nlohmann::json& out);
// A list (>= 1) of IdentityPattern strings, canonical and sorted, into out[key].
void ReadIdentityPatterns(ObjectReader& obj, std::string_view key, nlohmann::json& out);
// PEM certificates (optional) into out[key].
void ReadCaBundle(ObjectReader& obj, std::string_view key, nlohmann::json& out);
// Validates each item with `check` (returns the canonical item or an error), reports
// failures at "path[i]", then duplicates; optionally sorts. False if any problem.
bool CanonicalList(std::vector<std::string>& items, const std::string& path, Problems& problems,
                   bool sort, const std::function<Result<std::string>(const std::string&)>& check);

}  // namespace sigil::resources::internal
