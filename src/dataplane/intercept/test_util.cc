// Test helpers for the interceptor tests; see test_util.h.
#include "dataplane/intercept/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sigil::dataplane::testing {
namespace {

std::string Errno(int err) { return std::strerror(err); }

void SleepMs(int ms) {
  timespec ts{.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  nanosleep(&ts, nullptr);
}

}  // namespace

Result<void> EnterFreshNetns() {
  if (::unshare(CLONE_NEWNET) != 0) return Internal("unshare(CLONE_NEWNET): " + Errno(errno));
  OwnedFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return Internal("socket: " + Errno(errno));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0)
    return Internal("SIOCGIFFLAGS lo: " + Errno(errno));
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0)
    return Internal("SIOCSIFFLAGS lo: " + Errno(errno));
  return Ok();
}

Result<std::string> LineChannel::ReadLine(int timeout_ms) {
  timespec start{};
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (true) {
    if (const size_t nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    const long elapsed =
        (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (elapsed >= timeout_ms) return Error(ErrorCode::kDeadlineExceeded, "no line from peer");
    pollfd p{.fd = in_.get(), .events = POLLIN, .revents = 0};
    const int r = ::poll(&p, 1, static_cast<int>(timeout_ms - elapsed));
    if (r < 0 && errno != EINTR) return Internal("poll: " + Errno(errno));
    if (r <= 0) continue;
    char buf[512];
    const ssize_t n = ::read(in_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Internal("read: " + Errno(errno));
    if (n == 0) return Unavailable("peer closed the channel (buffered: \"" + buffer_ + "\")");
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

Result<void> LineChannel::WriteLine(std::string_view line) {
  std::string data(line);
  data.push_back('\n');
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(out_.get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Internal("write: " + Errno(errno));
    off += static_cast<size_t>(n);
  }
  return Ok();
}

Result<Child> Child::Start(const std::function<int(LineChannel&)>& body) {
  int to_child[2];
  int to_parent[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0) return Internal("pipe2: " + Errno(errno));
  if (::pipe2(to_parent, O_CLOEXEC) != 0) {
    ::close(to_child[0]);
    ::close(to_child[1]);
    return Internal("pipe2: " + Errno(errno));
  }
  const pid_t pid = ::fork();
  if (pid < 0) return Internal("fork: " + Errno(errno));
  if (pid == 0) {
    ::close(to_child[1]);
    ::close(to_parent[0]);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
    LineChannel ch{OwnedFd(to_child[0]), OwnedFd(to_parent[1])};
    const int rc = body(ch);
    ::_exit(rc);
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  Child c;
  c.pid_ = pid;
  c.channel_ = LineChannel(OwnedFd(to_parent[0]), OwnedFd(to_child[1]));
  return c;
}

Child::~Child() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

Result<int> Child::Wait(int timeout_ms) {
  if (pid_ <= 0) return FailedPrecondition("child already reaped");
  for (int waited = 0;; waited += 10) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return Internal("child died from signal " + std::to_string(WTERMSIG(status)));
    }
    if (r < 0) return Internal("waitpid: " + Errno(errno));
    if (waited >= timeout_ms) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
      return Error(ErrorCode::kDeadlineExceeded, "child did not exit in time; killed");
    }
    SleepMs(10);
  }
}

sockaddr_storage MakeAddr(int family, const std::string& ip, uint16_t port) {
  sockaddr_storage ss{};
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    ::inet_pton(AF_INET, ip.c_str(), &sin->sin_addr);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    ::inet_pton(AF_INET6, ip.c_str(), &sin6->sin6_addr);
  }
  return ss;
}

std::string FormatAddr(const sockaddr_storage& addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(sin->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(sin6->sin6_port));
  }
  return "<family " + std::to_string(addr.ss_family) + ">";
}

uint16_t PortOf(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET)
    return ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
}

Result<OwnedFd> Bind(int family, int type, const std::string& ip, uint16_t port) {
  OwnedFd fd(::socket(family, type | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Internal("socket: " + Errno(errno));
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  const sockaddr_storage ss = MakeAddr(family, ip, port);
  const socklen_t len = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    return Internal("bind " + FormatAddr(ss) + ": " + Errno(errno));
  }
  if (type == SOCK_STREAM && ::listen(fd.get(), 1024) != 0) {
    return Internal("listen " + FormatAddr(ss) + ": " + Errno(errno));
  }
  return fd;
}

bool ReadableWithin(int fd, int timeout_ms) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

Result<OwnedFd> AcceptWithin(int listen_fd, int timeout_ms) {
  if (!ReadableWithin(listen_fd, timeout_ms)) {
    return Error(ErrorCode::kDeadlineExceeded,
                 "no connection within " + std::to_string(timeout_ms) + " ms");
  }
  OwnedFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (!fd.valid()) return Internal("accept: " + Errno(errno));
  return fd;
}

Result<sockaddr_storage> PeerOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return Internal("getpeername: " + Errno(errno));
  }
  return ss;
}

}  // namespace sigil::dataplane::testing
