// The server logs through the shared structured logger (common/log.h).
#pragma once

#include "common/log.h"

namespace sigil::server {

using sigil::LogFormat;
using sigil::Logger;

}  // namespace sigil::server
