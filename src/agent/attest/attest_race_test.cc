// Races: the process exits, is replaced by a newcomer with the same pid, execs, changes
// credentials or is reparented while it is being attested. Every case must end in an
// error, never in an attestation. The TEST_between_reads hook makes each race
// deterministic.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <csignal>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "agent/attest/attest.h"
#include "agent/attest/proc_parse.h"
#include "agent/attest/proc_reader.h"
#include "agent/attest/test_process.h"

namespace sigil::agent::attest {
namespace {

using testing::Child;
using testing::ExeOf;
using testing::kSleep;
using testing::RealPath;
using testing::SpawnSpec;
using testing::WaitFor;

Child SpawnOrDie(const SpawnSpec& spec) {
  std::string error;
  auto child = Child::Spawn(spec, &error);
  if (!child) {
    ADD_FAILURE() << "spawn " << spec.path << ": " << error;
    std::abort();
  }
  return std::move(*child);
}

SpawnSpec Sleep() { return SpawnSpec{.path = kSleep, .argv = {"sleep", "1000"}}; }

// Attests `pid`, running `action` once when the attestation reaches `stage`.
Result<AttestedProcess> AttestWithHook(pid_t pid, AttestStage stage, std::function<void()> action) {
  Attestor::Options options;
  options.TEST_between_reads = [&](AttestStage s) {
    if (s == stage) action();
  };
  Attestor attestor(std::move(options));
  return attestor.Attest(pid);
}

void ExpectExitedError(const Result<AttestedProcess>& r, pid_t pid) {
  ASSERT_FALSE(r.ok()) << "attested a process that exited: exe " << r->exe_path;
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound) << r.error().ToString();
  EXPECT_NE(r.error().message().find("attest pid " + std::to_string(pid)), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("exited during attestation"), std::string::npos)
      << r.error().message();
}

enum class Death { kReaped, kZombie };

std::string StageTestName(AttestStage stage) {
  std::string name(AttestStageName(stage));
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

class ExitDuringAttestation : public ::testing::TestWithParam<std::tuple<AttestStage, Death>> {};

TEST_P(ExitDuringAttestation, IsRefused) {
  auto [stage, death] = GetParam();
  Child child = SpawnOrDie(Sleep());
  auto r = AttestWithHook(child.pid(), stage, [&, d = death] {
    child.Kill();
    if (d == Death::kReaped) {
      child.Reap();
    } else {
      child.WaitUntilZombie();
    }
  });
  ExpectExitedError(r, child.pid());
}

INSTANTIATE_TEST_SUITE_P(AttestStages, ExitDuringAttestation,
                         ::testing::Combine(::testing::ValuesIn(kAllAttestStages),
                                            ::testing::Values(Death::kReaped, Death::kZombie)),
                         [](const auto& test) {
                           return StageTestName(std::get<0>(test.param)) +
                                  (std::get<1>(test.param) == Death::kReaped ? "_reaped"
                                                                             : "_zombie");
                         });

// The pid is reused by a different program running as a different user, at the two
// moments that matter: before /proc/PID is opened (the newcomer's directory is opened and
// read successfully; only the final pidfd check can tell) and after (reads through the
// old directory fd fail).
class PidReuse : public ::testing::TestWithParam<AttestStage> {};

TEST_P(PidReuse, IsDetected) {
  if (::geteuid() != 0) GTEST_SKIP() << "clone3 set_tid needs CAP_SYS_ADMIN";
  Child original = SpawnOrDie(Sleep());
  pid_t pid = original.pid();
  std::optional<Child> newcomer;
  std::string spawn_error;
  // The newcomer is cat reading a pipe whose write end stays open until the test ends.
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  auto r = AttestWithHook(pid, GetParam(), [&] {
    original.KillAndReap();
    SpawnSpec spec{.path = "/bin/cat", .argv = {"cat"}, .uid = 65534, .gid = 65534};
    spec.stdin_fd = read_end.get();
    spec.exact_pid = pid;
    auto spawned = Child::Spawn(spec, &spawn_error);
    if (spawned) newcomer.emplace(std::move(*spawned));
  });
  if (!newcomer) GTEST_SKIP() << "could not take over pid " << pid << ": " << spawn_error;
  ASSERT_EQ(newcomer->pid(), pid);
  ASSERT_EQ(ExeOf(pid), RealPath("/bin/cat"));  // the pid really is reused now
  ExpectExitedError(r, pid);
}

INSTANTIATE_TEST_SUITE_P(ReuseStages, PidReuse,
                         ::testing::Values(AttestStage::kPidfdReady, AttestStage::kProcDirOpened,
                                           AttestStage::kExeHashed),
                         [](const auto& test) { return StageTestName(test.param); });

TEST(AttestRaceTest, ExecDuringAttestationIsAborted) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  SpawnSpec spec{.path = "/bin/sh", .argv = {"sh", "-c", "read x; exec /bin/sleep 1000"}};
  spec.stdin_fd = read_end.get();
  Child child = SpawnOrDie(spec);
  std::string sleep_path = RealPath(kSleep);
  auto r = AttestWithHook(child.pid(), AttestStage::kExeHashed, [&] {
    ASSERT_EQ(::write(write_end.get(), "\n", 1), 1);
    ASSERT_TRUE(WaitFor([&] { return ExeOf(child.pid()) == sleep_path; }));
  });
  ASSERT_FALSE(r.ok()) << "attested across an execve";
  EXPECT_EQ(r.error().code(), ErrorCode::kAborted) << r.error().ToString();
  EXPECT_NE(r.error().message().find("/proc/" + std::to_string(child.pid()) + "/exe"),
            std::string::npos)
      << r.error().message();
}

void WaitThenBecomeNobody(int fd) {
  char c;
  while (::read(fd, &c, 1) < 0 && errno == EINTR) {
  }
  // Raw syscall: only this thread exists in the forked child; skip glibc's setxid broadcast.
  ::syscall(SYS_setresuid, 65534, 65534, 65534);
  for (;;) ::pause();
}

uint32_t EffectiveUidOf(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/status";
  auto text = ReadFileAt(AT_FDCWD, path.c_str(), kMaxProcFileBytes, path);
  if (!text.ok()) return 0;
  auto st = ParseProcStatus(*text);
  return st.ok() ? st->uids[kEffectiveId] : 0;
}

TEST(AttestRaceTest, CredentialChangeDuringAttestationIsAborted) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to change uid";
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  std::string error;
  auto child = Child::Fork(WaitThenBecomeNobody, read_end.get(), &error);
  ASSERT_TRUE(child) << error;
  auto r = AttestWithHook(child->pid(), AttestStage::kCgroupRead, [&] {
    ASSERT_EQ(::write(write_end.get(), "x", 1), 1);
    ASSERT_TRUE(WaitFor([&] { return EffectiveUidOf(child->pid()) == 65534; }));
  });
  ASSERT_FALSE(r.ok()) << "attested across a setresuid";
  EXPECT_EQ(r.error().code(), ErrorCode::kAborted) << r.error().ToString();
  EXPECT_NE(r.error().message().find("credentials changed"), std::string::npos);
}

