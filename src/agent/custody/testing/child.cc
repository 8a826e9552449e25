#include "agent/custody/testing/child.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

namespace sigil::agent::custody::testing {
namespace {

void WriteAll(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text.remove_prefix(static_cast<size_t>(n));
  }
}

bool ReadByte(int fd) {
  char c;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    return n == 1;
  }
}

}  // namespace

bool ChildChecks::Check(bool ok, std::string_view what, const char* file, int line) {
  if (ok) return true;
  failed_ = true;
  WriteAll(report_fd_,
           std::string(file) + ":" + std::to_string(line) + ": " + std::string(what) + "\n");
  return false;
}

Child Child::Start(const Body& body) {
  int report[2];
  int up[2];
  int down[2];
  if (::pipe2(report, O_CLOEXEC) != 0 || ::pipe2(up, O_CLOEXEC) != 0 ||
      ::pipe2(down, O_CLOEXEC) != 0) {
    std::abort();
  }
  Child child;
  child.pid_ = ::fork();
  if (child.pid_ < 0) std::abort();
  if (child.pid_ == 0) {
    ::close(report[0]);
    ::close(up[0]);
    ::close(down[1]);
    child.report_fd_ = report[1];
    child.to_parent_fd_ = up[1];
    child.to_child_fd_ = down[0];
    ChildChecks checks(report[1]);
    body(checks, child);
    _exit(checks.failed() ? 1 : 0);
  }
  ::close(report[1]);
  ::close(up[1]);
  ::close(down[0]);
  child.report_fd_ = report[0];
  child.to_parent_fd_ = up[0];
  child.to_child_fd_ = down[1];
  return child;
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      report_fd_(std::exchange(other.report_fd_, -1)),
      to_parent_fd_(std::exchange(other.to_parent_fd_, -1)),
      to_child_fd_(std::exchange(other.to_child_fd_, -1)) {}

Child::~Child() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  for (int fd : {report_fd_, to_parent_fd_, to_child_fd_}) {
    if (fd >= 0) ::close(fd);
  }
}

bool Child::WaitNotified() { return ReadByte(to_parent_fd_); }
void Child::Release() { WriteAll(to_child_fd_, "g"); }
void Child::Notify() { WriteAll(to_parent_fd_, "r"); }
void Child::WaitReleased() { (void)ReadByte(to_child_fd_); }

std::string Child::Wait() {
  ::close(to_child_fd_);  // a child still blocked in WaitReleased() proceeds
  to_child_fd_ = -1;
  std::string report;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(report_fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    report.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  if (WIFSIGNALED(status)) {
    report += "child killed by signal " + std::to_string(WTERMSIG(status)) + "\n";
  } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0 && report.empty()) {
    report += "child exited with status " + std::to_string(WEXITSTATUS(status)) + "\n";
  }
  return report;
}

std::string RunInChild(const std::function<void(ChildChecks&)>& body) {
  return Child::Start([&](ChildChecks& c, Child&) { body(c); }).Wait();
}

}  // namespace sigil::agent::custody::testing
