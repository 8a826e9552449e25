// Creating the Workload API socket file safely (internal to sigil_peer; exposed for tests).
//
// BindListeningSocket(path, mode):
// - `path` must be absolute and fit sockaddr_un (107 bytes).
// - Missing parent directories are created with exactly 0755 (chmod after mkdir, so the
//   umask cannot make them unreachable for workloads); existing ones are left untouched.
// - An existing `path` is replaced only if it is a socket nobody listens on (connect(2) gets
//   ECONNREFUSED). A live socket is AlreadyExists; anything else (file, directory, symlink)
//   is FailedPrecondition and is left alone.
// - The socket is bound to a temporary name in the same directory, chmod'ed to `mode` and
//   listen()ing before rename(2) moves it over `path`: clients never see a socket with the
//   wrong mode, and a stale socket is replaced atomically. The check and the rename are not
//   atomic with respect to another process creating `path` in between; the directory should
//   be writable only by the agent.
// Returns the listening socket (SOCK_NONBLOCK | SOCK_CLOEXEC) and the socket file's identity.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>

#include "agent/peer/owned_fd.h"
#include "common/result.h"

namespace sigil::agent::peer {

struct BoundSocket {
  OwnedFd fd;
  dev_t dev = 0;  // of the socket file at `path`, to unlink it only if it is still ours
  ino_t ino = 0;
};

Result<BoundSocket> BindListeningSocket(const std::string& path, mode_t mode, int backlog = 128);

// Unlinks `path` if it is still the socket file identified by (dev, ino).
void UnlinkIfSame(const std::string& path, dev_t dev, ino_t ino);

}  // namespace sigil::agent::peer
