// Attestor::AttestPeer: from a connected Unix socket to a pinned process.
#include <sys/socket.h>

#include <cerrno>

#include "agent/attest/attest.h"
#include "agent/attest/linux_compat.h"
#include "agent/attest/proc_reader.h"

namespace sigil::agent::attest {
namespace {

constexpr std::string_view kContext = "attest socket peer";

Error PeerError(std::string_view op, int err) {
  std::string what = std::string(kContext) + ": " + std::string(op) + ": " + ErrnoText(err);
  switch (err) {
    case ESRCH:
      return NotFound(what + " (the peer process has exited)");
    case ENODATA:
    case ENOTCONN:
      return FailedPrecondition(what + " (no peer process: not a connected Unix socket?)");
    case EBADF:
    case ENOTSOCK:
    case EINVAL:
      return InvalidArgument(what);
    default:
      return Internal(what);
  }
}

}  // namespace

Result<AttestedProcess> Attestor::AttestPeer(int unix_socket) {
  int fd = -1;
  socklen_t len = sizeof fd;
  if (!options_.TEST_peer_pidfd_unsupported &&
      ::getsockopt(unix_socket, SOL_SOCKET, compat::kSoPeerPidfd, &fd, &len) == 0) {
    UniqueFd pidfd(fd);
    auto pid = PidOfPidfd(pidfd.get());
    if (!pid.ok()) return std::move(pid).error().WithContext(kContext);
    if (*pid == -1) return NotFound(std::string(kContext) + ": the peer process has exited");
    if (*pid == 0) {
      return FailedPrecondition(std::string(kContext) +
                                ": the peer process is outside our pid namespace");
    }
    return Run(*pid, pidfd.get(), PidfdSource::kPeerPidfd);
  }
  if (!options_.TEST_peer_pidfd_unsupported && errno != ENOPROTOOPT) {
    // Before Linux 6.16 SO_PEERPIDFD fails with EINVAL once the peer has been reaped.
    if (errno == EINVAL || errno == ESRCH) {
      return NotFound(std::string(kContext) + ": SO_PEERPIDFD: the peer process has exited");
    }
    return PeerError("SO_PEERPIDFD", errno);
  }
  // Kernel < 6.5: the pid from SO_PEERCRED, then pidfd_open. Weaker (see
  // PidfdSource::kPeerCredFallback), and the result says so.
  ucred cred{};
  len = sizeof cred;
  if (::getsockopt(unix_socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return PeerError("SO_PEERCRED", errno);
  }
  if (cred.pid <= 0) {
    return FailedPrecondition(std::string(kContext) +
                              ": SO_PEERCRED has no pid (peer outside our pid namespace?)");
  }
  auto pidfd = OpenPidfd(cred.pid);
  if (!pidfd.ok()) return std::move(pidfd).error().WithContext(kContext);
  return Run(cred.pid, pidfd->get(), PidfdSource::kPeerCredFallback);
}

}  // namespace sigil::agent::attest
