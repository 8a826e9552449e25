// Attestation of real processes. These tests run as root (as CI does); the ones that need
// root skip otherwise.
#include "agent/attest/attest.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <limits>
#include <thread>

#include "agent/attest/test_process.h"

namespace sigil::agent::attest {
namespace {

using testing::Child;
using testing::CopyExecutable;
using testing::ExeOf;
using testing::kSleep;
using testing::RealPath;
using testing::Sha256OfFile;
using testing::SpawnSpec;
using testing::TempDir;

bool Has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool HasPrefix(const std::vector<std::string>& v, std::string_view prefix) {
  return std::any_of(v.begin(), v.end(),
                     [&](const std::string& s) { return s.starts_with(prefix); });
}

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

#define REQUIRE_ROOT() \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root"

TEST(AttestTest, Self) {
  Attestor attestor;
  auto p = attestor.Attest(::getpid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->pid, ::getpid());
  EXPECT_EQ(p->pidfd_source, PidfdSource::kPidfdOpen);
  EXPECT_EQ(p->uid, ::geteuid());
  EXPECT_EQ(p->gid, ::getegid());
  EXPECT_EQ(p->real_uid, ::getuid());
  EXPECT_EQ(p->exe_path, RealPath("/proc/self/exe"));
  EXPECT_FALSE(p->exe_deleted);
  EXPECT_EQ(p->exe_sha256, Sha256OfFile(RealPath("/proc/self/exe")));
  EXPECT_EQ(p->ppid, ::getppid());
  EXPECT_EQ(p->parent_exe, ExeOf(::getppid()));
  auto sel = p->Selectors();
  EXPECT_TRUE(Has(sel, "unix:uid:" + std::to_string(::geteuid())));
  EXPECT_TRUE(Has(sel, "unix:path:" + p->exe_path));
  EXPECT_TRUE(Has(sel, "unix:sha256:" + p->exe_sha256));
}

TEST(AttestTest, ExecWithFakeArgv0KeepsTheRealPath) {
  SpawnSpec spec = Sleep();
  spec.argv = {"fake-name", "1000"};  // what `exec -a fake-name /bin/sleep 1000` does
  Child child = SpawnOrDie(spec);
  Attestor attestor;
  auto p = attestor.Attest(child.pid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->exe_path, RealPath(kSleep));
  EXPECT_EQ(p->exe_sha256, Sha256OfFile(kSleep));
  auto sel = p->Selectors();
  EXPECT_TRUE(Has(sel, "unix:path:" + RealPath(kSleep)));
  for (const auto& s : sel) EXPECT_EQ(s.find("fake-name"), std::string::npos) << s;
  EXPECT_EQ(p->ppid, ::getpid());
  EXPECT_EQ(p->parent_exe, RealPath("/proc/self/exe"));
}

TEST(AttestTest, CopiedBinaryKeepsHashButChangesPath) {
  TempDir dir;
  std::string copy = dir.path() + "/renamed-sleep";
  ASSERT_TRUE(CopyExecutable(kSleep, copy));
  Child original = SpawnOrDie(Sleep());
  SpawnSpec spec = Sleep();
  spec.path = copy;
  Child copied = SpawnOrDie(spec);
  Attestor attestor;
  auto a = attestor.Attest(original.pid());
  auto b = attestor.Attest(copied.pid());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->exe_sha256, b->exe_sha256);
  EXPECT_EQ(b->exe_path, copy);
  EXPECT_NE(a->exe_path, b->exe_path);
  auto sa = a->Selectors();
  auto sb = b->Selectors();
  EXPECT_TRUE(Has(sb, "unix:sha256:" + a->exe_sha256));
  EXPECT_TRUE(Has(sb, "unix:path:" + copy));
  EXPECT_FALSE(Has(sb, "unix:path:" + a->exe_path));
}

TEST(AttestTest, ProcessUnderAnotherUid) {
  REQUIRE_ROOT();
  SpawnSpec spec = Sleep();
  spec.uid = 65534;
  spec.gid = 65534;
  Child child = SpawnOrDie(spec);
  Attestor attestor;
  auto p = attestor.Attest(child.pid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->uid, 65534U);
  EXPECT_EQ(p->gid, 65534U);
  EXPECT_TRUE(p->supplementary_gids.empty());
  auto sel = p->Selectors();
  EXPECT_TRUE(Has(sel, "unix:uid:65534"));
  EXPECT_TRUE(Has(sel, "unix:gid:65534"));
  EXPECT_FALSE(Has(sel, "unix:uid:0"));
  if (passwd* pw = ::getpwuid(65534); pw != nullptr) {
    EXPECT_EQ(p->user, pw->pw_name);
    EXPECT_TRUE(Has(sel, std::string("unix:user:") + pw->pw_name));
  }
  if (group* gr = ::getgrgid(65534); gr != nullptr) {
    EXPECT_EQ(p->group, gr->gr_name);
  }
}

// The documented identity is the effective ids; the real ones are kept for audit.
TEST(AttestTest, EffectiveIdsAreTheIdentity) {
  REQUIRE_ROOT();
  SpawnSpec spec = Sleep();
  spec.uid = 4321;  // real
  spec.euid = 65534;
  spec.gid = 4322;
  spec.egid = 65534;
  Child child = SpawnOrDie(spec);
  Attestor attestor;
  auto p = attestor.Attest(child.pid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->uid, 65534U);
  EXPECT_EQ(p->real_uid, 4321U);
  EXPECT_EQ(p->gid, 65534U);
  EXPECT_EQ(p->real_gid, 4322U);
  EXPECT_TRUE(Has(p->Selectors(), "unix:uid:65534"));
  EXPECT_FALSE(Has(p->Selectors(), "unix:uid:4321"));
}

TEST(AttestTest, UnknownUidHasNoName) {
  REQUIRE_ROOT();
  SpawnSpec spec = Sleep();
  spec.uid = 3999999;
  spec.gid = 3999999;
  Child child = SpawnOrDie(spec);
  Attestor attestor;
  auto p = attestor.Attest(child.pid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->user, "");
  EXPECT_EQ(p->group, "");
  EXPECT_TRUE(Has(p->Selectors(), "unix:uid:3999999"));
  EXPECT_FALSE(HasPrefix(p->Selectors(), "unix:user:"));
  EXPECT_FALSE(HasPrefix(p->Selectors(), "unix:group:"));
}

TEST(AttestTest, DeletedExecutableStillHashes) {
  TempDir dir;
  std::string copy = dir.path() + "/doomed";
  ASSERT_TRUE(CopyExecutable(kSleep, copy));
  SpawnSpec spec = Sleep();
  spec.path = copy;
  Child child = SpawnOrDie(spec);
  ASSERT_EQ(::unlink(copy.c_str()), 0);
  Attestor attestor;
  auto p = attestor.Attest(child.pid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_TRUE(p->exe_deleted);
  EXPECT_EQ(p->exe_path, copy);
  EXPECT_EQ(p->exe_sha256, Sha256OfFile(kSleep));
  auto sel = p->Selectors();
  EXPECT_FALSE(HasPrefix(sel, "unix:path:"));
  EXPECT_TRUE(Has(sel, "unix:sha256:" + p->exe_sha256));
}

TEST(AttestTest, ReplacedPathDoesNotChangeTheHash) {
  TempDir dir;
  std::string path = dir.path() + "/tool";
  ASSERT_TRUE(CopyExecutable(kSleep, path));
  SpawnSpec spec = Sleep();
  spec.path = path;
  Child child = SpawnOrDie(spec);
  // Swap another program in at the same path (rename over it, as an attacker or an
  // upgrade would): the process still runs, and is attested as, the original bytes.
  std::string other = dir.path() + "/other";
  ASSERT_TRUE(CopyExecutable("/bin/true", other));
  ASSERT_EQ(::rename(other.c_str(), path.c_str()), 0);
  Attestor attestor;
  auto p = attestor.Attest(child.pid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->exe_sha256, Sha256OfFile(kSleep));
  EXPECT_NE(p->exe_sha256, Sha256OfFile(path));
  EXPECT_TRUE(p->exe_deleted);
  EXPECT_FALSE(HasPrefix(p->Selectors(), "unix:path:"));
}

TEST(AttestTest, HashCacheHitsAcrossProcessesOfOneBinary) {
  Child a = SpawnOrDie(Sleep());
  Child b = SpawnOrDie(Sleep());
  Attestor attestor;
  ASSERT_TRUE(attestor.Attest(a.pid()).ok());
  EXPECT_EQ(attestor.hash_cache_stats().misses, 1U);
  EXPECT_EQ(attestor.hash_cache_stats().hits, 0U);
  ASSERT_TRUE(attestor.Attest(a.pid()).ok());
  ASSERT_TRUE(attestor.Attest(b.pid()).ok());
  EXPECT_EQ(attestor.hash_cache_stats().misses, 1U);
  EXPECT_EQ(attestor.hash_cache_stats().hits, 2U);
  EXPECT_EQ(attestor.hash_cache_stats().entries, 1U);
}

TEST(AttestTest, FreshBinaryIsHashedEachTimeUntilItsCtimeIsOld) {
  TempDir dir;
  std::string copy = dir.path() + "/fresh";
  ASSERT_TRUE(CopyExecutable(kSleep, copy));
  SpawnSpec spec = Sleep();
  spec.path = copy;
  Child child = SpawnOrDie(spec);
  Attestor attestor;  // default: cache only files whose ctime is >= 2 s old
  ASSERT_TRUE(attestor.Attest(child.pid()).ok());
  ASSERT_TRUE(attestor.Attest(child.pid()).ok());
  EXPECT_EQ(attestor.hash_cache_stats().misses, 2U);
  EXPECT_EQ(attestor.hash_cache_stats().entries, 0U);
}

TEST(AttestTest, ExeLargerThanLimitIsRefused) {
  Attestor::Options options;
  options.max_exe_bytes = 1000;
  Attestor attestor(options);
  Child child = SpawnOrDie(Sleep());
  auto p = attestor.Attest(child.pid());
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(p.error().message().find("/proc/" + std::to_string(child.pid()) + "/exe"),
            std::string::npos)
      << p.error().message();
}

TEST(AttestTest, BadPids) {
  Attestor attestor;
  for (pid_t pid : {0, -1}) {
    auto p = attestor.Attest(pid);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error().code(), ErrorCode::kInvalidArgument);
  }
  auto missing = attestor.Attest(std::numeric_limits<int32_t>::max());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound) << missing.error().ToString();
  EXPECT_NE(missing.error().message().find(std::to_string(std::numeric_limits<int32_t>::max())),
            std::string::npos);
}

