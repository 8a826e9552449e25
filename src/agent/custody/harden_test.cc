// HardenProcess / ReadCustodyStatus against the real kernel and OpenSSL. Every hardening runs
// in a forked child (testing/child.h): the gtest runner itself is never hardened.
#include "agent/custody/harden.h"

#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>
#include <cerrno>
#include <iostream>
#include <string>

#include "agent/custody/proc_io.h"
#include "agent/custody/status.h"
#include "agent/custody/testing/child.h"

namespace sigil::agent::custody {
namespace {

using testing::Child;
using testing::ChildChecks;
using testing::RunInChild;

constexpr uid_t kNobody = 65534;

std::string ReadText(const std::string& path) {
  auto r = internal::ReadProcFile(path.c_str());
  return r.ok() ? *r : "<" + r.error().ToString() + ">";
}

uid_t OwnerOf(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_uid : static_cast<uid_t>(-1);
}

// Becomes `uid` like an agent started as that user: the credential change made the process
// non-dumpable, which exec(2) of a non-setuid binary would have undone.
bool DropTo(uid_t uid) {
  return ::setresgid(uid, uid, uid) == 0 && ::setresuid(uid, uid, uid) == 0 &&
         ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0;
}

// Bit `cap` of CapEff in /proc/self/status.
bool HasCapability(int cap) {
  std::string status = ReadText("/proc/self/status");
  size_t at = status.find("CapEff:\t");
  if (at == std::string::npos) return false;
  uint64_t bits = std::stoull(status.substr(at + 8, 16), nullptr, 16);
  return ((bits >> cap) & 1) != 0;
}
constexpr int kCapIpcLock = 14;
constexpr int kCapSysResource = 24;

TEST(ReadCustodyStatus, UnhardenedProcess) {
  // The gtest runner: dumpable, default filter, no secure heap.
  auto s = ReadCustodyStatus();
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_TRUE(s->dumpable);
  EXPECT_FALSE(s->secure_heap_enabled);
  EXPECT_EQ(s->secure_heap_size, 0u);
  EXPECT_EQ(ReadText("/proc/self/coredump_filter"), [&] {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "%08x\n", s->coredump_filter);
    return std::string(buf);
  }());
}

TEST(HardenProcess, RejectsInvalidOptionsBeforeTouchingTheProcess) {
  HardenOptions o;
  o.coredump_filter = 0x200;
  EXPECT_EQ(HardenProcess(o).error().code(), ErrorCode::kInvalidArgument);
  o = {};
  o.secure_heap_size = 3 << 20;
  EXPECT_EQ(HardenProcess(o).error().code(), ErrorCode::kInvalidArgument);
  o = {};
  o.secure_heap_min_size = 24;
  EXPECT_EQ(HardenProcess(o).error().code(), ErrorCode::kInvalidArgument);
  o = {};
  o.secure_heap_min_size = o.secure_heap_size;
  EXPECT_EQ(HardenProcess(o).error().code(), ErrorCode::kInvalidArgument);
  auto s = ReadCustodyStatus();
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->dumpable);
  EXPECT_FALSE(s->secure_heap_enabled);
}

