// Test helpers for the interceptor tests: a fresh network namespace, forked child processes
// that talk to the test over line-based pipes, and small socket utilities. Every wait is
// bounded in time.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "common/owned_fd.h"
#include "common/result.h"

namespace sigil::dataplane::testing {

// Moves the calling process into a new network namespace with `lo` up (127.0.0.1 and ::1).
Result<void> EnterFreshNetns();

// A bidirectional line channel over two pipes.
class LineChannel {
 public:
  LineChannel() = default;
  LineChannel(OwnedFd in, OwnedFd out) : in_(std::move(in)), out_(std::move(out)) {}
  // One line without its '\n'; DeadlineExceeded after `timeout_ms`, Unavailable on EOF.
  Result<std::string> ReadLine(int timeout_ms);
  Result<void> WriteLine(std::string_view line);

 private:
  OwnedFd in_;
  OwnedFd out_;
  std::string buffer_;
};

// A forked child running `body`; the child _exit()s with body's return value.
class Child {
 public:
  static Result<Child> Start(const std::function<int(LineChannel&)>& body);
  Child() = default;
  Child(Child&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), channel_(std::move(other.channel_)) {}
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  ~Child();  // kills and reaps the child if it is still running

  pid_t pid() const { return pid_; }
  LineChannel& channel() { return channel_; }
  // Exit status (0..255), or an error if it did not exit within `timeout_ms` (it is killed)
  // or died from a signal.
  Result<int> Wait(int timeout_ms);

 private:
  pid_t pid_ = -1;
  LineChannel channel_;
};

sockaddr_storage MakeAddr(int family, const std::string& ip, uint16_t port);
std::string FormatAddr(const sockaddr_storage& addr);
uint16_t PortOf(const sockaddr_storage& addr);

// A bound (and, for SOCK_STREAM, listening) socket; IPv6 sockets are IPV6_V6ONLY.
Result<OwnedFd> Bind(int family, int type, const std::string& ip, uint16_t port);
// Waits up to `timeout_ms` for a connection and accepts it.
Result<OwnedFd> AcceptWithin(int listen_fd, int timeout_ms);
// True if `fd` becomes readable (e.g. a pending connection) within `timeout_ms`.
bool ReadableWithin(int fd, int timeout_ms);
Result<sockaddr_storage> PeerOf(int fd);

}  // namespace sigil::dataplane::testing
