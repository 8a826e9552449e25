// End-to-end tests of the nftables interception fallback: a real nftables table in a fresh
// network namespace, a real cgroup v2 directory, forked processes that connect from inside and
// outside it. Non-loopback destinations are addresses added to the namespace's `lo`
// (10.99.0.1, fd99::1): routed locally, but not 127.0.0.0/8, so the default loopback exclusion
// does not apply. Needs root, nf_tables with nat, and cgroup v2; anything missing FAILS.
#include "dataplane/intercept/nft_interceptor.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/intercept/cgroup2.h"
#include "dataplane/intercept/nft_run.h"
#include "dataplane/intercept/sock_diag.h"
#include "dataplane/intercept/socket_owner.h"
#include "dataplane/intercept/test_util.h"

namespace sigil::dataplane {
namespace {

using testing::AcceptWithin;
using testing::Bind;
using testing::Child;
using testing::FormatAddr;
using testing::LineChannel;
using testing::MakeAddr;
using testing::PeerOf;
using testing::ReadableWithin;

constexpr uint16_t kProxyPort = 15001;
constexpr uint16_t kServerPort = 8080;
constexpr int kTimeoutMs = 5000;
constexpr const char* kHost4 = "10.99.0.1";
constexpr const char* kHost6 = "fd99::1";
constexpr const char* kNft = "/usr/sbin/nft";

#define ASSERT_OK(expr)                                       \
  if (const auto& assert_ok_r_ = (expr); assert_ok_r_.ok()) { \
  } else                                                      \
    GTEST_FAIL() << assert_ok_r_.error().ToString()

void SleepMs(int ms) {
  timespec ts{.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  nanosleep(&ts, nullptr);
}

// Runs a tool (ip) in the test's network namespace; its exit status.
Result<int> RunTool(std::vector<std::string> argv) {
  SIGIL_ASSIGN_OR_RETURN(Child c, Child::Start([argv](LineChannel&) {
                           std::vector<char*> args;
                           for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
                           args.push_back(nullptr);
                           ::execv(args[0], args.data());
                           return 127;
                         }));
  return c.Wait(kTimeoutMs);
}

// A managed (or not) child: join `cgroup` (optionally a new sub-cgroup of it), maybe change
// user, connect, report getpeername() and the result, optionally fork a holder of the
// socket, then wait for "done".
struct ConnectSpec {
  std::string cgroup;  // empty: stay outside managed cgroups
  sockaddr_storage dst{};
  std::optional<uid_t> become;
  bool fork_after_connect = false;  // a second process then holds the socket too
};

int Fail(LineChannel& ch, const std::string& what) {
  (void)ch.WriteLine("err " + what + ": " + std::strerror(errno));
  return 1;
}

int RunConnectChild(LineChannel& ch, const ConnectSpec& s) {
  if (!s.cgroup.empty()) {
    if (Result<void> moved = MoveProcess(s.cgroup, 0); !moved.ok()) {
      (void)ch.WriteLine("err " + moved.error().ToString());
      return 1;
    }
  }
  if (s.become.has_value()) {
    if (setgid(*s.become) != 0) return Fail(ch, "setgid");
    if (setuid(*s.become) != 0) return Fail(ch, "setuid");
  }
  const int fd = socket(s.dst.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(ch, "socket");
  const socklen_t len = s.dst.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&s.dst), len) != 0) return Fail(ch, "connect");
  pid_t holder = -1;
  if (s.fork_after_connect) {
    holder = fork();
    if (holder == 0) {
      pause();  // keeps the inherited socket open until killed
      _exit(0);
    }
  }
  Result<sockaddr_storage> peer = PeerOf(fd);
  if (!peer.ok()) return Fail(ch, "getpeername");
  (void)ch.WriteLine("peer " + FormatAddr(*peer));
  Result<std::string> done = ch.ReadLine(3 * kTimeoutMs);
  if (holder > 0) {
    kill(holder, SIGKILL);
    waitpid(holder, nullptr, 0);
  }
  close(fd);
  return done.ok() && *done == "done" ? 0 : 2;
}

// Empty nftest-PID-N directories of test processes that died without their TearDown (a
// crash): removed so they do not pile up.
void RemoveStaleTestCgroups(const std::string& root) {
  DIR* d = opendir(root.c_str());
  if (d == nullptr) return;
  std::vector<std::string> stale;
  while (const dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (!name.starts_with("nftest-")) continue;
    const pid_t pid = static_cast<pid_t>(std::atoi(name.c_str() + 7));
    if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) stale.push_back(root + "/" + name);
  }
  closedir(d);
  for (const auto& dir : stale) {
    (void)RemoveCgroup(dir + "/sub");
    (void)RemoveCgroup(dir);
  }
}

class NftInterceptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(testing::EnterFreshNetns());
    Result<int> rc =
        RunTool({"/usr/sbin/ip", "addr", "add", std::string(kHost4) + "/32", "dev", "lo"});
    ASSERT_OK(rc);
    ASSERT_EQ(*rc, 0) << "ip addr add " << kHost4;
    rc = RunTool(
        {"/usr/sbin/ip", "-6", "addr", "add", std::string(kHost6) + "/128", "dev", "lo", "nodad"});
    ASSERT_OK(rc);
    ASSERT_EQ(*rc, 0) << "ip -6 addr add " << kHost6;
    Result<std::string> root = FindOrMountCgroup2("/run/sigil/cgroup2");
    ASSERT_OK(root);
    root_ = *root;
    RemoveStaleTestCgroups(root_);
    // A top-level directory of its own, not under <root>/sigil: an agent on this host that
    // manages <root>/sigil must not see these test processes.
    static int seq = 0;
    dir_ = root_ + "/nftest-" + std::to_string(getpid()) + "-" + std::to_string(++seq);
    ASSERT_EQ(mkdir(dir_.c_str(), 0755), 0) << dir_ << ": " << std::strerror(errno);
    Result<uint64_t> id = CgroupId(dir_);
    ASSERT_OK(id);
    cgroup_id_ = *id;
    Result<OwnedFd> proxy = Bind(AF_INET, SOCK_STREAM, "127.0.0.1", kProxyPort);
    ASSERT_OK(proxy);
    proxy_ = std::move(*proxy);
    Result<OwnedFd> server = Bind(AF_INET, SOCK_STREAM, kHost4, kServerPort);
    ASSERT_OK(server);
    server_ = std::move(*server);
  }

  void TearDown() override {
    children_.clear();  // kill + reap before the cgroups can be removed
    interceptor_.reset();
    if (dir_.empty()) return;
    for (const std::string& d : {dir_ + "/sub", dir_}) {
      if (access(d.c_str(), F_OK) != 0) continue;
      Result<void> removed = RemoveCgroup(d);
      for (int i = 0; i < 100 && !removed.ok(); ++i) {  // a just-reaped task may linger
        SleepMs(20);
        removed = RemoveCgroup(d);
      }
      EXPECT_TRUE(removed.ok()) << removed.error().ToString();
    }
  }

  static InterceptConfig BaseConfig() {
    InterceptConfig c;
    c.redirect_v4.sin_family = AF_INET;
    c.redirect_v4.sin_port = htons(kProxyPort);
    c.redirect_v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return c;
  }

  void LoadAndAttach(const InterceptConfig& config) {
    Result<std::unique_ptr<NftInterceptor>> loaded = NftInterceptor::Load(config);
    ASSERT_OK(loaded);
    interceptor_ = std::move(*loaded);
    ASSERT_OK(interceptor_->Attach(dir_));
  }

  Child& Start(const ConnectSpec& spec) {
    Result<Child> c = Child::Start([spec](LineChannel& ch) { return RunConnectChild(ch, spec); });
    if (!c.ok()) ADD_FAILURE() << c.error().ToString();
    children_.push_back(std::move(*c));
    return children_.back();
  }

  ConnectSpec Managed(const sockaddr_storage& dst) const {
    return ConnectSpec{.cgroup = dir_, .dst = dst, .become = std::nullopt};
  }

  static std::string ReadLine(Child& c) {
    Result<std::string> line = c.channel().ReadLine(kTimeoutMs);
    if (!line.ok()) return "<" + line.error().ToString() + ">";
    return *line;
  }

  static void Finish(Child& c) {
    ASSERT_OK(c.channel().WriteLine("done"));
    Result<int> rc = c.Wait(kTimeoutMs);
    ASSERT_OK(rc);
    EXPECT_EQ(*rc, 0);
  }

  // Accepts on the proxy listener and attributes the connection.
  Result<OriginalConnection> AcceptAndLookup() {
    SIGIL_ASSIGN_OR_RETURN(OwnedFd conn, AcceptWithin(proxy_.get(), kTimeoutMs));
    SIGIL_ASSIGN_OR_RETURN(const sockaddr_storage peer, PeerOf(conn.get()));
    accepted_.push_back(std::move(conn));
    return interceptor_->Lookup(accepted_.back().get(), peer);
  }

  std::string root_;
  std::string dir_;
  uint64_t cgroup_id_ = 0;
  OwnedFd proxy_;
  OwnedFd server_;
  std::vector<OwnedFd> accepted_;
  std::unique_ptr<NftInterceptor> interceptor_;
  std::deque<Child> children_;
};