TEST(HardenProcess, SetsAndReadsBackEveryControl) {
  EXPECT_EQ(RunInChild([](ChildChecks& c) {
              auto before = ReadCustodyStatus();
              if (!CHILD_CHECK(c, before.ok())) return;
              CHILD_CHECK(c, before->dumpable);
              CHILD_CHECK(c, !before->secure_heap_enabled);

              auto r = HardenProcess();
              if (!CHILD_CHECK_MSG(c, r.ok(), r.ok() ? "" : r.error().ToString())) return;

              // Straight from the kernel, not through ReadCustodyStatus.
              CHILD_CHECK(c, ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
              CHILD_CHECK_MSG(c, ReadText("/proc/self/coredump_filter") == "00000010\n",
                              ReadText("/proc/self/coredump_filter"));
              rlimit core{};
              CHILD_CHECK(c, ::getrlimit(RLIMIT_CORE, &core) == 0);
              CHILD_CHECK(c, core.rlim_cur == 0 && core.rlim_max == 0);
              CHILD_CHECK(c, CRYPTO_secure_malloc_initialized() == 1);
              // /proc/self/status: the whole arena is accounted as locked (VmLck counts the
              // VM_LOCKED range, resident or not), no core dump in progress.
              auto vmlck = internal::ReadStatusKb("VmLck");
              CHILD_CHECK(c, vmlck.ok());
              CHILD_CHECK_MSG(c, vmlck.ok() && *vmlck >= kDefaultSecureHeapSize / 1024,
                              std::to_string(vmlck.ok() ? *vmlck : 0) + " kB");
              std::string status = ReadText("/proc/self/status");
              CHILD_CHECK_MSG(c, status.find("CoreDumping:\t0") != std::string::npos, status);

              auto s = ReadCustodyStatus();
              if (!CHILD_CHECK(c, s.ok())) return;
              CHILD_CHECK(c, !s->dumpable);
              CHILD_CHECK(c, s->coredump_filter == kCoredumpFilterSafe);
              CHILD_CHECK(c, s->core_limit == 0);
              CHILD_CHECK(c, s->secure_heap_enabled);
              CHILD_CHECK(c, s->secure_heap_size == kDefaultSecureHeapSize);
              CHILD_CHECK(c, s->secure_heap_dontdump);
              CHILD_CHECK(c, s->secure_heap_locked);
              // The self-test key is gone; OpenSSL's private DRBG state (512 bytes in 3.0) stays.
              CHILD_CHECK_MSG(c, s->secure_heap_used > 0 && s->secure_heap_used <= 1024,
                              std::to_string(s->secure_heap_used));

              // Idempotent with the same options; a different arena is refused.
              auto again = HardenProcess();
              CHILD_CHECK_MSG(c, again.ok(), again.ok() ? "" : again.error().ToString());
              HardenOptions bigger;
              bigger.secure_heap_size = kDefaultSecureHeapSize * 2;
              auto other = HardenProcess(bigger);
              CHILD_CHECK(c, !other.ok() && other.error().code() == ErrorCode::kFailedPrecondition);
            }),
            "");
}

TEST(HardenProcess, KeepCoreLimitAndCustomFilter) {
  EXPECT_EQ(RunInChild([](ChildChecks& c) {
              rlimit before{};
              ::getrlimit(RLIMIT_CORE, &before);
              HardenOptions o;
              o.keep_core_limit = true;
              o.coredump_filter = kDumpElfHeaders | kDumpFilePrivate;
              o.secure_heap_size = 64 * 1024;
              o.secure_heap_min_size = 16;
              auto r = HardenProcess(o);
              if (!CHILD_CHECK_MSG(c, r.ok(), r.ok() ? "" : r.error().ToString())) return;
              auto s = ReadCustodyStatus();
              if (!CHILD_CHECK(c, s.ok())) return;
              CHILD_CHECK(c, s->coredump_filter == 0x14);
              CHILD_CHECK(c, s->core_limit == before.rlim_cur);
              CHILD_CHECK(c, s->secure_heap_size == 64 * 1024);
            }),
            "");
}

// Hardened as an unprivileged uid: /proc/<pid> becomes root-owned, a process of the same uid
// can no longer read its memory or ptrace it, and the parent (root) reads the filter.
TEST(HardenProcess, SameUidPeerLosesAccessAndParentSeesFilter) {
  Child target = Child::Start([](ChildChecks& c, Child& self) {
    if (!CHILD_CHECK(c, DropTo(kNobody))) return;
    CHILD_CHECK(c, OwnerOf("/proc/self/status") == kNobody);
    auto r = HardenProcess();
    CHILD_CHECK_MSG(c, r.ok(), r.ok() ? "" : r.error().ToString());
    CHILD_CHECK(c, OwnerOf("/proc/self/status") == 0);
    // Still readable by the process itself.
    auto s = ReadCustodyStatus();
    CHILD_CHECK_MSG(c, s.ok(), s.ok() ? "" : s.error().ToString());
    self.Notify();
    self.WaitReleased();
  });
  ASSERT_TRUE(target.WaitNotified());
  const std::string proc = "/proc/" + std::to_string(target.pid());

  EXPECT_EQ(ReadText(proc + "/coredump_filter"), "00000010\n");
  EXPECT_EQ(OwnerOf(proc + "/status"), 0u);
  EXPECT_EQ(OwnerOf(proc + "/mem"), 0u);

  pid_t victim = target.pid();
  EXPECT_EQ(RunInChild([victim](ChildChecks& c) {
              if (!CHILD_CHECK(c, DropTo(kNobody))) return;
              std::string mem = "/proc/" + std::to_string(victim) + "/mem";
              int fd = ::open(mem.c_str(), O_RDONLY | O_CLOEXEC);
              CHILD_CHECK_MSG(c, fd < 0 && errno == EACCES, "open " + mem);
              if (fd >= 0) ::close(fd);
              errno = 0;
              long rc = ::ptrace(PTRACE_ATTACH, victim, nullptr, nullptr);
              CHILD_CHECK_MSG(c, rc == -1 && errno == EPERM, "PTRACE_ATTACH");
            }),
            "");
  target.Release();
  EXPECT_EQ(target.Wait(), "");
}

// Control for the test above: without hardening the same-uid peer can read the memory, so the
// denial is HardenProcess's doing (no Yama or other LSM policy here).
TEST(HardenProcess, ControlSameUidPeerCanReadAnUnhardenedProcess) {
  Child target = Child::Start([](ChildChecks& c, Child& self) {
    CHILD_CHECK(c, DropTo(kNobody));
    self.Notify();
    self.WaitReleased();
  });
  ASSERT_TRUE(target.WaitNotified());
  pid_t victim = target.pid();
  EXPECT_EQ(RunInChild([victim](ChildChecks& c) {
              if (!CHILD_CHECK(c, DropTo(kNobody))) return;
              std::string mem = "/proc/" + std::to_string(victim) + "/mem";
              int fd = ::open(mem.c_str(), O_RDONLY | O_CLOEXEC);
              CHILD_CHECK_MSG(c, fd >= 0, "open " + mem);
              if (fd >= 0) ::close(fd);
            }),
            "");
  target.Release();
  EXPECT_EQ(target.Wait(), "");
}

TEST(HardenProcess, RaisesSoftMemlockLimitUpToTheHardOne) {
  EXPECT_EQ(RunInChild([](ChildChecks& c) {
              rlimit rl{64 * 1024, 8 << 20};
              if (!CHILD_CHECK(c, ::setrlimit(RLIMIT_MEMLOCK, &rl) == 0)) return;
              if (!CHILD_CHECK(c, DropTo(kNobody))) return;
              auto r = HardenProcess();
              CHILD_CHECK_MSG(c, r.ok(), r.ok() ? "" : r.error().ToString());
              CHILD_CHECK(c, ::getrlimit(RLIMIT_MEMLOCK, &rl) == 0);
              CHILD_CHECK_MSG(c, rl.rlim_cur >= kDefaultSecureHeapSize,
                              std::to_string(rl.rlim_cur));
            }),
            "");
}

TEST(HardenProcess, MemlockLimitTooLowIsAClearErrorAndLeavesNoHeap) {
  EXPECT_EQ(
      RunInChild([](ChildChecks& c) {
        rlimit rl{64 * 1024, 64 * 1024};
        if (!CHILD_CHECK(c, ::setrlimit(RLIMIT_MEMLOCK, &rl) == 0)) return;
        if (!CHILD_CHECK(c, DropTo(kNobody))) return;  // no CAP_IPC_LOCK/SYS_RESOURCE
        auto r = HardenProcess();
        if (!CHILD_CHECK(c, !r.ok())) return;
        CHILD_CHECK_MSG(c, r.error().code() == ErrorCode::kResourceExhausted, r.error().ToString());
        CHILD_CHECK_MSG(c, r.error().message().find("RLIMIT_MEMLOCK is 65536") != std::string::npos,
                        r.error().message());
        CHILD_CHECK(c, CRYPTO_secure_malloc_initialized() == 0);
        // The earlier steps did happen (fail closed: still non-dumpable).
        CHILD_CHECK(c, ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
      }),
      "");
}

// Root with a low hard limit: CAP_SYS_RESOURCE raises it; without it (as in some containers)
// CAP_IPC_LOCK still lets the mlock succeed.
TEST(HardenProcess, RootWithLowMemlockLimit) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  bool sys_resource = HasCapability(kCapSysResource);
  bool ipc_lock = HasCapability(kCapIpcLock);
  std::cout << "[ info ] CAP_SYS_RESOURCE=" << sys_resource << " CAP_IPC_LOCK=" << ipc_lock << "\n";
  EXPECT_EQ(RunInChild([&](ChildChecks& c) {
              rlimit rl{64 * 1024, 64 * 1024};
              if (!CHILD_CHECK(c, ::setrlimit(RLIMIT_MEMLOCK, &rl) == 0)) return;
              auto r = HardenProcess();
              if (!sys_resource && !ipc_lock) {
                CHILD_CHECK(c, !r.ok() && r.error().code() == ErrorCode::kResourceExhausted);
                return;
              }
              CHILD_CHECK_MSG(c, r.ok(), r.ok() ? "" : r.error().ToString());
              CHILD_CHECK(c, ::getrlimit(RLIMIT_MEMLOCK, &rl) == 0);
              if (sys_resource) {
                CHILD_CHECK_MSG(c, rl.rlim_cur >= kDefaultSecureHeapSize,
                                std::to_string(rl.rlim_cur));
              } else {
                CHILD_CHECK_MSG(c, rl.rlim_cur == 64 * 1024, std::to_string(rl.rlim_cur));
              }
            }),
            "");
}

// A process made non-dumpable by a credential change (root -> nobody without exec) can still be
// hardened; the filter write needs a moment of dumpability.
TEST(HardenProcess, AfterPrivilegeDropWithoutExec) {
  EXPECT_EQ(RunInChild([](ChildChecks& c) {
              if (!CHILD_CHECK(c, ::setresgid(kNobody, kNobody, kNobody) == 0 &&
                                      ::setresuid(kNobody, kNobody, kNobody) == 0)) {
                return;
              }
              CHILD_CHECK(c, ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);  // the kernel did it
              auto r = HardenProcess();
              CHILD_CHECK_MSG(c, r.ok(), r.ok() ? "" : r.error().ToString());
              CHILD_CHECK(c, ReadText("/proc/self/coredump_filter") == "00000010\n");
              CHILD_CHECK(c, ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
            }),
            "");
}

// A tracer attached before hardening survives PR_SET_DUMPABLE 0: HardenProcess refuses.
TEST(HardenProcess, RefusesWhenTraced) {
  Child target = Child::Start([](ChildChecks& c, Child& self) {
    self.Notify();
    self.WaitReleased();  // the parent attaches meanwhile
    auto r = HardenProcess();
    CHILD_CHECK_MSG(c, !r.ok() && r.error().code() == ErrorCode::kFailedPrecondition,
                    r.ok() ? "succeeded" : r.error().ToString());
    self.Notify();
    self.WaitReleased();
  });
  ASSERT_TRUE(target.WaitNotified());
  ASSERT_EQ(::ptrace(PTRACE_SEIZE, target.pid(), nullptr, nullptr), 0) << errno;
  target.Release();
  ASSERT_TRUE(target.WaitNotified());
  target.Release();  // it exits still seized; Wait() reaps it (we are parent and tracer)
  EXPECT_EQ(target.Wait(), "");
}

}  // namespace
}  // namespace sigil::agent::custody
