// Async helpers: connect (refused, timeout against a full backlog), TLS handshake (success,
// timeout, certificate verification failure), AsyncReadMessage (leftovers forwarded by a relay,
// plain and TLS; malformed, oversized, EOF), AsyncWriteAll, and completion on loop stop.
#include "dataplane/relay/async_io.h"

#include <gtest/gtest.h>
#include <netinet/tcp.h>
#include <poll.h>

#include <future>

#include "dataplane/relay/test_util.h"

namespace sigil::dataplane {
namespace {

using namespace std::chrono_literals;
using testing::Listener;
using testing::RunOn;

// Waits for a future with a bound; fails the test instead of hanging.
template <class T>
T Get(std::future<T>& f, std::chrono::milliseconds timeout = 20s) {
  if (f.wait_for(timeout) != std::future_status::ready) {
    ADD_FAILURE() << "timed out waiting for a callback";
    std::abort();
  }
  return f.get();
}

class AsyncIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto g = LoopGroup::Start(1);
    ASSERT_TRUE(g.ok()) << g.error().ToString();
    group_ = std::move(*g);
  }
  EventLoop& loop() { return group_->at(0); }

  std::unique_ptr<LoopGroup> group_;
};

TEST_F(AsyncIoTest, ConnectSucceedsAndSetsNodelay) {
  Listener listener;
  std::promise<Result<OwnedFd>> p;
  auto f = p.get_future();
  RunOn(loop(), [&] {
    AsyncConnect(loop(), listener.addr(), 5s,
                 [&](Result<OwnedFd> fd) { p.set_value(std::move(fd)); });
  });
  auto fd = Get(f);
  ASSERT_TRUE(fd.ok()) << fd.error().ToString();
  int nodelay = 0;
  socklen_t len = sizeof(nodelay);
  ASSERT_EQ(::getsockopt(fd->get(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
  EXPECT_NE(nodelay, 0);
  EXPECT_TRUE(listener.Accept(5s).valid());
}

TEST_F(AsyncIoTest, ConnectRefusedIsUnavailable) {
  sockaddr_storage closed;
  {
    Listener listener;
    closed = listener.addr();
  }
  std::promise<Result<OwnedFd>> p;
  auto f = p.get_future();
  RunOn(loop(), [&] {
    AsyncConnect(loop(), closed, 5s, [&](Result<OwnedFd> fd) { p.set_value(std::move(fd)); });
  });
  auto fd = Get(f);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.error().code(), ErrorCode::kUnavailable) << fd.error().ToString();
  EXPECT_NE(fd.error().message().find("refused"), std::string::npos) << fd.error().ToString();
}

TEST_F(AsyncIoTest, ConnectBadFamilyIsInvalidArgument) {
  sockaddr_storage unix_addr{};
  unix_addr.ss_family = AF_UNIX;
  std::promise<Result<OwnedFd>> p;
  auto f = p.get_future();
  RunOn(loop(), [&] {
    AsyncConnect(loop(), unix_addr, 5s, [&](Result<OwnedFd> fd) { p.set_value(std::move(fd)); });
  });
  auto fd = Get(f);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.error().code(), ErrorCode::kInvalidArgument);
}

// Blackhole on loopback, deterministically: a listener with backlog 0 that never accepts.
// Linux drops a SYN when the listener's accept queue is full (regardless of syncookies), so
// once one connection sits in the queue the next connect stays in SYN_SENT (the first SYN
// retransmit is 1 s away), longer than the 300 ms timeout.
TEST_F(AsyncIoTest, ConnectTimeoutAgainstFullBacklogIsDeadlineExceeded) {
  Listener listener(/*backlog=*/0);
  std::vector<OwnedFd> fillers;
  bool full = false;
  for (int i = 0; i < 16 && !full; ++i) {
    OwnedFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&listener.addr()), sizeof(sockaddr_in));
    pollfd pfd{fd.get(), POLLOUT, 0};
    full = ::poll(&pfd, 1, 200) == 0;
    fillers.push_back(std::move(fd));
  }
  ASSERT_TRUE(full) << "could not fill the accept queue";
  std::promise<Result<OwnedFd>> p;
  auto f = p.get_future();
  auto start = std::chrono::steady_clock::now();
  RunOn(loop(), [&] {
    AsyncConnect(loop(), listener.addr(), 300ms,
                 [&](Result<OwnedFd> fd) { p.set_value(std::move(fd)); });
  });
  auto fd = Get(f);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.error().code(), ErrorCode::kDeadlineExceeded) << fd.error().ToString();
  EXPECT_GE(elapsed, 300ms);
}