TEST_F(NftInterceptTest, RedirectsManagedConnectAndAttributesIt) {
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  Child& child = Start(Managed(MakeAddr(AF_INET, kHost4, kServerPort)));
  // NAT is invisible to the client socket: it sees what it dialled.
  EXPECT_EQ(ReadLine(child), "peer 10.99.0.1:8080");
  Result<OriginalConnection> orig = AcceptAndLookup();
  ASSERT_OK(orig);
  EXPECT_FALSE(ReadableWithin(server_.get(), 0)) << "the real server was reached directly";
  EXPECT_EQ(FormatAddr(orig->original_dst), "10.99.0.1:8080");
  EXPECT_EQ(orig->tgid, child.pid());
  EXPECT_EQ(orig->uid, 0u);
  EXPECT_EQ(orig->gid, 0u);
  EXPECT_EQ(orig->cgroup_id, cgroup_id_);
  EXPECT_NE(orig->cookie, 0u);  // the socket inode
  const InterceptCounters c = interceptor_->Counters();
  EXPECT_EQ(c.redirected, 1u);
  EXPECT_EQ(c.lookups, 1u);
  EXPECT_EQ(c.lookup_failures, 0u);
  EXPECT_STREQ(interceptor_->method(), "nftables");
  Finish(child);
}

TEST_F(NftInterceptTest, OtherUserIsAttributed) {
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  ConnectSpec spec = Managed(MakeAddr(AF_INET, kHost4, kServerPort));
  spec.become = 65534;
  Child& child = Start(spec);
  EXPECT_EQ(ReadLine(child), "peer 10.99.0.1:8080");
  Result<OriginalConnection> orig = AcceptAndLookup();
  ASSERT_OK(orig);
  EXPECT_EQ(orig->tgid, child.pid());
  EXPECT_EQ(orig->uid, 65534u);
  EXPECT_EQ(orig->gid, 65534u);
  Finish(child);
}

TEST_F(NftInterceptTest, ChildCgroupIsCoveredByItsManagedParent) {
  // What `sigil run` does: the agent manages <root>/sigil, each command gets a cgroup below.
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  const std::string sub = dir_ + "/sub";
  ASSERT_EQ(mkdir(sub.c_str(), 0755), 0) << std::strerror(errno);
  Result<uint64_t> sub_id = CgroupId(sub);
  ASSERT_OK(sub_id);
  // How the rules name them: depth below the cgroup2 root, and a path nft resolves from
  // /sys/fs/cgroup wherever cgroup2 is mounted.
  Result<NftInterceptor::Resolved> parent = NftInterceptor::ResolveCgroup(dir_, "/sys/fs/cgroup");
  ASSERT_OK(parent);
  EXPECT_EQ(parent->match.level, 1u);
  EXPECT_EQ(parent->id, cgroup_id_);
  EXPECT_EQ(parent->match.nft_path, "../../.." + dir_);
  Result<NftInterceptor::Resolved> child_dir = NftInterceptor::ResolveCgroup(sub, "/sys/fs/cgroup");
  ASSERT_OK(child_dir);
  EXPECT_EQ(child_dir->match.level, 2u);
  EXPECT_EQ(child_dir->mount_root, root_);
  ConnectSpec spec = Managed(MakeAddr(AF_INET, kHost4, kServerPort));
  spec.cgroup = sub;
  Child& child = Start(spec);
  EXPECT_EQ(ReadLine(child), "peer 10.99.0.1:8080");
  Result<OriginalConnection> orig = AcceptAndLookup();
  ASSERT_OK(orig);
  EXPECT_EQ(orig->tgid, child.pid());
  EXPECT_EQ(orig->cgroup_id, *sub_id);
  Finish(child);
}

