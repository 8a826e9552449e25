// End-to-end tests of the interceptor: real BPF programs attached to a real cgroup, real
// processes and sockets. Each test runs in a network namespace of its own (so fixed ports are
// fine and nothing reaches the host network) with a per-test managed cgroup.
#include "dataplane/intercept/bpf_interceptor.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <thread>

#include "dataplane/intercept/cgroup2.h"
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
using testing::PortOf;
using testing::ReadableWithin;

constexpr uint16_t kProxyPort = 15001;
constexpr uint16_t kServerPort = 8080;
constexpr int kTimeoutMs = 5000;

// ASSERT_OK(result) << "more context"; works on lvalues and temporaries alike.
#define ASSERT_OK(expr)                                       \
  if (const auto& assert_ok_r_ = (expr); assert_ok_r_.ok()) { \
  } else                                                      \
    GTEST_FAIL() << assert_ok_r_.error().ToString()

// What a managed child does: join the cgroup, optionally become another user, open a socket
// and connect it, then report the socket's getpeername() and wait for "done".
struct ConnectSpec {
  std::string cgroup;  // empty: stay outside the managed cgroup
  int socket_family = AF_INET;
  int type = SOCK_STREAM;
  sockaddr_storage dst{};
  std::optional<uid_t> become;  // setgid+setuid to this id after joining the cgroup
  bool wait_for_go = false;     // read "go" before connecting
  bool in_thread = false;       // connect from a second thread (tid != tgid)
};

int Fail(LineChannel& ch, const std::string& what) {
  (void)ch.WriteLine("err " + what + ": " + std::strerror(errno));
  return 1;
}

int ConnectOnce(LineChannel& ch, const ConnectSpec& s) {
  const int fd = socket(s.socket_family, s.type | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(ch, "socket");
  const socklen_t len = s.dst.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&s.dst), len) != 0) return Fail(ch, "connect");
  if (s.type == SOCK_DGRAM) {
    if (send(fd, "hi", 2, 0) != 2) return Fail(ch, "send");
  }
  Result<sockaddr_storage> peer = PeerOf(fd);
  if (!peer.ok()) return Fail(ch, "getpeername");
  (void)ch.WriteLine("peer " + FormatAddr(*peer));
  Result<std::string> done = ch.ReadLine(3 * kTimeoutMs);
  close(fd);
  return done.ok() && *done == "done" ? 0 : 2;
}

int RunConnectChild(LineChannel& ch, const ConnectSpec& s) {
  if (s.wait_for_go) {
    Result<std::string> go = ch.ReadLine(kTimeoutMs);
    if (!go.ok() || *go != "go") return 3;
  }
  if (!s.cgroup.empty()) {
    Result<void> moved = MoveProcess(s.cgroup, 0);
    if (!moved.ok()) {
      (void)ch.WriteLine("err " + moved.error().ToString());
      return 1;
    }
  }
  if (s.become.has_value()) {
    if (setgid(*s.become) != 0) return Fail(ch, "setgid");
    if (setuid(*s.become) != 0) return Fail(ch, "setuid");
  }
  if (!s.in_thread) return ConnectOnce(ch, s);
  int rc = 0;
  std::thread t([&] { rc = ConnectOnce(ch, s); });
  t.join();
  return rc;
}

class InterceptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(testing::EnterFreshNetns());
    Result<std::string> root = FindOrMountCgroup2("/run/sigil/cgroup2");
    ASSERT_OK(root);
    static int seq = 0;
    Result<std::string> dir =
        EnsureManagedTree(*root, "itest-" + std::to_string(getpid()) + "-" + std::to_string(++seq));
    ASSERT_OK(dir);
    dir_ = *dir;
    Result<uint64_t> id = CgroupId(dir_);
    ASSERT_OK(id);
    cgroup_id_ = *id;
    Result<OwnedFd> proxy = Bind(AF_INET, SOCK_STREAM, "127.0.0.1", kProxyPort);
    ASSERT_OK(proxy);
    proxy_ = std::move(*proxy);
    Result<OwnedFd> server = Bind(AF_INET, SOCK_STREAM, "127.0.0.1", kServerPort);
    ASSERT_OK(server);
    server_ = std::move(*server);
  }

  void TearDown() override {
    children_.clear();  // kill + reap before the cgroup can be removed
    interceptor_.reset();
    if (dir_.empty()) return;
    Result<void> removed = RemoveCgroup(dir_);
    for (int i = 0; i < 100 && !removed.ok(); ++i) {  // a just-reaped task may linger briefly
      timespec ts{.tv_sec = 0, .tv_nsec = 20000000};
      nanosleep(&ts, nullptr);
      removed = RemoveCgroup(dir_);
    }
    EXPECT_TRUE(removed.ok()) << removed.error().ToString();
  }

  static InterceptConfig BaseConfig() {
    InterceptConfig c;
    c.redirect_v4.sin_family = AF_INET;
    c.redirect_v4.sin_port = htons(kProxyPort);
    c.redirect_v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c.skip_loopback = false;  // the test netns has only loopback
    return c;
  }

  // Loads with `config` and attaches to the test cgroup.
  void LoadAndAttach(const InterceptConfig& config) {
    Result<std::unique_ptr<BpfInterceptor>> loaded = BpfInterceptor::Load(config);
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
    ConnectSpec s;
    s.cgroup = dir_;
    s.dst = dst;
    s.socket_family = dst.ss_family;
    return s;
  }

  // Reads the child's "peer ..." line; fails the test on anything else.
  static std::string ReadPeer(Child& c) {
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

  // Polls `pred` every 10 ms for at most `timeout_ms`.
  template <class Pred>
  static bool Eventually(Pred pred, int timeout_ms = kTimeoutMs) {
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
      if (pred()) return true;
      timespec ts{.tv_sec = 0, .tv_nsec = 10000000};
      nanosleep(&ts, nullptr);
    }
    return pred();
  }

  std::string dir_;
  uint64_t cgroup_id_ = 0;
  OwnedFd proxy_;
  OwnedFd server_;
  std::unique_ptr<BpfInterceptor> interceptor_;
  std::deque<Child> children_;  // deque: references stay valid on push_back
};

TEST_F(InterceptTest, RedirectsManagedConnectAndAttributesIt) {
  LoadAndAttach(BaseConfig());
  Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort)));

  // The workload sees what it dialled, not the proxy.
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:8080");
  Result<OwnedFd> conn = AcceptWithin(proxy_.get(), kTimeoutMs);
  ASSERT_OK(conn);
  EXPECT_FALSE(ReadableWithin(server_.get(), 0)) << "the real server was reached directly";

  Result<sockaddr_storage> peer = PeerOf(conn->get());
  ASSERT_OK(peer);
  Result<OriginalConnection> orig = interceptor_->Lookup(*peer);
  ASSERT_OK(orig);
  EXPECT_EQ(FormatAddr(orig->original_dst), "127.0.0.1:8080");
  EXPECT_EQ(orig->tgid, child.pid());
  EXPECT_EQ(orig->tid, child.pid());
  EXPECT_EQ(orig->uid, 0u);
  EXPECT_EQ(orig->gid, 0u);
  EXPECT_EQ(orig->cgroup_id, cgroup_id_);
  EXPECT_NE(orig->cookie, 0u);
  EXPECT_EQ(interceptor_->TrackedConnections(), 1u);

  const InterceptCounters c = interceptor_->Counters();
  EXPECT_EQ(c.redirected, 1u);
  EXPECT_EQ(c.established, 1u);
  EXPECT_EQ(c.update_failures, 0u);

  Finish(child);
  EXPECT_TRUE(Eventually([&] { return interceptor_->Counters().closed == 1; }));
  EXPECT_TRUE(Eventually([&] { return interceptor_->TrackedConnections() == 0; }));
  EXPECT_EQ(interceptor_->TrackedTuples(), 0u);
  Result<OriginalConnection> gone = interceptor_->Lookup(*peer);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(gone.error().message().find(FormatAddr(*peer)), std::string::npos);
}

TEST_F(InterceptTest, RecordsTheConnectingThread) {
  LoadAndAttach(BaseConfig());
  ConnectSpec spec = Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort));
  spec.in_thread = true;
  Child& child = Start(spec);
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:8080");
  Result<OwnedFd> conn = AcceptWithin(proxy_.get(), kTimeoutMs);
  ASSERT_OK(conn);
  Result<sockaddr_storage> peer = PeerOf(conn->get());
  ASSERT_OK(peer);
  Result<OriginalConnection> orig = interceptor_->Lookup(*peer);
  ASSERT_OK(orig);
  EXPECT_EQ(orig->tgid, child.pid());
  EXPECT_NE(orig->tid, child.pid());
  EXPECT_GT(orig->tid, 0);
  Finish(child);
}