TEST_F(AsyncIoTest, HandshakeTimeoutWhenPeerNeverSpeaksTls) {
  testing::TestCa ca("ca");
  auto ctx = testing::ClientContext(ca.Issue("client"), ca);
  Listener silent;
  OwnedFd fd = testing::ConnectTo(silent.addr());
  ASSERT_TRUE(fd.valid());
  OwnedFd accepted = silent.Accept();  // accepted, never read or written
  std::promise<Result<std::unique_ptr<Endpoint>>> p;
  auto f = p.get_future();
  RunOn(loop(), [&] {
    SslPtr ssl(SSL_new(ctx.get()));
    SSL_set_connect_state(ssl.get());
    AsyncTlsHandshake(loop(), std::move(fd), std::move(ssl), 200ms,
                      [&](Result<std::unique_ptr<Endpoint>> ep) { p.set_value(std::move(ep)); });
  });
  auto ep = Get(f);
  ASSERT_FALSE(ep.ok());
  EXPECT_EQ(ep.error().code(), ErrorCode::kDeadlineExceeded) << ep.error().ToString();
}

struct HandshakePair {
  Result<std::unique_ptr<Endpoint>> client = Internal("unset");
  Result<std::unique_ptr<Endpoint>> server = Internal("unset");
};

// Handshakes a connected loopback pair, server and client each on the loop.
HandshakePair Handshake(EventLoop& loop, SSL_CTX* server_ctx, SSL_CTX* client_ctx) {
  Listener listener;
  OwnedFd client_fd = testing::ConnectTo(listener.addr());
  OwnedFd server_fd = listener.Accept();
  std::promise<Result<std::unique_ptr<Endpoint>>> pc, ps;
  auto fc = pc.get_future();
  auto fs = ps.get_future();
  RunOn(loop, [&] {
    SslPtr c(SSL_new(client_ctx));
    SSL_set_connect_state(c.get());
    AsyncTlsHandshake(loop, std::move(client_fd), std::move(c), 5s,
                      [&](Result<std::unique_ptr<Endpoint>> ep) { pc.set_value(std::move(ep)); });
    SslPtr s(SSL_new(server_ctx));
    SSL_set_accept_state(s.get());
    AsyncTlsHandshake(loop, std::move(server_fd), std::move(s), 5s,
                      [&](Result<std::unique_ptr<Endpoint>> ep) { ps.set_value(std::move(ep)); });
  });
  HandshakePair out;
  out.client = Get(fc);
  out.server = Get(fs);
  return out;
}

