// System-facing helpers of the attestor: an owned fd, bounded reads relative to a
// /proc/PID directory fd, pidfd handling. Internal to sigil_attest (and its tests).
// Every error message names the file it concerns ("/proc/42/status: read: ...").
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "common/owned_fd.h"
#include "common/result.h"

namespace sigil::agent::attest {

// The project's one fd owner (common/owned_fd.h), under the name this library uses.
using UniqueFd = sigil::OwnedFd;

// strerror text without the thread-safety problems of strerror().
std::string ErrnoText(int err);
// Maps an errno from a /proc or file operation to an Error: ENOENT/ESRCH -> NotFound,
// EACCES/EPERM -> PermissionDenied, anything else -> Internal. Message "WHAT: OP: text".
Error ErrnoError(std::string_view what, std::string_view op, int err);

// Reads the file `name` relative to `dirfd` (O_NOFOLLOW); more than `max_bytes` is
// ResourceExhausted. `display` names the file in errors.
Result<std::string> ReadFileAt(int dirfd, const char* name, size_t max_bytes,
                               std::string_view display);

// readlinkat(dirfd, name). Targets longer than 4096 + 64 bytes are ResourceExhausted.
Result<std::string> ReadLinkAt(int dirfd, const char* name, std::string_view display);

// The path the kernel reports for an open file: readlink("/proc/self/fd/FD"). For a file
// whose name was unlinked it ends in " (deleted)".
Result<std::string> FdPath(int fd, std::string_view display);

// pidfd_open(pid, 0). ESRCH -> NotFound; ENOENT/EINVAL (a thread id, not a process) ->
// InvalidArgument; ENOSYS (Linux < 5.3) -> Unimplemented.
Result<UniqueFd> OpenPidfd(pid_t pid);

// The pid a pidfd refers to, from /proc/self/fdinfo/FD: > 0 pid, 0 not visible in our pid
// namespace, -1 already reaped. An fd that is not a pidfd is InvalidArgument.
Result<pid_t> PidOfPidfd(int pidfd);

// Whether the process behind `pidfd` has exited. A pidfd polls readable once the whole
// thread group has exited (zombie or reaped); pidfd_send_signal(0) is ESRCH once it is
// reaped. Either means "exited". EPERM from the signal still proves the process exists.
Result<bool> ProcessExited(int pidfd);

}  // namespace sigil::agent::attest
