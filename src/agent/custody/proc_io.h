// Small /proc helpers shared by harden.cc and status.cc (internal to sigil_custody).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sigil::agent::custody::internal {

// "what: strerror(err)" as an Error; EACCES/EPERM map to PermissionDenied, ENOMEM/EAGAIN to
// ResourceExhausted, the rest to Internal.
Error ErrnoError(std::string_view what, int err);

// Reads a small /proc file (at most 16 KiB) with plain open/read.
Result<std::string> ReadProcFile(const char* path);

// Writes `text` to a /proc file in one write(2).
Result<void> WriteProcFile(const char* path, std::string_view text);

// The leading number of a "Name:   123 kB" (or "Name:\t123") line of /proc/self/status;
// NotFound if absent.
Result<uint64_t> ReadStatusKb(std::string_view name);

}  // namespace sigil::agent::custody::internal
