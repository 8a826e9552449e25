// Mount-table parsing, and detaching a real dead FUSE mount (needs root and /dev/fuse, like
// the agent itself; fails loudly without them).
#include "agent/creds/mount_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/owned_fd.h"

namespace sigil::agent::creds {
namespace {

TEST(ParseMountInfo, FieldsAndEscapes) {
  const char* text =
      "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
      "98 25 0:52 / /run/sigil/creds rw,nosuid,nodev,noexec,relatime shared:50 - "
      "fuse.sigil-creds sigil-creds rw,user_id=0,group_id=0,allow_other\n"
      "99 25 0:53 / /tmp/with\\040space rw - tmpfs tmp\\134fs rw\n"
      "garbage line\n"
      "100 25 0:54 / /no/optional rw - ext4 /dev/sda1 rw\n";
  auto e = ParseMountInfo(text);
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].mount_point, "/proc");
  EXPECT_EQ(e[0].fs_type, "proc");
  EXPECT_EQ(e[1].mount_point, "/run/sigil/creds");
  EXPECT_EQ(e[1].fs_type, kCredsFsType);
  EXPECT_EQ(e[1].source, "sigil-creds");
  EXPECT_EQ(e[2].mount_point, "/tmp/with space");
  EXPECT_EQ(e[2].source, "tmp\\fs");
  EXPECT_EQ(e[3].fs_type, "ext4");
}

// A FUSE mount whose server closed /dev/fuse before answering INIT is dead: every access
// fails with ENOTCONN (what a SIGKILLed agent leaves behind).
TEST(DetachStaleMounts, DetachesADeadFuseMount) {
  ASSERT_EQ(::geteuid(), 0u) << "this test mounts FUSE file systems: run it as root";
  char tmpl[] = "/tmp/sigil-creds-mount-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
  const std::string dir = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      for (int i = 0; i < 4 && ::umount2(dir.c_str(), MNT_DETACH) == 0; ++i) {
      }
      ::rmdir(dir.c_str());
    }
  } cleanup{dir};

  EXPECT_EQ(DetachStaleMounts(dir).value(), 0);
  EXPECT_FALSE(IsCredsMount(dir).value());
  for (int i = 0; i < 2; ++i) {  // two stacked dead mounts
    OwnedFd fuse(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(fuse.valid()) << "/dev/fuse: " << std::strerror(errno);
    const std::string opts =
        "fd=" + std::to_string(fuse.get()) + ",rootmode=40000,user_id=0,group_id=0";
    ASSERT_EQ(
        ::mount("sigil-creds", dir.c_str(), "fuse.sigil-creds", MS_NOSUID | MS_NODEV, opts.c_str()),
        0)
        << std::strerror(errno);
  }  // fds closed: connections aborted
  struct stat st {};
  ASSERT_NE(::stat(dir.c_str(), &st), 0);
  ASSERT_EQ(errno, ENOTCONN);
  auto detached = DetachStaleMounts(dir);
  ASSERT_TRUE(detached.ok()) << detached.error().ToString();
  EXPECT_EQ(*detached, 2);
  EXPECT_EQ(::stat(dir.c_str(), &st), 0) << std::strerror(errno);
  EXPECT_FALSE(IsCredsMount(dir).value());
}

}  // namespace
}  // namespace sigil::agent::creds