TEST_F(NftInterceptTest, UnmanagedProcessIsNotIntercepted) {
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  ConnectSpec spec = Managed(MakeAddr(AF_INET, kHost4, kServerPort));
  spec.cgroup.clear();
  Child& child = Start(spec);
  EXPECT_EQ(ReadLine(child), "peer 10.99.0.1:8080");
  ASSERT_OK(AcceptWithin(server_.get(), kTimeoutMs));
  EXPECT_FALSE(ReadableWithin(proxy_.get(), 0));
  Finish(child);
  EXPECT_EQ(interceptor_->Counters().redirected, 0u);
}

TEST_F(NftInterceptTest, InboundPortAndLoopbackAreNotRedirected) {
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  Result<OwnedFd> inbound = Bind(AF_INET, SOCK_STREAM, kHost4, 15008);
  ASSERT_OK(inbound);
  Result<OwnedFd> local = Bind(AF_INET, SOCK_STREAM, "127.0.0.1", kServerPort);
  ASSERT_OK(local);
  Child& to_inbound = Start(Managed(MakeAddr(AF_INET, kHost4, 15008)));
  EXPECT_EQ(ReadLine(to_inbound), "peer 10.99.0.1:15008");
  ASSERT_OK(AcceptWithin(inbound->get(), kTimeoutMs));
  Child& to_loopback = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort)));
  EXPECT_EQ(ReadLine(to_loopback), "peer 127.0.0.1:8080");
  ASSERT_OK(AcceptWithin(local->get(), kTimeoutMs));
  EXPECT_FALSE(ReadableWithin(proxy_.get(), 0));
  Finish(to_inbound);
  Finish(to_loopback);
  EXPECT_EQ(interceptor_->Counters().redirected, 0u);
}

TEST_F(NftInterceptTest, LoopbackIsInterceptedWhenConfigured) {
  InterceptConfig config = BaseConfig();
  config.skip_loopback = false;
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(config));
  Result<OwnedFd> local = Bind(AF_INET, SOCK_STREAM, "127.0.0.1", kServerPort);
  ASSERT_OK(local);
  Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort)));
  EXPECT_EQ(ReadLine(child), "peer 127.0.0.1:8080");
  Result<OriginalConnection> orig = AcceptAndLookup();
  ASSERT_OK(orig);
  EXPECT_EQ(FormatAddr(orig->original_dst), "127.0.0.1:8080");
  EXPECT_EQ(orig->tgid, child.pid());
  EXPECT_FALSE(ReadableWithin(local->get(), 0));
  Finish(child);
}

TEST_F(NftInterceptTest, DirectConnectToTheListenerIsNotAttributed) {
  InterceptConfig config = BaseConfig();
  config.skip_loopback = false;  // so only the listener rule keeps it from being redirected
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(config));
  Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kProxyPort)));
  EXPECT_EQ(ReadLine(child), "peer 127.0.0.1:15001");
  Result<OriginalConnection> orig = AcceptAndLookup();
  ASSERT_FALSE(orig.ok());
  EXPECT_EQ(orig.error().code(), ErrorCode::kNotFound) << orig.error().ToString();
  EXPECT_NE(orig.error().message().find("direct connection"), std::string::npos)
      << orig.error().message();
  EXPECT_EQ(interceptor_->Counters().redirected, 0u);
  EXPECT_EQ(interceptor_->Counters().lookup_failures, 1u);
  Finish(child);
}

TEST_F(NftInterceptTest, SocketHeldByTwoProcessesIsRefused) {
  // Attribution is by who holds the socket now, so a shared socket is ambiguous: refused.
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  ConnectSpec spec = Managed(MakeAddr(AF_INET, kHost4, kServerPort));
  spec.fork_after_connect = true;
  Child& child = Start(spec);
  EXPECT_EQ(ReadLine(child), "peer 10.99.0.1:8080");
  Result<OriginalConnection> orig = AcceptAndLookup();
  ASSERT_FALSE(orig.ok());
  EXPECT_EQ(orig.error().code(), ErrorCode::kPermissionDenied) << orig.error().ToString();
  EXPECT_NE(orig.error().message().find("several processes"), std::string::npos);
  Finish(child);
}