TEST_F(InterceptTest, UnmanagedProcessIsNotIntercepted) {
  LoadAndAttach(BaseConfig());
  ConnectSpec spec = Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort));
  spec.cgroup.clear();
  Child& child = Start(spec);
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:8080");
  Result<OwnedFd> conn = AcceptWithin(server_.get(), kTimeoutMs);
  ASSERT_OK(conn);
  EXPECT_FALSE(ReadableWithin(proxy_.get(), 0));
  Finish(child);
  EXPECT_EQ(interceptor_->Counters().redirected, 0u);
  EXPECT_EQ(interceptor_->TrackedConnections(), 0u);
}

TEST_F(InterceptTest, InboundPortIsNotRedirected) {
  InterceptConfig config = BaseConfig();
  config.inbound_port = 15008;
  LoadAndAttach(config);
  Result<OwnedFd> inbound = Bind(AF_INET, SOCK_STREAM, "127.0.0.1", 15008);
  ASSERT_OK(inbound);
  Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", 15008)));
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:15008");
  ASSERT_OK(AcceptWithin(inbound->get(), kTimeoutMs));
  EXPECT_FALSE(ReadableWithin(proxy_.get(), 0));
  Finish(child);
  const InterceptCounters c = interceptor_->Counters();
  EXPECT_EQ(c.redirected, 0u);
  EXPECT_EQ(c.skipped_inbound, 1u);
}

TEST_F(InterceptTest, AgentProcessIsNotRedirected) {
  // The child plays the agent: it is in the managed cgroup, but its tgid is the agent's.
  ConnectSpec spec = Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort));
  spec.wait_for_go = true;
  Child& child = Start(spec);
  InterceptConfig config = BaseConfig();
  config.agent_tgid = child.pid();
  LoadAndAttach(config);
  ASSERT_OK(child.channel().WriteLine("go"));
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:8080");
  ASSERT_OK(AcceptWithin(server_.get(), kTimeoutMs));
  EXPECT_FALSE(ReadableWithin(proxy_.get(), 0));
  Finish(child);
  const InterceptCounters c = interceptor_->Counters();
  EXPECT_EQ(c.redirected, 0u);
  EXPECT_EQ(c.skipped_agent, 1u);
}

TEST_F(InterceptTest, SkipsLoopbackWhenConfigured) {
  InterceptConfig config = BaseConfig();
  config.skip_loopback = true;
  LoadAndAttach(config);
  Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort)));
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:8080");
  ASSERT_OK(AcceptWithin(server_.get(), kTimeoutMs));
  EXPECT_FALSE(ReadableWithin(proxy_.get(), 0));
  Finish(child);
  const InterceptCounters c = interceptor_->Counters();
  EXPECT_EQ(c.redirected, 0u);
  EXPECT_EQ(c.skipped_loopback, 1u);
}

TEST_F(InterceptTest, DirectConnectToTheProxyIsNotRedirectedAgain) {
  LoadAndAttach(BaseConfig());
  Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kProxyPort)));
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:15001");
  Result<OwnedFd> conn = AcceptWithin(proxy_.get(), kTimeoutMs);
  ASSERT_OK(conn);
  Result<sockaddr_storage> peer = PeerOf(conn->get());
  ASSERT_OK(peer);
  Result<OriginalConnection> orig = interceptor_->Lookup(*peer);
  ASSERT_FALSE(orig.ok());
  EXPECT_EQ(orig.error().code(), ErrorCode::kNotFound);
  Finish(child);
  EXPECT_EQ(interceptor_->Counters().skipped_self, 1u);
}

TEST_F(InterceptTest, OtherUserIsAttributed) {
  LoadAndAttach(BaseConfig());
  ConnectSpec spec = Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort));
  spec.become = 65534;
  Child& child = Start(spec);
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:8080");
  Result<OwnedFd> conn = AcceptWithin(proxy_.get(), kTimeoutMs);
  ASSERT_OK(conn);
  Result<sockaddr_storage> peer = PeerOf(conn->get());
  ASSERT_OK(peer);
  Result<OriginalConnection> orig = interceptor_->Lookup(*peer);
  ASSERT_OK(orig);
  EXPECT_EQ(orig->uid, 65534u);
  EXPECT_EQ(orig->gid, 65534u);
  EXPECT_EQ(orig->tgid, child.pid());
  EXPECT_EQ(orig->cgroup_id, cgroup_id_);
  Finish(child);
}

