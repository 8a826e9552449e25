// Test helpers for sigil_attest: real child processes (no mocks), temp dirs, file hashes.
// Test-only; not part of sigil_attest.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace sigil::agent::attest::testing {

struct SpawnSpec {
  std::string path = {};               // executable to execv
  std::vector<std::string> argv = {};  // argv[0] included; {path} when empty
  // Credentials set before exec with setgroups({}) + setresgid/setresuid(real, eff, eff).
  std::optional<uid_t> uid = std::nullopt;
  std::optional<uid_t> euid = std::nullopt;  // defaults to uid
  std::optional<gid_t> gid = std::nullopt;
  std::optional<gid_t> egid = std::nullopt;  // defaults to gid
  int stdin_fd = -1;                         // dup2'ed onto 0 when >= 0
  int stdout_fd = -1;                        // dup2'ed onto 1 when >= 0
  std::string connect_unix = {};  // connect a Unix stream socket here before exec (kept open)
  pid_t exact_pid = 0;            // clone3 with set_tid: the child gets exactly this pid
};

// A child process, SIGKILLed and reaped on destruction. Spawn returns once execve has
// succeeded (close-on-exec pipe), so /proc/PID/exe already is the new program.
class Child {
 public:
  static std::optional<Child> Spawn(const SpawnSpec& spec, std::string* error);
  // fork() only, then fn(arg) in the child and _exit(0). fn must be async-signal-safe.
  static std::optional<Child> Fork(void (*fn)(int), int arg, std::string* error);

  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  void Kill();             // SIGKILL (no reap)
  void WaitUntilZombie();  // waitid(WEXITED | WNOWAIT): exited, not reaped
  void Reap();             // waitpid
  void KillAndReap() { Kill(), Reap(); }

 private:
  explicit Child(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  bool reaped_ = false;
};

// mkdtemp under /tmp; removed recursively on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string Sha256OfFile(const std::string& path);
std::string RealPath(const std::string& path);
// Copies `from` to `to` with mode 0755 (close-on-exec descriptors, so a concurrent fork
// cannot make the later exec fail with ETXTBSY).
bool CopyExecutable(const std::string& from, const std::string& to);
bool WaitFor(const std::function<bool()>& condition,
             std::chrono::milliseconds timeout = std::chrono::seconds(10));
// readlink(/proc/PID/exe), "" on error.
std::string ExeOf(pid_t pid);
// The sleep binary every test runs (/bin/sleep, a real ELF on Debian).
inline constexpr const char* kSleep = "/bin/sleep";

}  // namespace sigil::agent::attest::testing
