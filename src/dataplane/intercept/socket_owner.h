// Which process holds a socket: the processes of one cgroup whose file descriptor tables refer
// to a socket inode (/proc/PID/fd/N -> "socket:[INODE]"). This is how the nftables
// interception fallback gets from a socket (found with sock_diag) to a pid; it costs one
// readlink per open descriptor of every process in the cgroup.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sigil::dataplane {

// The processes listed in `cgroup_dir`/cgroup.procs (that cgroup only, not its children)
// holding a descriptor for socket `inode`, in ascending pid order. Processes that exit during
// the scan are skipped. ResourceExhausted past 65536 processes or 1M descriptors.
Result<std::vector<pid_t>> ProcessesHoldingSocket(const std::string& cgroup_dir, uint64_t inode);

// Parses cgroup.procs text (one decimal pid per line). Pure, for tests.
Result<std::vector<pid_t>> ParsePidList(std::string_view text, size_t max_pids);

// The effective gid of `pid` (the second field of "Gid:" in /proc/PID/status).
Result<gid_t> EffectiveGid(pid_t pid);

}  // namespace sigil::dataplane
