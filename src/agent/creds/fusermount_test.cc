// MountWithFusermount against the real fusermount3 (package fuse3): the mount appears, the
// device comes back, and closing the keepalive socket unmounts it; a refusal names
// fusermount3's exit status. Needs root and /dev/fuse, like the agent (fails loudly without).
#include "agent/creds/fusermount.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>

#include "agent/creds/mount_util.h"

namespace sigil::agent::creds {
namespace {

constexpr const char* kOptions =
    "allow_other,auto_unmount,ro,nosuid,nodev,noexec,fsname=sigil-creds,subtype=sigil-creds";

std::string TempDir() {
  std::string tmpl = ::testing::TempDir() + "sigil-fusermount-XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

TEST(Fusermount, MountsHandsBackTheDeviceAndUnmountsWhenReleased) {
  ASSERT_EQ(::geteuid(), 0u) << "needs root (mounts a FUSE file system)";
  const std::string dir = TempDir();
  auto m = MountWithFusermount(dir, kOptions, std::chrono::seconds(10));
  ASSERT_TRUE(m.ok()) << m.error().ToString();
  EXPECT_TRUE(m->device.valid());
  EXPECT_GT(m->helper, 0);
  auto mounted = IsCredsMount(dir);
  ASSERT_TRUE(mounted.ok()) << mounted.error().ToString();
  EXPECT_TRUE(*mounted);
  // Nobody serves the device: close it first so nothing can block on the mount, then let
  // fusermount3 unmount (auto_unmount) and exit.
  m->device.Reset();
  EXPECT_TRUE(ReleaseFusermount(*m, std::chrono::seconds(5)));
  mounted = IsCredsMount(dir);
  ASSERT_TRUE(mounted.ok());
  EXPECT_FALSE(*mounted);
  if (*mounted) ::umount2(dir.c_str(), MNT_DETACH);
  std::filesystem::remove(dir);
}

TEST(Fusermount, ARefusalNamesTheHelpersExitStatus) {
  ASSERT_EQ(::geteuid(), 0u) << "needs root (mounts a FUSE file system)";
  auto m =
      MountWithFusermount("/nonexistent/sigil-fusermount-test", kOptions, std::chrono::seconds(10));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code(), ErrorCode::kUnavailable) << m.error().ToString();
  EXPECT_NE(m.error().message().find("fusermount3 exit status"), std::string::npos)
      << m.error().message();
}

}  // namespace
}  // namespace sigil::agent::creds
