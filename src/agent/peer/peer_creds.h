// Credentials of the process on the other end of a connected AF_UNIX stream socket.
//
// SO_PEERCRED gives the pid/uid/gid the kernel recorded when the peer called connect(2) (they
// do not change if the peer later setuid()s or passes the socket on). SO_PEERPIDFD (Linux 6.5)
// gives a pidfd for that same struct pid: it can never name another process, even after the
// peer exits and its pid is recycled. On older kernels (ENOPROTOOPT) the fallback is
// pidfd_open(pid), which races with pid reuse: the peer may have exited and its pid been
// given to a new process between connect() and pidfd_open(). PeerInfo::pidfd_from_socket says
// which one was used; attestation should treat the fallback as weaker.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>

#include "agent/peer/owned_fd.h"
#include "common/result.h"

namespace sigil::agent::peer {

struct PeerInfo {
  pid_t pid = 0;  // in this process's pid namespace
  uid_t uid = 0;
  gid_t gid = 0;
  // Owned pidfd (O_CLOEXEC), shared by every copy of this PeerInfo; closed when the last copy
  // is gone. Never null in a PeerInfo returned by PeerListener/ReadPeerCredentials.
  std::shared_ptr<const OwnedFd> pidfd;
  bool pidfd_from_socket = false;  // true: SO_PEERPIDFD; false: pidfd_open(pid) fallback
  uint64_t connection_id = 0;      // per PeerListener: 1, 2, 3, ... never reused

  int pidfd_raw() const { return pidfd ? pidfd->get() : -1; }
};

// Reads SO_PEERCRED and a pidfd for `fd`. Unavailable when the peer is already gone (no pidfd
// can be had), Internal for other failures. `use_socket_pidfd = false` forces the fallback
// (tests).
Result<PeerInfo> ReadPeerCredentials(int fd, bool use_socket_pidfd = true);

}  // namespace sigil::agent::peer