TEST_F(InterceptTest, Ipv6IsRedirectedToTheIpv6Listener) {
  Result<OwnedFd> proxy6 = Bind(AF_INET6, SOCK_STREAM, "::1", kProxyPort);
  ASSERT_OK(proxy6);  // fails loudly if IPv6 is unavailable in the namespace
  Result<OwnedFd> server6 = Bind(AF_INET6, SOCK_STREAM, "::1", kServerPort);
  ASSERT_OK(server6);
  InterceptConfig config = BaseConfig();
  sockaddr_in6 r6{};
  r6.sin6_family = AF_INET6;
  r6.sin6_port = htons(kProxyPort);
  r6.sin6_addr = in6addr_loopback;
  config.redirect_v6 = r6;
  LoadAndAttach(config);

  Child& child = Start(Managed(MakeAddr(AF_INET6, "::1", kServerPort)));
  EXPECT_EQ(ReadPeer(child), "peer [::1]:8080");
  Result<OwnedFd> conn = AcceptWithin(proxy6->get(), kTimeoutMs);
  ASSERT_OK(conn);
  EXPECT_FALSE(ReadableWithin(server6->get(), 0));
  Result<sockaddr_storage> peer = PeerOf(conn->get());
  ASSERT_OK(peer);
  Result<OriginalConnection> orig = interceptor_->Lookup(*peer);
  ASSERT_OK(orig);
  EXPECT_EQ(FormatAddr(orig->original_dst), "[::1]:8080");
  EXPECT_EQ(orig->tgid, child.pid());
  EXPECT_EQ(orig->cgroup_id, cgroup_id_);
  Finish(child);
  EXPECT_TRUE(Eventually([&] { return interceptor_->TrackedConnections() == 0; }));
}

TEST_F(InterceptTest, Ipv4MappedGoesToTheIpv4Listener) {
  LoadAndAttach(BaseConfig());  // no IPv6 listener needed for mapped destinations
  ConnectSpec spec = Managed(MakeAddr(AF_INET6, "::ffff:127.0.0.1", kServerPort));
  Child& child = Start(spec);
  EXPECT_EQ(ReadPeer(child), "peer [::ffff:127.0.0.1]:8080");
  Result<OwnedFd> conn = AcceptWithin(proxy_.get(), kTimeoutMs);
  ASSERT_OK(conn);
  EXPECT_FALSE(ReadableWithin(server_.get(), 0));
  Result<sockaddr_storage> peer = PeerOf(conn->get());
  ASSERT_OK(peer);
  ASSERT_EQ(peer->ss_family, AF_INET);
  Result<OriginalConnection> orig = interceptor_->Lookup(*peer);
  ASSERT_OK(orig);
  EXPECT_EQ(FormatAddr(orig->original_dst), "127.0.0.1:8080");
  EXPECT_EQ(orig->tgid, child.pid());
  // The agent may listen dual-stack and see the peer in mapped form: same answer.
  const auto* sin = reinterpret_cast<const sockaddr_in*>(&*peer);
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
  Result<OriginalConnection> mapped =
      interceptor_->Lookup(MakeAddr(AF_INET6, std::string("::ffff:") + ip, PortOf(*peer)));
  ASSERT_OK(mapped);
  EXPECT_EQ(mapped->cookie, orig->cookie);
  Finish(child);
}

TEST_F(InterceptTest, NativeIpv6PassesWithoutAnIpv6Listener) {
  Result<OwnedFd> server6 = Bind(AF_INET6, SOCK_STREAM, "::1", kServerPort);
  ASSERT_OK(server6);
  LoadAndAttach(BaseConfig());
  Child& child = Start(Managed(MakeAddr(AF_INET6, "::1", kServerPort)));
  EXPECT_EQ(ReadPeer(child), "peer [::1]:8080");
  ASSERT_OK(AcceptWithin(server6->get(), kTimeoutMs));
  Finish(child);
  EXPECT_EQ(interceptor_->Counters().redirected, 0u);
}

