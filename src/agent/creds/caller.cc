#include "agent/creds/caller.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "agent/attest/proc_parse.h"
#include "common/owned_fd.h"

namespace sigil::agent::creds {
namespace {

constexpr size_t kMaxStatus = size_t{64} * 1024;
constexpr int kAttempts = 3;

Result<pid_t> ThreadGroupOf(pid_t tid) {
  const std::string path = "/proc/" + std::to_string(tid) + "/status";
  OwnedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ENOENT || err == ESRCH) return NotFound(path + ": the caller exited");
    return Internal(path + ": open: " + std::strerror(err));
  }
  std::string text;
  char buf[4096];
  while (text.size() <= kMaxStatus) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      if (err == ESRCH) return NotFound(path + ": the caller exited");
      return Internal(path + ": read: " + std::strerror(err));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  if (text.size() > kMaxStatus) return ResourceExhausted(path + ": larger than 64 KiB");
  SIGIL_ASSIGN_OR_RETURN(attest::ProcStatus status, attest::ParseProcStatus(text));
  return static_cast<pid_t>(status.tgid);
}

}  // namespace

Result<attest::AttestedProcess> AttestCaller(attest::Attestor& attestor, pid_t tid) {
  if (tid <= 0) {
    return PermissionDenied("the caller is outside the agent's pid namespace (pid 0)");
  }
  SIGIL_ASSIGN_OR_RETURN(pid_t tgid, ThreadGroupOf(tid));
  if (tgid == ::getpid()) return PermissionDenied("the agent does not read its own credentials");
  Result<attest::AttestedProcess> process = Error(ErrorCode::kAborted, "not attested");
  for (int i = 0; i < kAttempts; ++i) {
    process = attestor.Attest(tgid);
    if (process.ok() || process.error().code() != ErrorCode::kAborted) break;
  }
  if (!process.ok()) return process;
  if (tgid != tid) {
    const std::string task = "/proc/" + std::to_string(tgid) + "/task/" + std::to_string(tid);
    if (::access(task.c_str(), F_OK) != 0) {
      return NotFound("thread " + std::to_string(tid) + " is no longer part of pid " +
                      std::to_string(tgid));
    }
  }
  return process;
}

}  // namespace sigil::agent::creds