TEST(AttestTest, ThreadIdIsNotAProcess) {
  std::atomic<pid_t> tid{0};
  std::atomic<bool> done{false};
  std::thread t([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (tid == 0) std::this_thread::yield();
  Attestor attestor;
  auto p = attestor.Attest(tid);
  done = true;
  t.join();
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code(), ErrorCode::kInvalidArgument) << p.error().ToString();
}

TEST(AttestTest, KernelThreadHasNoExecutable) {
  std::ifstream comm("/proc/2/comm");
  std::string name;
  std::getline(comm, name);
  if (name != "kthreadd") GTEST_SKIP() << "pid 2 is not kthreadd here";
  Attestor attestor;
  auto p = attestor.Attest(2);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code(), ErrorCode::kFailedPrecondition) << p.error().ToString();
  EXPECT_NE(p.error().message().find("/proc/2/exe"), std::string::npos);
}

// A real cgroup v2 placement: mount the v2 hierarchy, make a unit-shaped cgroup, move a
// child into it.
class AttestCgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (::mount("none", mnt_.path().c_str(), "cgroup2", 0, nullptr) != 0) {
      GTEST_SKIP() << "cannot mount cgroup2: " << std::strerror(errno);
    }
    mounted_ = true;
    slice_ = "sigil-attest-" + std::to_string(::getpid()) + ".slice";
    ASSERT_EQ(::mkdir((mnt_.path() + "/" + slice_).c_str(), 0755), 0);
  }
  void TearDown() override {
    child_.reset();  // a reaped process leaves its cgroup, which can then be removed
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) ::rmdir(it->c_str());
    if (mounted_) {
      ::rmdir((mnt_.path() + "/" + slice_).c_str());
      ::umount2(mnt_.path().c_str(), MNT_DETACH);
    }
  }
  // Makes SLICE/leaf and moves a new sleep child into it.
  void SpawnInto(const std::string& leaf) {
    std::string dir = mnt_.path() + "/" + slice_ + "/" + leaf;
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << dir;
    made_.push_back(dir);
    child_.emplace(SpawnOrDie(Sleep()));
    std::ofstream procs(dir + "/cgroup.procs");
    procs << child_->pid() << std::flush;
    ASSERT_TRUE(procs.good());
  }
  TempDir mnt_;
  bool mounted_ = false;
  std::string slice_;
  std::vector<std::string> made_;
  std::optional<Child> child_;
};

TEST_F(AttestCgroupTest, ServiceCgroup) {
  SpawnInto("web.service");
  Attestor attestor;
  auto p = attestor.Attest(child_->pid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  std::string want = "/" + slice_ + "/web.service";
  EXPECT_EQ(p->cgroup, want);
  EXPECT_EQ(p->systemd_unit, "web.service");
  EXPECT_EQ(p->container_id, "");
  EXPECT_TRUE(Has(p->Selectors(), "cgroup:" + want));
}

TEST_F(AttestCgroupTest, CgroupLiterallyNamedDeletedIsNotReported) {
  SpawnInto("x (deleted)");
  Attestor attestor;
  auto p = attestor.Attest(child_->pid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->cgroup, "");
  EXPECT_FALSE(HasPrefix(p->Selectors(), "cgroup:"));
}

}  // namespace
}  // namespace sigil::agent::attest