TEST_F(NftInterceptTest, ClosedClientIsNotAttributed) {
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  Result<Child> started = Child::Start([dir = dir_](LineChannel& ch) {
    if (!MoveProcess(dir, 0).ok()) return 1;
    const sockaddr_storage dst = MakeAddr(AF_INET, kHost4, kServerPort);
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&dst), sizeof(sockaddr_in)) != 0) return 2;
    close(fd);
    (void)ch.WriteLine("closed");
    Result<std::string> done = ch.ReadLine(3 * kTimeoutMs);
    return done.ok() ? 0 : 3;
  });
  ASSERT_OK(started);
  children_.push_back(std::move(*started));
  Child& child = children_.back();
  EXPECT_EQ(ReadLine(child), "closed");
  Result<OriginalConnection> orig = AcceptAndLookup();
  ASSERT_FALSE(orig.ok());
  EXPECT_EQ(orig.error().code(), ErrorCode::kNotFound) << orig.error().ToString();
  Finish(child);
}

TEST_F(NftInterceptTest, Ipv6IsRedirectedToTheIpv6Listener) {
  Result<OwnedFd> proxy6 = Bind(AF_INET6, SOCK_STREAM, "::1", kProxyPort);
  ASSERT_OK(proxy6);
  Result<OwnedFd> server6 = Bind(AF_INET6, SOCK_STREAM, kHost6, kServerPort);
  ASSERT_OK(server6);
  InterceptConfig config = BaseConfig();
  sockaddr_in6 r6{};
  r6.sin6_family = AF_INET6;
  r6.sin6_port = htons(kProxyPort);
  r6.sin6_addr = in6addr_loopback;
  config.redirect_v6 = r6;
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(config));
  Child& child = Start(Managed(MakeAddr(AF_INET6, kHost6, kServerPort)));
  EXPECT_EQ(ReadLine(child), "peer [fd99::1]:8080");
  Result<OwnedFd> conn = AcceptWithin(proxy6->get(), kTimeoutMs);
  ASSERT_OK(conn);
  EXPECT_FALSE(ReadableWithin(server6->get(), 0));
  Result<sockaddr_storage> peer = PeerOf(conn->get());
  ASSERT_OK(peer);
  Result<OriginalConnection> orig = interceptor_->Lookup(conn->get(), *peer);
  ASSERT_OK(orig);
  EXPECT_EQ(FormatAddr(orig->original_dst), "[fd99::1]:8080");
  EXPECT_EQ(orig->tgid, child.pid());
  EXPECT_EQ(orig->cgroup_id, cgroup_id_);
  Finish(child);
}

TEST_F(NftInterceptTest, NativeIpv6PassesWithoutAnIpv6Listener) {
  Result<OwnedFd> server6 = Bind(AF_INET6, SOCK_STREAM, kHost6, kServerPort);
  ASSERT_OK(server6);
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  Child& child = Start(Managed(MakeAddr(AF_INET6, kHost6, kServerPort)));
  EXPECT_EQ(ReadLine(child), "peer [fd99::1]:8080");
  ASSERT_OK(AcceptWithin(server6->get(), kTimeoutMs));
  Finish(child);
  EXPECT_EQ(interceptor_->Counters().redirected, 0u);
}

