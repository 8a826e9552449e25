// The public description of the authority set's generations, as the admin API prints it
// (`sigil ca status`) and as the CaState resource stores it next to the sealed set
// (authority_store.cc). No key material.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "core/authority_set.h"
#include "store/store.h"

namespace sigil::server {

// {"role", "caSha256", "rootSha256", "jwtKid", "notBefore", "notAfter", "activateAt",
//  "activationScheduled", "x509IssuedUntil", "jwtIssuedUntil", "leavesBundleAt"}; times are
// RFC 3339, absent ones null.
nlohmann::json CaGenerationJson(const core::GenerationInfo& g);
// {"bundleSequence", "generations": [CaGenerationJson...]}.
nlohmann::json CaGenerationsJson(uint64_t bundle_sequence,
                                 const std::vector<core::GenerationInfo>& generations);

// The trust domain of the CA stored in `store` (the CaState resource), or nullopt when the store
// holds no CA yet (or one written before CaState recorded it).
Result<std::optional<std::string>> StoredCaTrustDomain(store::Store& store);

}  // namespace sigil::server
