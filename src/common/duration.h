// Human durations for flags and config: "90s", "5m", "1h30m", "24h", "7d". Whole seconds only.
#pragma once

#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/result.h"

namespace sigil {

// Units: s, m, h, d. A bare number is rejected (ambiguous). Zero is allowed; overflow and
// values beyond 100 years are rejected.
Result<Seconds> ParseDuration(std::string_view text);
// Inverse, canonical form: "1h30m", "5m", "0s".
std::string FormatDuration(Seconds d);
// RFC 3339 UTC, second precision: "2026-12-04T15:25:45Z".
std::string FormatRfc3339(TimePoint t);

}  // namespace sigil