TEST_F(AsyncIoTest, MutualTlsHandshakeThenWriteAllAndReadMessage) {
  testing::TestCa ca("ca");
  auto sctx = testing::ServerContext(ca.Issue("server"), ca);
  auto cctx = testing::ClientContext(ca.Issue("client"), ca);
  HandshakePair hs = Handshake(loop(), sctx.get(), cctx.get());
  ASSERT_TRUE(hs.client.ok()) << hs.client.error().ToString();
  ASSERT_TRUE(hs.server.ok()) << hs.server.error().ToString();
  ASSERT_NE((*hs.server)->ssl(), nullptr);
  X509Ptr peer(SSL_get1_peer_certificate((*hs.server)->ssl()));
  ASSERT_NE(peer, nullptr);

  // 200 KiB message: many records, many WANT_WRITE/WANT_READ rounds.
  std::string body = testing::Prng(7).Bytes(200 * 1024);
  std::string msg = std::to_string(body.size()) + ":" + body + "tail";
  std::promise<Result<void>> pw;
  std::promise<Result<std::pair<std::string, std::string>>> pr;
  auto fw = pw.get_future();
  auto fr = pr.get_future();
  RunOn(loop(), [&] {
    AsyncWriteAll(loop(), **hs.client, msg, 5s, [&](Result<void> r) { pw.set_value(r); });
    AsyncReadMessage(
        loop(), **hs.server, 1 << 20, 5s,
        [](std::string_view b) -> ssize_t {
          size_t colon = b.find(':');
          if (colon == std::string_view::npos) return 0;
          size_t len = std::stoul(std::string(b.substr(0, colon)));
          size_t total = colon + 1 + len;
          return b.size() >= total + 4 ? static_cast<ssize_t>(total) : 0;
        },
        [&](Result<std::pair<std::string, std::string>> r) { pr.set_value(std::move(r)); });
  });
  auto w = Get(fw);
  EXPECT_TRUE(w.ok()) << w.error().ToString();
  auto r = Get(fr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->first, msg.substr(0, msg.size() - 4));
  EXPECT_EQ(r->second, "tail");
  RunOn(loop(), [&] {
    hs.client = Internal("closed");
    hs.server = Internal("closed");
  });
}

