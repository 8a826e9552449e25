// Mount-table helpers for the credential filesystem.
//
// An agent that died without unmounting (SIGKILL, crash) leaves its FUSE mount behind: every
// access to it fails with ENOTCONN until someone unmounts it. At start the agent detaches
// (umount2 MNT_DETACH, "lazy") such dead mounts on the directory before mounting afresh. A
// live mount of ours belongs to another running agent and is not touched.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sigil::agent::creds {

// The file system type our mounts show in /proc/self/mountinfo ("fuse." + subtype).
inline constexpr std::string_view kCredsFsType = "fuse.sigil-creds";

struct MountEntry {
  std::string mount_point;  // unescaped (mountinfo writes ' ' as \040, etc.)
  std::string fs_type;
  std::string source;
};

// Parses /proc/self/mountinfo text (proc(5)); malformed lines are skipped.
std::vector<MountEntry> ParseMountInfo(std::string_view text);

// Detaches dead mounts on `dir` (stat fails with ENOTCONN: a FUSE mount whose server died),
// up to 8 stacked ones, and returns how many. AlreadyExists when a live mount of ours is on
// `dir` (another agent serves it; it is left alone).
Result<int> DetachStaleMounts(const std::string& dir);

// Whether `dir` is a mount point of kCredsFsType right now.
Result<bool> IsCredsMount(const std::string& dir);

}  // namespace sigil::agent::creds
