// Pure parsers for the /proc text the attestor reads: /proc/PID/status and the fdinfo of a
// pidfd. They take the file's bytes and never touch the system, so a libFuzzer target can
// drive them directly; every malformed input is an InvalidArgument naming the line.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sigil::agent::attest {

// Upper bound for any /proc text file the attestor reads (status is ~1.5 KiB, cgroup a
// few hundred bytes); a longer file is a ResourceExhausted error, not a truncated parse.
inline constexpr size_t kMaxProcFileBytes = size_t{64} * 1024;

// The fields of /proc/PID/status the attestor uses.
struct ProcStatus {
  std::string name;  // "Name:" (comm) exactly as printed (the kernel escapes '\n' and '\\');
                     // chosen by the process itself, so informational only
  int32_t tgid = 0;  // "Tgid:" > 0
  int32_t pid = 0;   // "Pid:" > 0
  int32_t ppid = 0;  // "PPid:" >= 0; 0 when the parent is outside our pid namespace
  // "Uid:" / "Gid:": real, effective, saved set, file system (the kernel's order).
  std::array<uint32_t, 4> uids{};
  std::array<uint32_t, 4> gids{};
  std::vector<uint32_t> groups;  // "Groups:" supplementary gids (may be empty)
};

// Index into ProcStatus::uids / gids.
inline constexpr size_t kRealId = 0;
inline constexpr size_t kEffectiveId = 1;

// Parses /proc/PID/status. Requires Name, Tgid, Pid, PPid, Uid and Gid exactly once each;
// Groups is optional; other lines are ignored. Numbers are plain decimal (no sign, no
// leading zeros) within range.
Result<ProcStatus> ParseProcStatus(std::string_view text);

// Parses /proc/self/fdinfo/FD of a pidfd and returns its "Pid:" value: the process's pid in
// the reader's pid namespace, 0 when it is not visible there, -1 once it has been reaped.
// Text without a "Pid:" line (the fd is not a pidfd) is InvalidArgument.
Result<int32_t> ParsePidfdFdinfo(std::string_view text);

}  // namespace sigil::agent::attest
