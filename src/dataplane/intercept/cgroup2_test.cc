// Tests for the cgroup v2 helpers: mountinfo parsing (pure) and, as root, the managed tree.
#include "dataplane/intercept/cgroup2.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace sigil::dataplane {
namespace {

TEST(ParseCgroup2Mount, FindsCgroup2AmongOtherMounts) {
  const std::string info =
      "22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
      "30 26 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
      "31 30 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory\n"
      "41 30 0:38 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw\n";
  EXPECT_EQ(ParseCgroup2Mount(info), "/sys/fs/cgroup/unified");
}

TEST(ParseCgroup2Mount, HandlesNoOptionalFieldsAndEscapes) {
  const std::string info = "50 1 0:40 / /run/my\\040cg rw,relatime - cgroup2 none rw\n";
  EXPECT_EQ(ParseCgroup2Mount(info), "/run/my cg");
}

TEST(ParseCgroup2Mount, HandlesSeveralOptionalFields) {
  const std::string info =
      "50 1 0:40 / /cg rw shared:1 master:2 propagate_from:3 - cgroup2 cgroup2 rw";
  EXPECT_EQ(ParseCgroup2Mount(info), "/cg");
}

TEST(ParseCgroup2Mount, IgnoresCgroupV1AndGarbage) {
  EXPECT_EQ(ParseCgroup2Mount(""), std::nullopt);
  EXPECT_EQ(ParseCgroup2Mount("31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            std::nullopt);
  EXPECT_EQ(ParseCgroup2Mount("garbage\n- cgroup2\n1 2 3 4 5 6 -\n\n"), std::nullopt);
  // "cgroup2" as a mount point or source is not the filesystem type.
  EXPECT_EQ(ParseCgroup2Mount("1 2 0:1 / /cgroup2 rw - tmpfs cgroup2 rw\n"), std::nullopt);
}

class Cgroup2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::string> root = FindOrMountCgroup2("/run/sigil/cgroup2");
    ASSERT_TRUE(root.ok()) << root.error().ToString();
    root_ = *root;
  }
  std::string root_;
};

TEST_F(Cgroup2Test, RejectsBadNames) {
  for (const std::string& name :
       std::vector<std::string>{"", ".", "..", "a/b", "a b", std::string(200, 'x')}) {
    Result<std::string> dir = EnsureManagedTree(root_, name);
    ASSERT_FALSE(dir.ok()) << name;
    EXPECT_EQ(dir.error().code(), ErrorCode::kInvalidArgument);
  }
}

TEST_F(Cgroup2Test, CreateMoveIdRemove) {
  const std::string name = "cgtest-" + std::to_string(getpid());
  Result<std::string> dir = EnsureManagedTree(root_, name);
  ASSERT_TRUE(dir.ok()) << dir.error().ToString();
  EXPECT_EQ(*dir, root_ + "/sigil/" + name);
  // Idempotent.
  Result<std::string> again = EnsureManagedTree(root_, name);
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  Result<uint64_t> id = CgroupId(*dir);
  ASSERT_TRUE(id.ok()) << id.error().ToString();
  EXPECT_NE(*id, 0u);

  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    pause();
    _exit(0);
  }
  Result<void> moved = MoveProcess(*dir, pid);
  EXPECT_TRUE(moved.ok()) << moved.error().ToString();
  // While the process is inside, removal fails with a clear message.
  Result<void> busy = RemoveCgroup(*dir);
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(busy.error().message().find(*dir), std::string::npos) << busy.error().message();
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);

  Result<void> removed = RemoveCgroup(*dir);
  EXPECT_TRUE(removed.ok()) << removed.error().ToString();
  Result<void> gone = RemoveCgroup(*dir);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
  Result<void> no_dir = MoveProcess(*dir, getpid());
  ASSERT_FALSE(no_dir.ok());
  EXPECT_EQ(no_dir.error().code(), ErrorCode::kNotFound);
}

}  // namespace
}  // namespace sigil::dataplane
