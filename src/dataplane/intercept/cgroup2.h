// cgroup v2 plumbing for the interceptor: find or mount the unified hierarchy, create the
// managed sub-tree, move processes into it, and read a cgroup's id (the value
// bpf_get_current_cgroup_id() reports for processes inside it).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sigil::dataplane {

// Returns the mount point of the first cgroup2 filesystem listed in `mountinfo` (the format of
// /proc/self/mountinfo), with octal escapes (\040 etc.) decoded; nullopt if there is none.
// Pure function, exposed for tests.
std::optional<std::string> ParseCgroup2Mount(std::string_view mountinfo);

// An existing cgroup2 mount of this mount namespace, or a new one at `preferred_mountpoint`
// (created with its parents if missing).
Result<std::string> FindOrMountCgroup2(const std::string& preferred_mountpoint);

// Creates (if needed) `<root>/sigil` and `<root>/sigil/<name>` and returns the latter. `name`
// is one path component of [A-Za-z0-9._-], not "." or "..".
Result<std::string> EnsureManagedTree(const std::string& root, const std::string& name);

// Moves process `pid` (all its threads) into the cgroup `cgroup_dir`. pid 0 means the caller.
Result<void> MoveProcess(const std::string& cgroup_dir, pid_t pid);

// The cgroup id of `dir`: the inode number of the cgroup2 directory.
Result<uint64_t> CgroupId(const std::string& dir);

// Removes an empty cgroup directory; FailedPrecondition while processes or child cgroups remain.
Result<void> RemoveCgroup(const std::string& dir);

}  // namespace sigil::dataplane