TEST(AttestRaceTest, ReparentDuringAttestationIsAborted) {
  // Become a subreaper so the orphaned grandchild is ours to reap afterwards.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  SpawnSpec spec{.path = "/bin/sh", .argv = {"sh", "-c", "/bin/sleep 1000 & echo $!; wait"}};
  spec.stdout_fd = write_end.get();
  Child shell = SpawnOrDie(spec);
  write_end = UniqueFd();
  char buf[32] = {};
  ASSERT_GT(::read(read_end.get(), buf, sizeof buf - 1), 0);
  pid_t grandchild = static_cast<pid_t>(std::strtol(buf, nullptr, 10));
  ASSERT_GT(grandchild, 0);
  ASSERT_TRUE(WaitFor([&] { return ExeOf(grandchild) == RealPath(kSleep); }));
  auto r = AttestWithHook(grandchild, AttestStage::kParentRead, [&] { shell.KillAndReap(); });
  ::kill(grandchild, SIGKILL);
  ::waitpid(grandchild, nullptr, 0);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  ASSERT_FALSE(r.ok()) << "attested across a reparent";
  EXPECT_EQ(r.error().code(), ErrorCode::kAborted) << r.error().ToString();
  EXPECT_NE(r.error().message().find("parent changed"), std::string::npos) << r.error().message();
}

TEST(AttestRaceTest, ParentOfShellChild) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]), write_end(p[1]);
  SpawnSpec spec{.path = "/bin/sh", .argv = {"sh", "-c", "/bin/sleep 1000 & echo $!; wait"}};
  spec.stdout_fd = write_end.get();
  Child shell = SpawnOrDie(spec);
  write_end = UniqueFd();
  char buf[32] = {};
  ASSERT_GT(::read(read_end.get(), buf, sizeof buf - 1), 0);
  pid_t grandchild = static_cast<pid_t>(std::strtol(buf, nullptr, 10));
  ASSERT_TRUE(WaitFor([&] { return ExeOf(grandchild) == RealPath(kSleep); }));
  Attestor attestor;
  auto r = attestor.Attest(grandchild);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->ppid, shell.pid());
  EXPECT_EQ(r->parent_exe, RealPath("/bin/sh"));
  ::kill(grandchild, SIGKILL);  // the shell reaps it (or is killed itself by ~Child)
}

}  // namespace
}  // namespace sigil::agent::attest
