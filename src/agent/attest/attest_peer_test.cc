// AttestPidfd (a caller's pidfd) and AttestPeer (a connected Unix socket).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include "agent/attest/attest.h"
#include "agent/attest/proc_reader.h"
#include "agent/attest/test_process.h"

namespace sigil::agent::attest {
namespace {

using testing::Child;
using testing::kSleep;
using testing::RealPath;
using testing::SpawnSpec;
using testing::TempDir;

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

TEST(AttestPidfdTest, CallerPidfd) {
  Child child = SpawnOrDie(Sleep());
  auto pidfd = OpenPidfd(child.pid());
  ASSERT_TRUE(pidfd.ok());
  Attestor attestor;
  auto p = attestor.AttestPidfd(child.pid(), pidfd->get());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->pidfd_source, PidfdSource::kCaller);
  EXPECT_EQ(p->exe_path, RealPath(kSleep));
  EXPECT_GE(::fcntl(pidfd->get(), F_GETFD), 0) << "borrowed pidfd must stay open";
}

TEST(AttestPidfdTest, PidfdOfAnotherProcessIsRejected) {
  Child a = SpawnOrDie(Sleep());
  Child b = SpawnOrDie(Sleep());
  auto pidfd = OpenPidfd(a.pid());
  ASSERT_TRUE(pidfd.ok());
  Attestor attestor;
  auto p = attestor.AttestPidfd(b.pid(), pidfd->get());
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(p.error().message().find(std::to_string(a.pid())), std::string::npos);
}

TEST(AttestPidfdTest, NotAPidfd) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  Attestor attestor;
  auto res = attestor.AttestPidfd(::getpid(), r.get());
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), ErrorCode::kInvalidArgument) << res.error().ToString();
}

TEST(AttestPidfdTest, ReapedPidfd) {
  std::optional<Child> child = SpawnOrDie(Sleep());
  pid_t pid = child->pid();
  auto pidfd = OpenPidfd(pid);
  ASSERT_TRUE(pidfd.ok());
  child.reset();  // killed and reaped
  Attestor attestor;
  auto p = attestor.AttestPidfd(pid, pidfd->get());
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code(), ErrorCode::kNotFound);
}

// A server socket in a temp dir; the child connects before exec'ing sleep.
class AttestPeerSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.path() + "/agent.sock";
    listener_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(listener_.valid());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(listener_.get(), 4), 0);
  }
  Result<AttestedProcess> AttestConnectedChild(Attestor::Options options, pid_t* pid) {
    SpawnSpec spec = Sleep();
    spec.connect_unix = path_;
    child_.emplace(SpawnOrDie(spec));
    *pid = child_->pid();
    UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    EXPECT_TRUE(conn.valid());
    Attestor attestor(std::move(options));
    return attestor.AttestPeer(conn.get());
  }
  TempDir dir_;
  std::string path_;
  UniqueFd listener_;
  std::optional<Child> child_;
};

TEST_F(AttestPeerSocketTest, SoPeerPidfd) {
  pid_t pid = 0;
  auto p = AttestConnectedChild({}, &pid);
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->pid, pid);
  EXPECT_EQ(p->pidfd_source, PidfdSource::kPeerPidfd);
  EXPECT_EQ(p->exe_path, RealPath(kSleep));
}

TEST_F(AttestPeerSocketTest, FallsBackToPeerCredWithoutSoPeerPidfd) {
  Attestor::Options options;
  options.TEST_peer_pidfd_unsupported = true;
  pid_t pid = 0;
  auto p = AttestConnectedChild(std::move(options), &pid);
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->pid, pid);
  EXPECT_EQ(p->pidfd_source, PidfdSource::kPeerCredFallback);
  EXPECT_EQ(PidfdSourceName(p->pidfd_source), "SO_PEERCRED+pidfd_open");
  EXPECT_EQ(p->exe_path, RealPath(kSleep));
}

TEST_F(AttestPeerSocketTest, PeerThatExitedIsNotFound) {
  SpawnSpec spec = Sleep();
  spec.connect_unix = path_;
  child_.emplace(SpawnOrDie(spec));
  UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn.valid());
  child_->KillAndReap();
  Attestor attestor;
  auto p = attestor.AttestPeer(conn.get());
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code(), ErrorCode::kNotFound) << p.error().ToString();
}

TEST(AttestPeerTest, NotASocket) {
  Attestor attestor;
  UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  auto p = attestor.AttestPeer(fd.get());
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code(), ErrorCode::kInvalidArgument) << p.error().ToString();
}

TEST(AttestPeerTest, SocketPairPeerIsOurselves) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  Attestor attestor;
  auto p = attestor.AttestPeer(a.get());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  EXPECT_EQ(p->pid, ::getpid());
}

}  // namespace
}  // namespace sigil::agent::attest
