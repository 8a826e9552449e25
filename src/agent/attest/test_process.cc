#include "agent/attest/test_process.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/encoding.h"
#include "common/file_util.h"

namespace sigil::agent::attest::testing {
namespace {

// Everything the child needs, prepared before fork: after fork only async-signal-safe
// calls are allowed (the test binary may have other threads).
struct Prepared {
  const SpawnSpec* spec;
  std::vector<char*> argv;
  sockaddr_un addr{};
  int report_fd;
};

[[noreturn]] void ChildFail(int report_fd, int step) {
  int payload[2] = {step, errno};
  ssize_t ignored = ::write(report_fd, payload, sizeof payload);
  (void)ignored;
  ::_exit(127);
}

[[noreturn]] void ChildMain(const Prepared& p) {
  const SpawnSpec& s = *p.spec;
  if (s.stdin_fd >= 0 && ::dup2(s.stdin_fd, 0) < 0) ChildFail(p.report_fd, 1);
  if (s.stdout_fd >= 0 && ::dup2(s.stdout_fd, 1) < 0) ChildFail(p.report_fd, 2);
  if (s.gid || s.uid) {
    if (::setgroups(0, nullptr) != 0) ChildFail(p.report_fd, 3);
  }
  if (s.gid) {
    gid_t eff = s.egid.value_or(*s.gid);
    if (::setresgid(*s.gid, eff, eff) != 0) ChildFail(p.report_fd, 4);
  }
  if (s.uid) {
    uid_t eff = s.euid.value_or(*s.uid);
    if (::setresuid(*s.uid, eff, eff) != 0) ChildFail(p.report_fd, 5);
  }
  if (!s.connect_unix.empty()) {
    int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);  // not CLOEXEC: the exec'd program keeps it
    if (sock < 0) ChildFail(p.report_fd, 6);
    if (::connect(sock, reinterpret_cast<const sockaddr*>(&p.addr), sizeof p.addr) != 0) {
      ChildFail(p.report_fd, 7);
    }
  }
  ::execv(s.path.c_str(), p.argv.data());
  ChildFail(p.report_fd, 8);
}

pid_t Clone3WithPid(pid_t want) {
  pid_t tids[1] = {want};
  clone_args args{};
  args.exit_signal = SIGCHLD;
  args.set_tid = reinterpret_cast<uintptr_t>(tids);
  args.set_tid_size = 1;
  return static_cast<pid_t>(::syscall(SYS_clone3, &args, sizeof args));
}

}  // namespace

std::optional<Child> Child::Spawn(const SpawnSpec& spec, std::string* error) {
  std::vector<std::string> argv =
      spec.argv.empty() ? std::vector<std::string>{spec.path} : spec.argv;
  Prepared p{&spec, {}, {}, -1};
  for (auto& a : argv) p.argv.push_back(a.data());
  p.argv.push_back(nullptr);
  if (!spec.connect_unix.empty()) {
    p.addr.sun_family = AF_UNIX;
    std::strncpy(p.addr.sun_path, spec.connect_unix.c_str(), sizeof p.addr.sun_path - 1);
  }
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    *error = "pipe2 failed";
    return std::nullopt;
  }
  p.report_fd = report[1];
  pid_t pid = spec.exact_pid > 0 ? Clone3WithPid(spec.exact_pid) : ::fork();
  if (pid == 0) ChildMain(p);
  int clone_errno = errno;
  ::close(report[1]);
  if (pid < 0) {
    ::close(report[0]);
    *error = std::string("fork/clone3 failed: ") + std::strerror(clone_errno);
    return std::nullopt;
  }
  int payload[2] = {0, 0};
  ssize_t n;
  do {
    n = ::read(report[0], payload, sizeof payload);
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  Child child(pid);
  if (n > 0) {
    *error =
        "child setup step " + std::to_string(payload[0]) + " failed: " + std::strerror(payload[1]);
    return std::nullopt;  // `child` reaps it
  }
  return child;
}

std::optional<Child> Child::Fork(void (*fn)(int), int arg, std::string* error) {
  pid_t pid = ::fork();
  if (pid == 0) {
    fn(arg);
    ::_exit(0);
  }
  if (pid < 0) {
    *error = std::string("fork failed: ") + std::strerror(errno);
    return std::nullopt;
  }
  return Child(pid);
}

Child::Child(Child&& other) noexcept : pid_(other.pid_), reaped_(other.reaped_) {
  other.reaped_ = true;
}

Child::~Child() {
  if (!reaped_) KillAndReap();
}

void Child::Kill() { ::kill(pid_, SIGKILL); }

void Child::WaitUntilZombie() {
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) != 0 &&
         errno == EINTR) {
  }
}

void Child::Reap() {
  if (reaped_) return;
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/sigil-attest-XXXXXX";
  if (::mkdtemp(tmpl) != nullptr) path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string Sha256OfFile(const std::string& path) {
  auto data = ReadFile(path, size_t{256} << 20);
  if (!data.ok()) return "error: " + data.error().ToString();
  return Sha256Hex(AsBytes(*data));
}

std::string RealPath(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::canonical(path, ec);
  return ec ? std::string() : p.string();
}

bool CopyExecutable(const std::string& from, const std::string& to) {
  auto data = ReadFile(from, size_t{256} << 20);
  if (!data.ok()) return false;
  int fd = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
  if (fd < 0) return false;
  bool ok = ::write(fd, data->data(), data->size()) == static_cast<ssize_t>(data->size());
  return ::close(fd) == 0 && ok;
}

bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string ExeOf(pid_t pid) {
  std::error_code ec;
  auto target = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec);
  return ec ? std::string() : target.string();
}

}  // namespace sigil::agent::attest::testing
