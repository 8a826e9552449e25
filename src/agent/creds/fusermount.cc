#include "agent/creds/fusermount.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

extern char** environ;

namespace sigil::agent::creds {
namespace {

using Clock = std::chrono::steady_clock;

// fusermount3 finds its end of the socket through this variable (libfuse's mount protocol).
constexpr const char* kCommFdEnv = "_FUSE_COMMFD";

std::string ExitText(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// Reaps `pid` within `timeout`; kills it after that. True when it exited by itself.
bool Reap(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) return r == pid;
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, status, 0) < 0 && errno == EINTR) {
  }
  return false;
}

// Receives the one descriptor fusermount3 sends (with one byte of data).
Result<OwnedFd> ReceiveFd(int sock, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Error(ErrorCode::kDeadlineExceeded, "fusermount3 did not answer");
    struct pollfd p = {sock, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Internal(std::string("poll: ") + std::strerror(errno));
    if (n == 0) continue;
    char byte = 0;
    struct iovec iov = {&byte, 1};
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Internal(std::string("recvmsg: ") + std::strerror(errno));
    if (r == 0) return Unavailable("fusermount3 closed the socket without a descriptor");
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
          c->cmsg_len == CMSG_LEN(sizeof(int))) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
        return OwnedFd(fd);
      }
    }
    return Unavailable("fusermount3 answered without a descriptor");
  }
}

}  // namespace

Result<FusermountMount> MountWithFusermount(const std::string& dir, const std::string& options,
                                            std::chrono::milliseconds timeout) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Internal(std::string("socketpair: ") + std::strerror(errno));
  }
  OwnedFd ours(sv[0]), theirs(sv[1]);
  // The child gets its end at a fixed number, through dup2 in posix_spawn (which clears
  // close-on-exec on the copy), so the descriptor is never inheritable in this process.
  const int child_fd = theirs.get() == 3 ? 4 : 3;
  const std::string env_entry = std::string(kCommFdEnv) + "=" + std::to_string(child_fd);
  std::vector<char*> envp;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, kCommFdEnv, std::strlen(kCommFdEnv)) != 0) envp.push_back(*e);
  }
  envp.push_back(const_cast<char*>(env_entry.c_str()));
  envp.push_back(nullptr);
  std::string arg0 = "fusermount3", arg1 = "-o", arg2 = options, arg3 = "--", arg4 = dir;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), arg3.data(), arg4.data(), nullptr};

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), child_fd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGINT);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, arg0.c_str(), &actions, &attr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Unavailable(std::string("cannot run fusermount3: ") + std::strerror(rc));
  theirs.Reset();  // only the child holds its end now: its exit is an EOF here

  auto device = ReceiveFd(ours.get(), Clock::now() + timeout);
  if (!device.ok()) {
    int status = 0;
    const bool exited = Reap(pid, std::chrono::milliseconds(500), &status);
    return Error(device.error().code(),
                 device.error().message() +
                     (exited ? " (fusermount3 " + ExitText(status) + ")" : " (killed)"));
  }
  return FusermountMount{std::move(device).value(), std::move(ours), pid};
}

bool ReleaseFusermount(FusermountMount& m, std::chrono::milliseconds timeout) {
  m.keepalive.Reset();
  if (m.helper <= 0) return true;
  int status = 0;
  const bool exited = Reap(m.helper, timeout, &status);
  m.helper = -1;
  return exited;
}

}  // namespace sigil::agent::creds