TEST_F(InterceptTest, RecordsManagedListeners) {
  LoadAndAttach(BaseConfig());
  Result<Child> started = Child::Start([dir = dir_](LineChannel& ch) {
    if (!MoveProcess(dir, 0).ok()) return 1;
    Result<OwnedFd> l4 = Bind(AF_INET, SOCK_STREAM, "127.0.0.1", 9090);
    Result<OwnedFd> l6 = Bind(AF_INET6, SOCK_STREAM, "::", 9091);
    Result<OwnedFd> eph = Bind(AF_INET, SOCK_STREAM, "127.0.0.1", 0);    // port 0: not recorded
    Result<OwnedFd> udp = Bind(AF_INET, SOCK_DGRAM, "127.0.0.1", 9092);  // UDP: not recorded
    if (!l4.ok() || !l6.ok() || !eph.ok() || !udp.ok()) {
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
  Result<std::string> line = child.channel().ReadLine(kTimeoutMs);
  ASSERT_OK(line);
  ASSERT_EQ(*line, "listening");

  std::optional<ListenerOwner> v4 = interceptor_->LookupListener(AF_INET, 9090);
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(v4->tgid, child.pid());
  EXPECT_EQ(v4->uid, 0u);
  EXPECT_EQ(v4->cgroup_id, cgroup_id_);
  std::optional<ListenerOwner> v6 = interceptor_->LookupListener(AF_INET6, 9091);
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->tgid, child.pid());
  // A dual-stack IPv6 listener also answers for IPv4.
  std::optional<ListenerOwner> v4via6 = interceptor_->LookupListener(AF_INET, 9091);
  ASSERT_TRUE(v4via6.has_value());
  EXPECT_EQ(v4via6->tgid, child.pid());
  EXPECT_FALSE(interceptor_->LookupListener(AF_INET, 9092).has_value());
  EXPECT_FALSE(interceptor_->LookupListener(AF_INET6, 9090).has_value());
  EXPECT_EQ(interceptor_->Counters().listeners, 2u);
  Finish(child);
}

TEST_F(InterceptTest, UdpIsNotRedirected) {
  LoadAndAttach(BaseConfig());
  Result<OwnedFd> udp = Bind(AF_INET, SOCK_DGRAM, "127.0.0.1", 5353);
  ASSERT_OK(udp);
  ConnectSpec spec = Managed(MakeAddr(AF_INET, "127.0.0.1", 5353));
  spec.type = SOCK_DGRAM;
  Child& child = Start(spec);
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:5353");
  ASSERT_TRUE(ReadableWithin(udp->get(), kTimeoutMs)) << "datagram did not reach its destination";
  char buf[8] = {};
  EXPECT_EQ(recv(udp->get(), buf, sizeof buf, 0), 2);
  Finish(child);
  EXPECT_EQ(interceptor_->Counters().redirected, 0u);
  EXPECT_EQ(interceptor_->TrackedConnections(), 0u);
}

TEST_F(InterceptTest, ClosedConnectionsDoNotLeak) {
  LoadAndAttach(BaseConfig());
  constexpr int kEach = 100;
  // Phase 1: the proxy accepts, attributes and closes first; the client waits for EOF.
  // Phase 2: the client closes right after connecting, before the proxy accepts.
  Result<Child> started = Child::Start([dir = dir_](LineChannel& ch) {
    if (!MoveProcess(dir, 0).ok()) return 1;
    const sockaddr_storage dst = MakeAddr(AF_INET, "127.0.0.1", kServerPort);
    for (int phase = 1; phase <= 2; ++phase) {
      for (int i = 0; i < kEach; ++i) {
        const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return Fail(ch, "socket");
        if (connect(fd, reinterpret_cast<const sockaddr*>(&dst), sizeof(sockaddr_in)) != 0) {
          return Fail(ch, "connect");
        }
        if (phase == 1) {
          char c;
          if (!ReadableWithin(fd, kTimeoutMs) || read(fd, &c, 1) != 0) return Fail(ch, "eof");
        }
        close(fd);
      }
    }
    (void)ch.WriteLine("done");
    return 0;
  });
  ASSERT_OK(started);
  children_.push_back(std::move(*started));
  Child& child = children_.back();

  for (int i = 0; i < kEach; ++i) {
    Result<OwnedFd> conn = AcceptWithin(proxy_.get(), kTimeoutMs);
    ASSERT_OK(conn) << "connection " << i;
    Result<sockaddr_storage> peer = PeerOf(conn->get());
    ASSERT_OK(peer);
    Result<OriginalConnection> orig = interceptor_->Lookup(*peer);
    ASSERT_OK(orig) << "connection " << i;
    ASSERT_EQ(orig->tgid, child.pid());
    ASSERT_EQ(PortOf(orig->original_dst), kServerPort);
  }
  Result<std::string> done = child.channel().ReadLine(3 * kTimeoutMs);
  ASSERT_OK(done);
  ASSERT_EQ(*done, "done");
  Result<int> rc = child.Wait(kTimeoutMs);
  ASSERT_OK(rc);
  EXPECT_EQ(*rc, 0);
  for (int i = 0; i < kEach; ++i) {  // drain phase 2's already-closed connections
    ASSERT_OK(AcceptWithin(proxy_.get(), kTimeoutMs)) << "phase 2 connection " << i;
  }

  EXPECT_TRUE(Eventually([&] { return interceptor_->TrackedConnections() == 0; }))
      << interceptor_->TrackedConnections() << " connections still tracked";
  EXPECT_TRUE(Eventually([&] { return interceptor_->TrackedTuples() == 0; }))
      << interceptor_->TrackedTuples() << " tuples still tracked";
  const InterceptCounters c = interceptor_->Counters();
  EXPECT_EQ(c.redirected, 2u * kEach);
  EXPECT_EQ(c.established, 2u * kEach);
  EXPECT_EQ(c.closed, 2u * kEach);
  EXPECT_EQ(c.update_failures, 0u);
}

TEST_F(InterceptTest, RefusedRedirectDoesNotLeak) {
  InterceptConfig config = BaseConfig();
  config.redirect_v4.sin_port = htons(15002);  // nothing listens there
  LoadAndAttach(config);
  Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort)));
  Result<std::string> line = child.channel().ReadLine(kTimeoutMs);
  ASSERT_OK(line);
  EXPECT_EQ(line->rfind("err connect: Connection refused", 0), 0u) << *line;
  Result<int> rc = child.Wait(kTimeoutMs);
  ASSERT_OK(rc);
  EXPECT_EQ(interceptor_->Counters().redirected, 1u);
  EXPECT_TRUE(Eventually([&] { return interceptor_->TrackedConnections() == 0; }))
      << "a refused connect left its record behind";
}

