// Linux interfaces newer than the glibc 2.36 / Linux 6.1 headers this tree builds against.
// Internal to sigil_attest. Every constant here is ABI (it cannot change), so defining it
// locally is safe; the kernel answers ENOPROTOOPT / EINVAL / ENOSYS where it is too old.
#pragma once

#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

namespace sigil::agent::attest::compat {

// getsockopt(SOL_SOCKET, SO_PEERPIDFD): a pidfd for the peer of a Unix socket (Linux 6.5).
inline constexpr int kSoPeerPidfd = 77;
// statx mask bits: the mount id (5.8) and the never-reused 64-bit mount id (6.8).
inline constexpr unsigned kStatxMntId = 0x1000;
inline constexpr unsigned kStatxMntIdUnique = 0x4000;
// statfs f_type of FUSE file systems.
inline constexpr long kFuseSuperMagic = 0x65735546;

// pidfd_open(2), Linux 5.3. Returns the fd or -1 with errno set.
inline int PidfdOpen(pid_t pid, unsigned flags) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, flags));
}

// pidfd_send_signal(2), Linux 5.1. Signal 0 only checks that the process still exists.
inline int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0U));
}

}  // namespace sigil::agent::attest::compat
