// Relay behaviour: echo of many sizes, half-close, RST propagation, idle timeout, splice mode,
// cross-thread Abort, TLS truncation, backpressure, and LoopGroup teardown with live relays.
// Every path runs over real loopback sockets and real OpenSSL peers.
#include "dataplane/relay/relay.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "dataplane/relay/async_io.h"
#include "dataplane/relay/test_util.h"

namespace sigil::dataplane {
namespace {

using namespace std::chrono_literals;
using testing::Listener;
using testing::RelayHop;
using testing::RunOn;
using testing::Wire;

// client -> [hop a] -> server, or client -> [hop a: plain->TLS] -> [hop b: TLS->plain] -> server.
struct Chain {
  std::unique_ptr<RelayHop> a, b;
  sockaddr_storage entry{};

  Chain(LoopGroup& group, Wire wire, const sockaddr_storage& server, SSL_CTX* sctx, SSL_CTX* cctx,
        RelayOptions options = {}) {
    if (wire == Wire::kPlain) {
      RelayHop::Config cfg;
      cfg.target = server;
      cfg.options = options;
      a = std::make_unique<RelayHop>(group, std::move(cfg));
      entry = a->addr();
      return;
    }
    RelayHop::Config cb;
    cb.in = Wire::kTls;
    cb.target = server;
    cb.server_ctx = sctx;
    cb.options = options;
    b = std::make_unique<RelayHop>(group, std::move(cb));
    RelayHop::Config ca;
    ca.out = Wire::kTls;
    ca.target = b->addr();
    ca.client_ctx = cctx;
    ca.options = options;
    a = std::make_unique<RelayHop>(group, std::move(ca));
    entry = a->addr();
  }
  std::vector<RelayHop*> hops() {
    std::vector<RelayHop*> out{a.get()};
    if (b) out.push_back(b.get());
    return out;
  }
};

class RelayTest : public ::testing::TestWithParam<Wire> {
 protected:
  void SetUp() override {
    auto g = LoopGroup::Start(2);
    ASSERT_TRUE(g.ok()) << g.error().ToString();
    group_ = std::move(*g);
  }
  void TearDown() override {
    if (group_) group_->Stop();
  }
  Chain MakeChain(const sockaddr_storage& server, RelayOptions options = {}) {
    return Chain(*group_, GetParam(), server, sctx_.get(), cctx_.get(), std::move(options));
  }

