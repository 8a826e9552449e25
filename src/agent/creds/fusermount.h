// Mounting the credential filesystem through fusermount3 without fork().
//
// libfuse mounts with the auto_unmount option by forking the calling process and exec'ing
// fusermount3 from the child; between the two, the child calls setenv (malloc). The agent is
// multithreaded by then, and a child forked while another thread holds an allocator lock that
// fork does not reset hangs there, and the agent with it, waiting for the mount (seen under
// ASan, whose allocator is not reset at fork). So the agent starts fusermount3 itself with
// posix_spawn (no code runs between the fork and the exec) and speaks its small protocol:
// fusermount3 mounts, sends the /dev/fuse descriptor back over a socketpair (SCM_RIGHTS), and,
// with auto_unmount, stays alive until our end of the socket closes, then unmounts. libfuse
// takes the descriptor as the mount point "/dev/fd/N".
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>

#include "common/owned_fd.h"
#include "common/result.h"

namespace sigil::agent::creds {

struct FusermountMount {
  OwnedFd device;     // /dev/fuse, mounted on the directory
  OwnedFd keepalive;  // closing it makes fusermount3 unmount (auto_unmount)
  pid_t helper = -1;  // fusermount3, still running
};

// Runs `fusermount3 -o <options> -- <dir>` (found through PATH) and waits up to `timeout` for
// the device. Unavailable when fusermount3 is missing or refuses (its exit status and the
// reason are in the error), DeadlineExceeded when it neither answers nor exits in time (it is
// killed).
Result<FusermountMount> MountWithFusermount(const std::string& dir, const std::string& options,
                                            std::chrono::milliseconds timeout);

// Closes `keepalive` (fusermount3 then unmounts) and reaps the helper, waiting up to
// `timeout`; kills it after that. True when it exited by itself.
bool ReleaseFusermount(FusermountMount& m, std::chrono::milliseconds timeout);

}  // namespace sigil::agent::creds
