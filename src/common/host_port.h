// HOST:PORT parsing for listen and dial addresses given on the command line.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "common/result.h"

namespace sigil {

// "host:port", "[v6]:port" (brackets removed). Port 0-65535 in decimal digits only; 0 means
// "any" for listeners (dialers check for it themselves). InvalidArgument naming `what` (the flag)
// otherwise.
Result<std::pair<std::string, int>> SplitHostPort(std::string_view what, std::string_view text);

}  // namespace sigil