TEST_F(NftInterceptTest, FindsManagedListeners) {
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  Result<Child> started = Child::Start([dir = dir_](LineChannel& ch) {
    if (!MoveProcess(dir, 0).ok()) return 1;
    if (setgid(65534) != 0 || setuid(65534) != 0) return 1;
    Result<OwnedFd> l4 = Bind(AF_INET, SOCK_STREAM, kHost4, 9090);
    // Dual-stack: Bind() sets IPV6_V6ONLY, so clear it again for this one.
    OwnedFd l6(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int zero = 0;
    setsockopt(l6.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    const sockaddr_storage any6 = MakeAddr(AF_INET6, "::", 9091);
    const bool ok6 =
        bind(l6.get(), reinterpret_cast<const sockaddr*>(&any6), sizeof(sockaddr_in6)) == 0 &&
        listen(l6.get(), 16) == 0;
    Result<OwnedFd> only6 = Bind(AF_INET6, SOCK_STREAM, "::", 9092);  // IPV6_V6ONLY
    if (!l4.ok() || !ok6 || !only6.ok()) {
      (void)ch.WriteLine("err bind");
      return 1;
    }
    (void)ch.WriteLine("listening");
    Result<std::string> done = ch.ReadLine(3 * kTimeoutMs);
    return done.ok() ? 0 : 2;
  });
  ASSERT_OK(started);
  children_.push_back(std::move(*started));
  Child& child = children_.back();
  ASSERT_EQ(ReadLine(child), "listening");

  std::optional<ListenerOwner> v4 = interceptor_->LookupListener(AF_INET, 9090);
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(v4->tgid, child.pid());
  EXPECT_EQ(v4->uid, 65534u);
  EXPECT_EQ(v4->gid, 65534u);
  EXPECT_EQ(v4->cgroup_id, cgroup_id_);
  std::optional<ListenerOwner> v6 = interceptor_->LookupListener(AF_INET6, 9091);
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->tgid, child.pid());
  std::optional<ListenerOwner> v4via6 = interceptor_->LookupListener(AF_INET, 9091);
  ASSERT_TRUE(v4via6.has_value()) << "a dual-stack listener serves IPv4 too";
  EXPECT_EQ(v4via6->tgid, child.pid());
  EXPECT_FALSE(interceptor_->LookupListener(AF_INET, 9092).has_value()) << "IPV6_V6ONLY";
  EXPECT_TRUE(interceptor_->LookupListener(AF_INET6, 9092).has_value());
  // The test's own server (outside managed cgroups) is nobody's managed listener.
  EXPECT_FALSE(interceptor_->LookupListener(AF_INET, kServerPort).has_value());
  EXPECT_FALSE(interceptor_->LookupListener(AF_INET, 9093).has_value());
  Finish(child);
}

TEST_F(NftInterceptTest, DetachAndDestructionRemoveTheRules) {
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  ASSERT_OK(interceptor_->Attach(dir_));  // idempotent
  Result<std::string> table = RunNft(kNft, {"list", "table", "inet", "sigil_intercept"});
  ASSERT_OK(table);
  EXPECT_NE(table->find("socket cgroupv2 level"), std::string::npos) << *table;
  ASSERT_OK(interceptor_->Detach(dir_));
  {
    Child& child = Start(Managed(MakeAddr(AF_INET, kHost4, kServerPort)));
    EXPECT_EQ(ReadLine(child), "peer 10.99.0.1:8080");
    ASSERT_OK(AcceptWithin(server_.get(), kTimeoutMs));
    Finish(child);
  }
  Result<void> again = interceptor_->Detach(dir_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kNotFound);
  ASSERT_OK(interceptor_->Attach(dir_));  // re-attaching works
  {
    Child& child = Start(Managed(MakeAddr(AF_INET, kHost4, kServerPort)));
    EXPECT_EQ(ReadLine(child), "peer 10.99.0.1:8080");
    ASSERT_OK(AcceptAndLookup());
    Finish(child);
  }
  interceptor_.reset();
  EXPECT_FALSE(RunNft(kNft, {"list", "table", "inet", "sigil_intercept"}).ok())
      << "the table outlived its interceptor";
}

TEST_F(NftInterceptTest, RefusesACgroupContainingTheAgent) {
  ASSERT_NO_FATAL_FAILURE(LoadAndAttach(BaseConfig()));
  // This test process plays the agent: whatever its cgroup, the cgroup2 root contains it.
  Result<void> root = interceptor_->Attach(root_);
  ASSERT_FALSE(root.ok());
  EXPECT_EQ(root.error().code(), ErrorCode::kFailedPrecondition) << root.error().ToString();
  Result<void> missing = interceptor_->Attach("/nonexistent/sigil-cgroup");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("/nonexistent/sigil-cgroup"), std::string::npos);
  Result<void> not_cgroup = interceptor_->Attach("/tmp");
  ASSERT_FALSE(not_cgroup.ok());
  EXPECT_EQ(not_cgroup.error().code(), ErrorCode::kInvalidArgument);
  InterceptConfig no_redirect;
  EXPECT_EQ(NftInterceptor::Load(no_redirect).error().code(), ErrorCode::kInvalidArgument);
}

