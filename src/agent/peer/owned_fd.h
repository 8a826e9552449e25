// The Workload API listener uses the project-wide fd owner (common/owned_fd.h).
#pragma once

#include "common/owned_fd.h"

namespace sigil::agent::peer {
using sigil::OwnedFd;
}  // namespace sigil::agent::peer