TEST_F(InterceptTest, DisableAndDetachStopInterception) {
  LoadAndAttach(BaseConfig());
  ASSERT_OK(interceptor_->Attach(dir_));  // idempotent
  ASSERT_OK(interceptor_->SetEnabled(false));
  {
    Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort)));
    EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:8080");
    ASSERT_OK(AcceptWithin(server_.get(), kTimeoutMs));
    Finish(child);
  }
  ASSERT_OK(interceptor_->SetEnabled(true));
  ASSERT_OK(interceptor_->Detach(dir_));
  {
    Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort)));
    EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:8080");
    ASSERT_OK(AcceptWithin(server_.get(), kTimeoutMs));
    Finish(child);
  }
  EXPECT_FALSE(ReadableWithin(proxy_.get(), 0));
  EXPECT_EQ(interceptor_->Counters().redirected, 0u);
  Result<void> again = interceptor_->Detach(dir_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kNotFound);
  // Re-attaching works after a detach.
  ASSERT_OK(interceptor_->Attach(dir_));
  Child& child = Start(Managed(MakeAddr(AF_INET, "127.0.0.1", kServerPort)));
  EXPECT_EQ(ReadPeer(child), "peer 127.0.0.1:8080");
  ASSERT_OK(AcceptWithin(proxy_.get(), kTimeoutMs));
  Finish(child);
}

TEST_F(InterceptTest, ErrorsNameTheFailingThing) {
  LoadAndAttach(BaseConfig());
  Result<void> bad = interceptor_->Attach("/nonexistent/sigil-cgroup");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("/nonexistent/sigil-cgroup"), std::string::npos)
      << bad.error().message();
  InterceptConfig no_redirect;
  Result<std::unique_ptr<BpfInterceptor>> invalid = BpfInterceptor::Load(no_redirect);
  ASSERT_FALSE(invalid.ok());
  EXPECT_EQ(invalid.error().code(), ErrorCode::kInvalidArgument);
  sockaddr_storage unix_peer{};
  unix_peer.ss_family = AF_UNIX;
  Result<OriginalConnection> lookup = interceptor_->Lookup(unix_peer);
  ASSERT_FALSE(lookup.ok());
  EXPECT_EQ(lookup.error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace sigil::dataplane