TEST(NftInterceptScript, TableHasExclusionsBeforeTheCgroupRules) {
  InterceptConfig c;
  c.redirect_v4.sin_family = AF_INET;
  c.redirect_v4.sin_port = htons(15001);
  c.redirect_v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const std::string s =
      NftInterceptor::TableScript(c, "sigil_intercept", {{.nft_path = "../x/y", .level = 2}});
  const size_t cg = s.find("socket cgroupv2 level 2 \"../x/y\" goto to_listener");
  ASSERT_NE(cg, std::string::npos) << s;
  for (const char* before :
       {"meta l4proto != tcp return", "tcp dport 15008 return", "ip daddr 127.0.0.0/8 return",
        "ip6 daddr ::1 return", "ip daddr 127.0.0.1 tcp dport 15001 return",
        "meta nfproto ipv6 return"}) {
    const size_t at = s.find(before);
    EXPECT_NE(at, std::string::npos) << before << "\n" << s;
    EXPECT_LT(at, cg) << before;
  }
  EXPECT_NE(s.find("dnat ip to 127.0.0.1:15001"), std::string::npos) << s;
  EXPECT_EQ(s.find("dnat ip6"), std::string::npos) << s;
  c.skip_loopback = false;
  const std::string chain = NftInterceptor::ChainScript(c, "t", {});
  EXPECT_EQ(chain.find("127.0.0.0/8"), std::string::npos) << chain;
  EXPECT_EQ(chain.rfind("flush chain inet t output\n", 0), 0u) << chain;
}

TEST(NftInterceptParse, PidListAndDiagMessages) {
  Result<std::vector<pid_t>> pids = ParsePidList("12\n345\n\n", 10);
  ASSERT_OK(pids);
  EXPECT_EQ(*pids, (std::vector<pid_t>{12, 345}));
  EXPECT_FALSE(ParsePidList("12\nx\n", 10).ok());
  EXPECT_FALSE(ParsePidList("-1\n", 10).ok());
  EXPECT_EQ(ParsePidList("1\n2\n3\n", 2).error().code(), ErrorCode::kResourceExhausted);

  // One SOCK_DIAG_BY_FAMILY message with a cgroup id attribute, then DONE.
  std::vector<uint8_t> buf(256, 0);
  inet_diag_msg msg{};
  msg.idiag_family = AF_INET;
  msg.idiag_state = 1;
  msg.idiag_uid = 42;
  msg.idiag_inode = 777;
  msg.id.idiag_sport = htons(5000);
  const uint16_t attr_len = 4 + 8;
  const uint32_t diag_len = 16 + sizeof msg + attr_len;
  nlmsghdr h{};
  h.nlmsg_len = diag_len;
  h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  std::memcpy(buf.data(), &h, sizeof h);
  std::memcpy(buf.data() + 16, &msg, sizeof msg);
  const uint16_t type = INET_DIAG_CGROUP_ID;
  const uint64_t cg = 0x1234;
  std::memcpy(buf.data() + 16 + sizeof msg, &attr_len, 2);
  std::memcpy(buf.data() + 16 + sizeof msg + 2, &type, 2);
  std::memcpy(buf.data() + 16 + sizeof msg + 4, &cg, 8);
  nlmsghdr done{};
  done.nlmsg_len = 20;
  done.nlmsg_type = NLMSG_DONE;
  std::memcpy(buf.data() + diag_len, &done, sizeof done);
  buf.resize(diag_len + 20);
  std::vector<TcpSocketInfo> out;
  Result<bool> parsed = ParseSockDiagMessages(buf, out, 10);
  ASSERT_OK(parsed);
  EXPECT_TRUE(*parsed);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].uid, 42u);
  EXPECT_EQ(out[0].inode, 777u);
  EXPECT_EQ(out[0].cgroup_id, 0x1234u);
  EXPECT_EQ(FormatAddr(out[0].local), "0.0.0.0:5000");
  // Truncated: the length claims more than the buffer holds.
  out.clear();
  EXPECT_FALSE(ParseSockDiagMessages(std::span(buf.data(), 40), out, 10).ok());
  // Attribute running past its message.
  std::vector<uint8_t> bad(buf.begin(), buf.begin() + diag_len);
  const uint16_t huge = 200;
  std::memcpy(bad.data() + 16 + sizeof msg, &huge, 2);
  EXPECT_FALSE(ParseSockDiagMessages(bad, out, 10).ok());
}

}  // namespace
}  // namespace sigil::dataplane
