#include "agent/peer/peer_creds.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace sigil::agent::peer {
namespace {

// getsockopt(SOL_SOCKET, SO_PEERPIDFD), Linux 6.5; newer than the Debian 12 headers. ABI.
constexpr int kSoPeerPidfd = 77;

Error ErrnoError(std::string_view what, int err) {
  const char* desc = ::strerrordesc_np(err);
  return Internal(std::string(what) + ": " + (desc != nullptr ? desc : "unknown error"));
}

}  // namespace

Result<PeerInfo> ReadPeerCredentials(int fd, bool use_socket_pidfd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) {
    return ErrnoError("getsockopt(SO_PEERCRED)", errno);
  }
  PeerInfo info;
  info.pid = cred.pid;
  info.uid = cred.uid;
  info.gid = cred.gid;

  int pidfd = -1;
  int err = ENOPROTOOPT;
  if (use_socket_pidfd) {
    socklen_t plen = sizeof(pidfd);
    if (::getsockopt(fd, SOL_SOCKET, kSoPeerPidfd, &pidfd, &plen) == 0 && plen == sizeof(pidfd)) {
      info.pidfd_from_socket = true;
    } else {
      pidfd = -1;
      err = errno;
    }
  }
  if (pidfd < 0) {
    if (err != ENOPROTOOPT) {
      // ESRCH/EINVAL: the peer process has already exited (or been reaped).
      if (err == ESRCH || err == EINVAL) return Unavailable("peer process is gone");
      return ErrnoError("getsockopt(SO_PEERPIDFD)", err);
    }
    if (cred.pid <= 0) return Unavailable("peer pid is not visible in this pid namespace");
    pidfd = static_cast<int>(::syscall(SYS_pidfd_open, cred.pid, 0U));
    if (pidfd < 0) {
      if (errno == ESRCH) return Unavailable("peer process is gone");
      return ErrnoError("pidfd_open", errno);
    }
  }
  // pidfd_open and SO_PEERPIDFD both set O_CLOEXEC; make sure regardless.
  (void)::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  info.pidfd = std::make_shared<const OwnedFd>(pidfd);
  return info;
}

}  // namespace sigil::agent::peer
