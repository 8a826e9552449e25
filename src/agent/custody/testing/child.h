// Test-only: runs checks in a forked child so that process-wide hardening (non-dumpable,
// secure heap, lowered rlimits, setresuid) never touches the gtest runner.
//
// The child reports failures as text over a pipe and ends with _exit(); the parent turns the
// text into one gtest expectation. Fork only from a single-threaded test process.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

namespace sigil::agent::custody::testing {

class ChildChecks {
 public:
  explicit ChildChecks(int report_fd) : report_fd_(report_fd) {}
  // Records a failure unless `ok`; returns `ok` so callers can stop early.
  bool Check(bool ok, std::string_view what, const char* file, int line);
  void Fail(std::string_view what, const char* file, int line) { Check(false, what, file, line); }
  bool failed() const { return failed_; }

 private:
  int report_fd_;
  bool failed_ = false;
};

#define CHILD_CHECK(c, cond) (c).Check(static_cast<bool>(cond), #cond, __FILE__, __LINE__)
#define CHILD_CHECK_MSG(c, cond, msg) \
  (c).Check(static_cast<bool>(cond), std::string(#cond) + ": " + (msg), __FILE__, __LINE__)

// A forked child with two one-byte control channels (parent <-> child) besides the report.
class Child {
 public:
  using Body = std::function<void(ChildChecks&, Child&)>;
  // Forks and runs `body` in the child; the child exits when `body` returns.
  static Child Start(const Body& body);
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  ~Child();  // kills and reaps a child that was not waited for

  pid_t pid() const { return pid_; }
  // Parent side: blocks until the child calls Notify(); false if it exited first.
  bool WaitNotified();
  // Parent side: releases a child blocked in WaitReleased().
  void Release();
  // Waits for the exit; returns the failure report ("" when the child passed).
  std::string Wait();

  // Child side.
  void Notify();
  void WaitReleased();

 private:
  Child() = default;
  pid_t pid_ = -1;
  int report_fd_ = -1;     // parent reads
  int to_parent_fd_ = -1;  // child writes / parent reads (parent keeps the read end)
  int to_child_fd_ = -1;   // parent writes / child reads
};

// Start + Wait.
std::string RunInChild(const std::function<void(ChildChecks&)>& body);

}  // namespace sigil::agent::custody::testing