  testing::TestCa ca_{"relay-test-ca"};
  SslCtxPtr sctx_ = testing::ServerContext(ca_.Issue("server"), ca_);
  SslCtxPtr cctx_ = testing::ClientContext(ca_.Issue("client"), ca_);
  std::unique_ptr<LoopGroup> group_;
};

// Sends `data` (then SHUT_WR) on a thread while reading everything back.
Result<std::string> RoundTrip(const sockaddr_storage& to, const std::string& data,
                              std::chrono::milliseconds timeout = 20s) {
  OwnedFd fd = testing::ConnectTo(to);
  if (!fd.valid()) return Unavailable("connect failed");
  std::atomic<bool> sent{false};
  std::thread sender([&] {
    sent = testing::SendAll(fd.get(), data, timeout);
    ::shutdown(fd.get(), SHUT_WR);
  });
  auto got = testing::RecvUntilEof(fd.get(), timeout);
  sender.join();
  if (!sent) return Unavailable("send failed");
  return got;
}

// Test 1: plain echo through one relay on one loop, many sizes (sequential connections).
TEST(RelayEchoTest, PlainEchoManySizesOnOneLoop) {
  auto group = LoopGroup::Start(1);
  ASSERT_TRUE(group.ok());
  testing::EchoServer echo;
  RelayHop::Config cfg;
  cfg.target = echo.addr();
  RelayHop hop(**group, std::move(cfg));
  const std::vector<size_t> sizes = {0,     1,     2,     100,    4095,    4096,   16383,
                                     16384, 16385, 65537, 100000, 1 << 20, 5 << 20};
  testing::Prng prng(1);
  for (size_t size : sizes) {
    std::string data = prng.Bytes(size);
    auto got = RoundTrip(hop.addr(), data);
    ASSERT_TRUE(got.ok()) << "size " << size << ": " << got.error().ToString();
    ASSERT_EQ(got->size(), data.size()) << "size " << size;
    EXPECT_TRUE(*got == data) << "size " << size;
  }
  auto stats = hop.WaitFinished(sizes.size());
  ASSERT_EQ(stats.size(), sizes.size());
  uint64_t total = 0;
  for (const auto& s : stats) {
    EXPECT_EQ(s.error, "");
    EXPECT_EQ(s.a_to_b_bytes, s.b_to_a_bytes);
    total += s.a_to_b_bytes;
  }
  uint64_t want = 0;
  for (size_t s : sizes) want += s;
  EXPECT_EQ(total, want);
  EXPECT_TRUE(hop.setup_errors().empty());
  EXPECT_EQ(RelayBufferBytesInUse(), 0u);
}

// Test 4: the client sends its request and SHUT_WR; the server reads to EOF, then answers and
// closes; the client gets the whole answer.
TEST_P(RelayTest, HalfCloseCarriesResponseAfterRequestEof) {
  Listener server;
  std::string request = testing::Prng(2).Bytes(300 * 1000);
  std::string response = testing::Prng(3).Bytes(1 << 20);
  std::promise<std::string> server_got_p;
  auto server_got = server_got_p.get_future();
  std::thread server_thread([&] {
    OwnedFd conn = server.Accept();
    auto req = testing::RecvUntilEof(conn.get());
    server_got_p.set_value(req.ok() ? *req : "error: " + req.error().ToString());
    testing::SendAll(conn.get(), response);
  });
  Chain chain = MakeChain(server.addr());
  OwnedFd client = testing::ConnectTo(chain.entry);
  ASSERT_TRUE(client.valid());
  ASSERT_TRUE(testing::SendAll(client.get(), request));
  ASSERT_EQ(::shutdown(client.get(), SHUT_WR), 0);
  auto got = testing::RecvUntilEof(client.get());
  server_thread.join();
  std::string req = server_got.get();
  EXPECT_EQ(req.size(), request.size());
  EXPECT_TRUE(req == request);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(got->size(), response.size());
  EXPECT_TRUE(*got == response);
  for (RelayHop* hop : chain.hops()) {
    auto stats = hop->WaitFinished(1);
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_EQ(stats[0].error, "");
    EXPECT_EQ(stats[0].a_to_b_bytes, request.size());
    EXPECT_EQ(stats[0].b_to_a_bytes, response.size());
    EXPECT_FALSE(stats[0].a_truncated || stats[0].b_truncated);
    EXPECT_FALSE(stats[0].a_reset || stats[0].b_reset);
  }
}

// Test 5: the server aborts with an RST; the client sees ECONNRESET.
TEST_P(RelayTest, ServerResetPropagatesToClient) {
  Listener server;
  Chain chain = MakeChain(server.addr());
  OwnedFd client = testing::ConnectTo(chain.entry);
  ASSERT_TRUE(client.valid());
  ASSERT_TRUE(testing::SendAll(client.get(), "ping"));
  OwnedFd conn = server.Accept();
  ASSERT_TRUE(conn.valid());
  auto got = testing::RecvExactly(conn.get(), 4);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  linger lg{1, 0};
  ASSERT_EQ(::setsockopt(conn.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  conn.Reset();
  EXPECT_EQ(testing::WaitForError(client.get()), ECONNRESET);
  // The hop next to the server saw b reset; the first hop of a TLS chain sees its TLS side
  // (b) reset by the second hop's abort.
  for (RelayHop* hop : chain.hops()) {
    auto stats = hop->WaitFinished(1);
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_TRUE(stats[0].b_reset) << stats[0].error;
    EXPECT_FALSE(stats[0].a_reset);
    EXPECT_NE(stats[0].error.find("reset"), std::string::npos) << stats[0].error;
  }
}

TEST_P(RelayTest, ClientResetPropagatesToServer) {
  Listener server;
  Chain chain = MakeChain(server.addr());
  OwnedFd client = testing::ConnectTo(chain.entry);
  ASSERT_TRUE(testing::SendAll(client.get(), "ping"));
  OwnedFd conn = server.Accept();
  ASSERT_TRUE(testing::RecvExactly(conn.get(), 4).ok());
  linger lg{1, 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  client.Reset();
  EXPECT_EQ(testing::WaitForError(conn.get()), ECONNRESET);
  for (RelayHop* hop : chain.hops()) {
    auto stats = hop->WaitFinished(1);
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_TRUE(stats[0].a_reset) << stats[0].error;
  }
}

// Test 6: no bytes for idle_timeout aborts both sides; activity postpones it.
TEST_P(RelayTest, IdleTimeoutAbortsBothSides) {
  Listener server;
  RelayOptions opts;
  opts.idle_timeout = 200ms;
  Chain chain = MakeChain(server.addr(), opts);
  OwnedFd client = testing::ConnectTo(chain.entry);
  ASSERT_TRUE(client.valid());
  OwnedFd conn = server.Accept();
  ASSERT_TRUE(conn.valid());
  // Keep it busy for 500 ms: a byte every 50 ms must keep the relay alive.
  auto last_byte = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) {
    if (i > 0) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(testing::SendAll(client.get(), "x"));
    ASSERT_TRUE(testing::RecvExactly(conn.get(), 1).ok()) << "relay died while active";
    last_byte = std::chrono::steady_clock::now();  // every relay saw this byte before now
  }
  EXPECT_EQ(testing::WaitForError(client.get(), 5s), ECONNRESET);
  EXPECT_EQ(testing::WaitForError(conn.get(), 5s), ECONNRESET);
  auto elapsed = std::chrono::steady_clock::now() - last_byte;
  EXPECT_GE(elapsed, 150ms);
  EXPECT_LT(elapsed, 3s);
  // Every hop has the same timeout: the first to fire aborts, and a hop that had not fired
  // yet sees that abort as a reset of its neighbouring side.
  int timed_out = 0;
  for (RelayHop* hop : chain.hops()) {
    auto stats = hop->WaitFinished(1);
    ASSERT_EQ(stats.size(), 1u);
    if (stats[0].idle_timeout) {
      ++timed_out;
      EXPECT_EQ(stats[0].error, "idle timeout");
    } else {
      EXPECT_TRUE(stats[0].a_reset || stats[0].b_reset) << stats[0].error;
    }
    EXPECT_EQ(stats[0].a_to_b_bytes, 10u);
  }
  EXPECT_GE(timed_out, 1);
}

// Test 11: RelayHandle::Abort from the test thread.
TEST_P(RelayTest, AbortFromAnotherThread) {
  Listener server;
  Chain chain = MakeChain(server.addr());
  OwnedFd client = testing::ConnectTo(chain.entry);
  OwnedFd conn = server.Accept();
  ASSERT_TRUE(conn.valid());
  auto handles = chain.a->WaitStarted(1);
  ASSERT_EQ(handles.size(), 1u);
  handles[0]->Abort();
  handles[0]->Abort();  // twice is harmless
  EXPECT_EQ(testing::WaitForError(client.get()), ECONNRESET);
  auto stats = chain.a->WaitFinished(1);
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].error, "aborted");
  // The server side sees the reset too (through hop b for TLS).
  EXPECT_EQ(testing::WaitForError(conn.get()), ECONNRESET);
  handles[0]->Abort();  // after the end: no-op
}

// Backpressure: a server that does not read stalls the relay without growing its buffers.
TEST_P(RelayTest, BackpressureBoundsBuffers) {
  Listener server;
  RelayOptions opts;
  opts.buffer_bytes = 16 * 1024;
  Chain chain = MakeChain(server.addr(), opts);
  OwnedFd client = testing::ConnectTo(chain.entry);
  OwnedFd conn = server.Accept();
  ASSERT_TRUE(conn.valid());
  std::string data = testing::Prng(4).Bytes(32 << 20);
  std::atomic<bool> sent{false};
  std::thread sender([&] {
    sent = testing::SendAll(client.get(), data, 30s);
    ::shutdown(client.get(), SHUT_WR);
  });
  std::this_thread::sleep_for(300ms);  // the server is not reading
  size_t hops = chain.hops().size();
  EXPECT_LE(RelayBufferBytesInUse(), hops * 2 * opts.buffer_bytes);
  EXPECT_FALSE(sent.load()) << "32 MiB should not fit in socket buffers";
  auto got = testing::RecvUntilEof(conn.get(), 30s);
  sender.join();
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(got->size(), data.size());
  EXPECT_TRUE(*got == data);
}

INSTANTIATE_TEST_SUITE_P(Wire, RelayTest, ::testing::Values(Wire::kPlain, Wire::kTls),
                         [](const auto& tp) { return tp.param == Wire::kTls ? "Tls" : "Plain"; });

// Test 10: splice mode, plain <-> plain, integrity and half-close.
TEST(RelaySpliceTest, SpliceModeIntegrity) {
  auto group = LoopGroup::Start(1);
  ASSERT_TRUE(group.ok());
  testing::EchoServer echo;
  for (size_t buffer : {size_t{4096}, size_t{64 * 1024}}) {
    RelayHop::Config cfg;
    cfg.target = echo.addr();
    cfg.options.use_splice = true;
    cfg.options.buffer_bytes = buffer;
    cfg.options.initial_a_to_b = "prefix:";
    RelayHop hop(**group, std::move(cfg));
    testing::Prng prng(5);
    const std::vector<size_t> sizes = {0, 1, 4096, 100000, 16 << 20};
    for (size_t size : sizes) {
      std::string data = prng.Bytes(size);
      auto got = RoundTrip(hop.addr(), data);
      ASSERT_TRUE(got.ok()) << got.error().ToString();
      ASSERT_EQ(got->size(), data.size() + 7) << "size " << size << " buffer " << buffer;
      EXPECT_TRUE(*got == "prefix:" + data) << "size " << size;
    }
    auto stats = hop.WaitFinished(sizes.size());
    ASSERT_EQ(stats.size(), sizes.size());
    for (const auto& s : stats) {
      EXPECT_TRUE(s.spliced);
      EXPECT_EQ(s.error, "");
      EXPECT_EQ(s.a_to_b_bytes, s.b_to_a_bytes);
    }
  }
  EXPECT_EQ(RelayBufferBytesInUse(), 0u);  // splice never touches user-space buffers
}

// A TLS peer that closes TCP without close_notify: EOF, recorded as truncation.
TEST(RelayTlsTest, TruncationWithoutCloseNotifyIsRecorded) {
  auto group = LoopGroup::Start(1);
  ASSERT_TRUE(group.ok());
  EventLoop& loop = (*group)->at(0);
  testing::TestCa ca("ca");
  auto sctx = testing::ServerContext(ca.Issue("server"), ca);
  auto cctx = testing::ClientContext(ca.Issue("client"), ca);
  Listener server;
  RelayHop::Config cfg;
  cfg.in = Wire::kTls;
  cfg.server_ctx = sctx.get();
  cfg.target = server.addr();
  RelayHop hop(**group, std::move(cfg));
  // Our own TLS client on the loop.
  std::promise<Result<std::unique_ptr<Endpoint>>> p;
  auto f = p.get_future();
  OwnedFd fd = testing::ConnectTo(hop.addr());
  RunOn(loop, [&] {
    SslPtr ssl(SSL_new(cctx.get()));
    SSL_set_connect_state(ssl.get());
    AsyncTlsHandshake(loop, std::move(fd), std::move(ssl), 5s,
                      [&](Result<std::unique_ptr<Endpoint>> ep) { p.set_value(std::move(ep)); });
  });
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  auto ep = f.get();
  ASSERT_TRUE(ep.ok()) << ep.error().ToString();
  std::promise<Result<void>> wp;
  auto wf = wp.get_future();
  RunOn(loop,
        [&] { AsyncWriteAll(loop, **ep, "data", 5s, [&](Result<void> r) { wp.set_value(r); }); });
  ASSERT_EQ(wf.wait_for(10s), std::future_status::ready);
  ASSERT_TRUE(wf.get().ok());
  OwnedFd conn = server.Accept();
  ASSERT_TRUE(testing::RecvExactly(conn.get(), 4).ok());
  // TCP FIN without close_notify. (shutdown, not close: closing with the server's unread
  // session tickets in the receive queue would send an RST instead of a FIN.)
  RunOn(loop, [&] { ::shutdown((*ep)->fd(), SHUT_WR); });
  auto rest = testing::RecvUntilEof(conn.get());  // the relay forwards EOF
  if (!rest.ok()) {
    auto early = hop.WaitFinished(1, 1s);
    FAIL() << rest.error().ToString()
           << "; relay: " << (early.empty() ? "running" : early[0].error);
  }
  EXPECT_EQ(*rest, "");
  conn.Reset();
  auto stats = hop.WaitFinished(1);
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_TRUE(stats[0].a_truncated);
  EXPECT_FALSE(stats[0].b_truncated);
  RunOn(loop, [&] { ep = Internal("closed"); });
}

// Destroying a LoopGroup with live relays aborts them (RST) and reports each once.
TEST(RelayTeardownTest, DestroyingLoopGroupAbortsLiveRelays) {
  testing::EchoServer echo;
  auto group = LoopGroup::Start(2);
  ASSERT_TRUE(group.ok());
  std::shared_ptr<RelayHop::State> state;
  std::vector<OwnedFd> clients;
  std::vector<std::shared_ptr<RelayHandle>> handles;
  constexpr int kConns = 20;
  {
    RelayHop::Config cfg;
    cfg.target = echo.addr();
    RelayHop hop(**group, std::move(cfg));
    state = hop.state();
    for (int i = 0; i < kConns; ++i) {
      clients.push_back(testing::ConnectTo(hop.addr()));
      ASSERT_TRUE(testing::SendAll(clients.back().get(), "hi"));
      ASSERT_TRUE(testing::RecvExactly(clients.back().get(), 2).ok());
    }
    handles = hop.WaitStarted(kConns);
    ASSERT_EQ(handles.size(), static_cast<size_t>(kConns));
    EXPECT_EQ(LiveRelays(), static_cast<size_t>(kConns));
  }
  group->reset();
  EXPECT_EQ(LiveRelays(), 0u);
  for (auto& c : clients) EXPECT_EQ(testing::WaitForError(c.get()), ECONNRESET);
  for (auto& h : handles) h->Abort();  // the loop is gone: must be a safe no-op
  std::lock_guard lock(state->mu);
  ASSERT_EQ(state->finished.size(), static_cast<size_t>(kConns));
  for (const auto& s : state->finished) EXPECT_EQ(s.error, "event loop stopped");
}

}  // namespace
}  // namespace sigil::dataplane