// Test 7: the server requires a client certificate from CA X; the client presents one from
// CA Y. The server's handshake fails and says why.
TEST_F(AsyncIoTest, ClientCertificateFromWrongCaFailsVerification) {
  testing::TestCa ca_x("ca-x");
  testing::TestCa ca_y("ca-y");
  auto sctx = testing::ServerContext(ca_x.Issue("server"), ca_x);
  auto cctx = testing::ClientContext(ca_y.Issue("client"), ca_x);
  HandshakePair hs = Handshake(loop(), sctx.get(), cctx.get());
  ASSERT_FALSE(hs.server.ok());
  const std::string& msg = hs.server.error().message();
  std::printf("[ INFO ] server error: %s\n", hs.server.error().ToString().c_str());
  EXPECT_EQ(hs.server.error().code(), ErrorCode::kUnauthenticated);
  EXPECT_NE(msg.find("verif"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unable to get local issuer certificate"), std::string::npos) << msg;
  // In TLS 1.3 the client finishes before the server checks its certificate; if it did
  // complete, the server's alert surfaces on its first read.
  if (hs.client.ok()) {
    std::promise<Result<std::pair<std::string, std::string>>> pr;
    auto fr = pr.get_future();
    RunOn(loop(), [&] {
      AsyncReadMessage(
          loop(), **hs.client, 1024, 5s, [](std::string_view) -> ssize_t { return 0; },
          [&](Result<std::pair<std::string, std::string>> r) { pr.set_value(std::move(r)); });
    });
    auto r = Get(fr);
    ASSERT_FALSE(r.ok());
    std::printf("[ INFO ] client error: %s\n", r.error().ToString().c_str());
    EXPECT_NE(r.error().message().find("alert"), std::string::npos) << r.error().ToString();
    RunOn(loop(), [&] { hs.client = Internal("closed"); });
  } else {
    std::printf("[ INFO ] client error: %s\n", hs.client.error().ToString().c_str());
  }
}

TEST_F(AsyncIoTest, ServerCertificateFromWrongCaFailsOnClient) {
  testing::TestCa ca_x("ca-x");
  testing::TestCa ca_y("ca-y");
  auto sctx = testing::ServerContext(ca_y.Issue("server"), ca_x);
  auto cctx = testing::ClientContext(ca_x.Issue("client"), ca_x);
  HandshakePair hs = Handshake(loop(), sctx.get(), cctx.get());
  ASSERT_FALSE(hs.client.ok());
  EXPECT_EQ(hs.client.error().code(), ErrorCode::kUnauthenticated);
  EXPECT_NE(hs.client.error().message().find("certificate verif"), std::string::npos)
      << hs.client.error().ToString();
  EXPECT_FALSE(hs.server.ok());
}

// Reads a line ("...\n") message.
ssize_t ParseLine(std::string_view b) {
  size_t nl = b.find('\n');
  if (nl == std::string_view::npos) return b.size() > 64 ? -1 : 0;
  return static_cast<ssize_t>(nl + 1);
}

// Test 8: a peer sends "HELLO\n" + 100 bytes in one write; the line is consumed and the 100
// leftover bytes go to the next hop through RelayOptions::initial_a_to_b.
class LeftoverTest : public AsyncIoTest, public ::testing::WithParamInterface<testing::Wire> {};

TEST_P(LeftoverTest, LeftoversAfterPreambleAreForwardedIntact) {
  const bool tls = GetParam() == testing::Wire::kTls;
  testing::TestCa ca("ca");
  auto sctx = testing::ServerContext(ca.Issue("server"), ca);
  auto cctx = testing::ClientContext(ca.Issue("client"), ca);
  Listener sink;
  Listener front;  // where the preamble arrives (plain, or TLS from the hop)
  testing::SetNonBlocking(front.fd());
  std::unique_ptr<testing::RelayHop> hop;  // test client -> hop (plain -> TLS) -> front
  sockaddr_storage client_target = front.addr();
  if (tls) {
    testing::RelayHop::Config cfg;
    cfg.in = testing::Wire::kPlain;
    cfg.out = testing::Wire::kTls;
    cfg.target = front.addr();
    cfg.client_ctx = cctx.get();
    hop = std::make_unique<testing::RelayHop>(*group_, std::move(cfg));
    client_target = hop->addr();
  }
  std::string leftover = testing::Prng(8).Bytes(100);
  OwnedFd client = testing::ConnectTo(client_target);
  ASSERT_TRUE(client.valid());
  ASSERT_TRUE(testing::SendAll(client.get(), "HELLO\n" + leftover));
  ASSERT_EQ(::shutdown(client.get(), SHUT_WR), 0);

  OwnedFd front_conn = front.Accept();
  ASSERT_TRUE(front_conn.valid());
  std::promise<std::string> message_p;
  std::promise<RelayStats> stats_p;
  auto message_f = message_p.get_future();
  auto stats_f = stats_p.get_future();
  auto fail = [&](const Error& e) {
    ADD_FAILURE() << e.ToString();
    message_p.set_value("");
    stats_p.set_value(RelayStats{});
  };
  auto ep_holder = std::make_shared<std::unique_ptr<Endpoint>>();
  auto read_and_relay = [&, ep_holder] {
    AsyncReadMessage(
        loop(), **ep_holder, 4096, 5s, ParseLine,
        [&, ep_holder](Result<std::pair<std::string, std::string>> r) {
          if (!r.ok()) return fail(r.error());
          message_p.set_value(r->first);
          std::string rest = std::move(r->second);
          AsyncConnect(loop(), sink.addr(), 5s, [&, ep_holder, rest](Result<OwnedFd> fd) {
            if (!fd.ok()) return fail(fd.error());
            RelayOptions opts;
            opts.initial_a_to_b = rest;
            StartRelay(loop(), std::move(*ep_holder), Endpoint::Plain(std::move(*fd)),
                       std::move(opts), [&](const RelayStats& s) { stats_p.set_value(s); });
          });
        });
  };
  RunOn(loop(), [&] {
    if (!tls) {
      *ep_holder = Endpoint::Plain(std::move(front_conn));
      read_and_relay();
      return;
    }
    SslPtr ssl(SSL_new(sctx.get()));
    SSL_set_accept_state(ssl.get());
    AsyncTlsHandshake(loop(), std::move(front_conn), std::move(ssl), 5s,
                      [&, ep_holder](Result<std::unique_ptr<Endpoint>> ep) {
                        if (!ep.ok()) return fail(ep.error());
                        *ep_holder = std::move(*ep);
                        read_and_relay();
                      });
  });
  EXPECT_EQ(Get(message_f), "HELLO\n");
  OwnedFd sink_conn = sink.Accept();
  ASSERT_TRUE(sink_conn.valid());
  auto got = testing::RecvUntilEof(sink_conn.get());
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(got->size(), 100u);
  EXPECT_EQ(*got, leftover);
  sink_conn.Reset();  // lets the relay finish (b->a EOF)
  RelayStats stats = Get(stats_f);
  EXPECT_EQ(stats.a_to_b_bytes, 100u);
  EXPECT_FALSE(stats.a_truncated);
}

INSTANTIATE_TEST_SUITE_P(Wire, LeftoverTest,
                         ::testing::Values(testing::Wire::kPlain, testing::Wire::kTls),
                         [](const auto& tp) {
                           return tp.param == testing::Wire::kTls ? "Tls" : "Plain";
                         });

struct ReadCase {
  std::string sent;
  bool close_after;
  size_t max_bytes;
  ErrorCode want;
};

TEST_F(AsyncIoTest, ReadMessageErrors) {
  std::vector<ReadCase> cases = {
      {std::string(100, 'x'), false, 4096, ErrorCode::kInvalidArgument},  // parser says < 0
      {std::string(50, 'x'), false, 32, ErrorCode::kResourceExhausted},   // over max_bytes
      {"HEL", true, 4096, ErrorCode::kUnavailable},                       // EOF mid-message
      {"HEL", false, 4096, ErrorCode::kDeadlineExceeded},                 // never completes
  };
  for (const ReadCase& c : cases) {
    Listener listener;
    OwnedFd client = testing::ConnectTo(listener.addr());
    auto ep = std::make_shared<std::unique_ptr<Endpoint>>(Endpoint::Plain(listener.Accept()));
    ASSERT_TRUE(testing::SendAll(client.get(), c.sent));
    if (c.close_after) ::shutdown(client.get(), SHUT_WR);
    std::promise<Result<std::pair<std::string, std::string>>> p;
    auto f = p.get_future();
    RunOn(loop(), [&] {
      AsyncReadMessage(
          loop(), **ep, c.max_bytes, 300ms, ParseLine,
          [&](Result<std::pair<std::string, std::string>> r) { p.set_value(std::move(r)); });
    });
    auto r = Get(f);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), c.want) << r.error().ToString();
    RunOn(loop(), [&] { ep->reset(); });
  }
}

// Every pending operation completes exactly once when its loop stops.
TEST(AsyncIoStopTest, PendingOperationsCompleteWhenLoopStops) {
  auto group = LoopGroup::Start(1);
  ASSERT_TRUE(group.ok());
  EventLoop& loop = (*group)->at(0);
  Listener silent;
  OwnedFd fd = testing::ConnectTo(silent.addr());
  OwnedFd accepted = silent.Accept();
  testing::TestCa ca("ca");
  auto ctx = testing::ClientContext(ca.Issue("client"), ca);
  std::atomic<int> calls{0};
  std::string error;
  RunOn(loop, [&] {
    SslPtr ssl(SSL_new(ctx.get()));
    SSL_set_connect_state(ssl.get());
    AsyncTlsHandshake(loop, std::move(fd), std::move(ssl), 60s,
                      [&](Result<std::unique_ptr<Endpoint>> ep) {
                        ++calls;
                        if (!ep.ok()) error = ep.error().ToString();
                      });
  });
  (*group)->Stop();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_NE(error.find("event loop stopped"), std::string::npos) << error;
}

}  // namespace
}  // namespace sigil::dataplane
