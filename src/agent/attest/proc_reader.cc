#include "agent/attest/proc_reader.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/attest/linux_compat.h"
#include "agent/attest/proc_parse.h"

namespace sigil::agent::attest {
namespace {

constexpr size_t kMaxLinkBytes = 4096 + 64;  // PATH_MAX plus " (deleted)" and slack

Result<std::string> ReadAll(int fd, size_t max_bytes, std::string_view display) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(display, "read", errno);
    }
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return ResourceExhausted(std::string(display) + ": larger than " + std::to_string(max_bytes) +
                               " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

std::string ErrnoText(int err) {
  const char* desc = ::strerrordesc_np(err);
  return desc != nullptr ? desc : "errno " + std::to_string(err);
}

Error ErrnoError(std::string_view what, std::string_view op, int err) {
  ErrorCode code = (err == ENOENT || err == ESRCH)   ? ErrorCode::kNotFound
                   : (err == EACCES || err == EPERM) ? ErrorCode::kPermissionDenied
                                                     : ErrorCode::kInternal;
  return Error(code, std::string(what) + ": " + std::string(op) + ": " + ErrnoText(err));
}

Result<std::string> ReadFileAt(int dirfd, const char* name, size_t max_bytes,
                               std::string_view display) {
  UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY));
  if (!fd.valid()) return ErrnoError(display, "open", errno);
  return ReadAll(fd.get(), max_bytes, display);
}

Result<std::string> ReadLinkAt(int dirfd, const char* name, std::string_view display) {
  std::string buf(kMaxLinkBytes, '\0');
  ssize_t n = ::readlinkat(dirfd, name, buf.data(), buf.size());
  if (n < 0) return ErrnoError(display, "readlink", errno);
  if (static_cast<size_t>(n) >= buf.size()) {
    return ResourceExhausted(std::string(display) + ": link target too long");
  }
  buf.resize(static_cast<size_t>(n));
  return buf;
}

Result<std::string> FdPath(int fd, std::string_view display) {
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  return ReadLinkAt(AT_FDCWD, link.c_str(), display);
}

Result<UniqueFd> OpenPidfd(pid_t pid) {
  UniqueFd fd(compat::PidfdOpen(pid, 0));
  if (fd.valid()) return fd;
  int err = errno;
  std::string who = "process " + std::to_string(pid);
  switch (err) {
    case ESRCH:
      return NotFound(who + " does not exist");
    case ENOENT:
    case EINVAL:
      return InvalidArgument("pid " + std::to_string(pid) +
                             " is not a process (a thread id?): pidfd_open: " + ErrnoText(err));
    case ENOSYS:
      return Error(ErrorCode::kUnimplemented,
                   "pidfd_open is not available (Linux >= 5.3 is required for race-free "
                   "attestation)");
    default:
      return ErrnoError(who, "pidfd_open", err);
  }
}

Result<pid_t> PidOfPidfd(int pidfd) {
  std::string path = "/proc/self/fdinfo/" + std::to_string(pidfd);
  SIGIL_ASSIGN_OR_RETURN(std::string text,
                         ReadFileAt(AT_FDCWD, path.c_str(), kMaxProcFileBytes, path));
  auto pid = ParsePidfdFdinfo(text);
  if (!pid.ok()) return pid.error().WithContext("fd " + std::to_string(pidfd));
  return static_cast<pid_t>(*pid);
}

Result<bool> ProcessExited(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  int rc = 0;
  do {
    rc = ::poll(&p, 1, 0);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return ErrnoError("pidfd " + std::to_string(pidfd), "poll", errno);
  if (rc > 0 && (p.revents & POLLNVAL) != 0) {
    return InvalidArgument("pidfd " + std::to_string(pidfd) + ": not an open file descriptor");
  }
  if (rc > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) return true;
  if (compat::PidfdSendSignal(pidfd, 0) == 0) return false;
  if (errno == ESRCH) return true;
  if (errno == EPERM) return false;
  return ErrnoError("pidfd " + std::to_string(pidfd), "pidfd_send_signal", errno);
}

}  // namespace sigil::agent::attest
