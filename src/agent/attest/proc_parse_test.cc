#include "agent/attest/proc_parse.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "agent/attest/proc_reader.h"

namespace sigil::agent::attest {
namespace {

constexpr std::string_view kStatus =
    "Name:\tsleep\n"
    "Umask:\t0022\n"
    "State:\tS (sleeping)\n"
    "Tgid:\t4242\n"
    "Ngid:\t0\n"
    "Pid:\t4242\n"
    "PPid:\t1\n"
    "TracerPid:\t0\n"
    "Uid:\t1000\t1001\t1002\t1003\n"
    "Gid:\t2000\t2001\t2002\t2003\n"
    "FDSize:\t64\n"
    "Groups:\t4 24 27 \n"
    "NStgid:\t4242\n"
    "VmPeak:\t    8192 kB\n";

TEST(ProcStatusTest, ParsesAllFields) {
  auto st = ParseProcStatus(kStatus);
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_EQ(st->name, "sleep");
  EXPECT_EQ(st->tgid, 4242);
  EXPECT_EQ(st->pid, 4242);
  EXPECT_EQ(st->ppid, 1);
  EXPECT_EQ(st->uids, (std::array<uint32_t, 4>{1000, 1001, 1002, 1003}));
  EXPECT_EQ(st->gids, (std::array<uint32_t, 4>{2000, 2001, 2002, 2003}));
  EXPECT_EQ(st->uids[kEffectiveId], 1001U);
  EXPECT_EQ(st->uids[kRealId], 1000U);
  EXPECT_EQ(st->groups, (std::vector<uint32_t>{4, 24, 27}));
}

TEST(ProcStatusTest, KeepsEscapedNameAndLeadingSpaces) {
  std::string text(kStatus);
  text.replace(0, text.find('\n'), "Name:\t  evil\\nUid:\\t0");
  auto st = ParseProcStatus(text);
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_EQ(st->name, "  evil\\nUid:\\t0");
  EXPECT_EQ(st->uids[kEffectiveId], 1001U);
}

TEST(ProcStatusTest, EmptyGroupsAndNoTrailingNewline) {
  auto st = ParseProcStatus(
      "Name:\tx\nTgid:\t1\nPid:\t1\nPPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t");
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_TRUE(st->groups.empty());
  EXPECT_EQ(st->ppid, 0);
}

TEST(ProcStatusTest, RealSelf) {
  auto text = ReadFileAt(AT_FDCWD, "/proc/self/status", kMaxProcFileBytes, "status");
  ASSERT_TRUE(text.ok());
  auto st = ParseProcStatus(*text);
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_EQ(st->pid, getpid());
  EXPECT_EQ(st->tgid, getpid());
  EXPECT_EQ(st->ppid, getppid());
  EXPECT_EQ(st->uids[kEffectiveId], geteuid());
  EXPECT_EQ(st->gids[kEffectiveId], getegid());
  EXPECT_EQ(st->uids[kRealId], getuid());
}

struct BadStatus {
  const char* name;
  std::string_view from;
  std::string_view to;
  std::string_view message;
};

class ProcStatusRejects : public ::testing::TestWithParam<BadStatus> {};

TEST_P(ProcStatusRejects, Malformed) {
  std::string text(kStatus);
  const auto& p = GetParam();
  size_t at = text.find(p.from);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, p.from.size(), p.to);
  auto st = ParseProcStatus(text);
  ASSERT_FALSE(st.ok()) << p.name;
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message().find(p.message), std::string::npos) << st.error().message();
}

INSTANTIATE_TEST_SUITE_P(
    StatusTable, ProcStatusRejects,
    ::testing::Values(
        BadStatus{"missing_uid", "Uid:\t1000\t1001\t1002\t1003\n", "", "missing \"Uid:\""},
        BadStatus{"missing_ppid", "PPid:\t1\n", "", "missing \"PPid:\""},
        BadStatus{"three_uids", "Uid:\t1000\t1001\t1002\t1003", "Uid:\t1000\t1001\t1002",
                  "expected 4 ids"},
        BadStatus{"five_gids", "Gid:\t2000\t2001\t2002\t2003", "Gid:\t1\t2\t3\t4\t5",
                  "expected 4 ids"},
        BadStatus{"negative_uid", "Uid:\t1000", "Uid:\t-1", "not a valid id"},
        BadStatus{"uid_overflow", "Uid:\t1000", "Uid:\t4294967296", "not a valid id"},
        BadStatus{"leading_zero", "Uid:\t1000", "Uid:\t01000", "not a valid id"},
        BadStatus{"hex_pid", "Pid:\t4242", "Pid:\t0x10", "not a valid pid"},
        BadStatus{"zero_pid", "Pid:\t4242", "Pid:\t0", "not a valid pid"},
        BadStatus{"pid_overflow", "Tgid:\t4242", "Tgid:\t2147483648", "not a valid pid"},
        BadStatus{"duplicate_uid", "FDSize:\t64", "Uid:\t0\t0\t0\t0", "appears twice"},
        BadStatus{"bad_group", "Groups:\t4 24 27 ", "Groups:\t4 x", "not a valid gid"},
        BadStatus{"no_colon", "FDSize:\t64", "garbage line", "no ':'"}),
    [](const auto& test) { return std::string(test.param.name); });

TEST(PidfdFdinfoTest, Parses) {
  auto pid = ParsePidfdFdinfo(
      "pos:\t0\nflags:\t02000002\nmnt_id:\t4\nino:\t9\nPid:\t16930\nNSpid:\t16930\n");
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(*pid, 16930);
  auto reaped = ParsePidfdFdinfo("pos:\t0\nPid:\t-1\nNSpid:\t-1\n");
  ASSERT_TRUE(reaped.ok());
  EXPECT_EQ(*reaped, -1);
  auto hidden = ParsePidfdFdinfo("Pid:\t0\n");
  ASSERT_TRUE(hidden.ok());
  EXPECT_EQ(*hidden, 0);
}

TEST(PidfdFdinfoTest, Rejects) {
  EXPECT_FALSE(ParsePidfdFdinfo("pos:\t0\nflags:\t02\nmnt_id:\t24\n").ok());  // a regular file
  EXPECT_FALSE(ParsePidfdFdinfo("NSpid:\t5\n").ok());  // "NSpid" is not "Pid"
  EXPECT_FALSE(ParsePidfdFdinfo("Pid:\t-2\n").ok());
  EXPECT_FALSE(ParsePidfdFdinfo("Pid:\tabc\n").ok());
  EXPECT_FALSE(ParsePidfdFdinfo("").ok());
}

}  // namespace
}  // namespace sigil::agent::attest
