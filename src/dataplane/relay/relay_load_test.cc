// Relay at scale: 1 GiB integrity through plain->TLS->plain (SHA-256 at both ends, MB/s
// printed), 1,000 concurrent relayed connections over two loops, and the memory held by
// 1,000 idle relays.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <poll.h>

#include <cinttypes>
#include <future>
#include <thread>

#include "dataplane/relay/relay.h"
#include "dataplane/relay/test_util.h"

namespace sigil::dataplane {
namespace {

using namespace std::chrono_literals;
using testing::Listener;
using testing::RelayHop;
using testing::Wire;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

std::string Hex(const unsigned char* md, unsigned len) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

enum class Mode { kTlsChain, kPlain, kSplice };

struct IntegrityCase {
  Mode mode;
  size_t bytes;
  const char* name;
};

class IntegrityTest : public ::testing::TestWithParam<IntegrityCase> {};

// Test 2 (and the same pipeline plain / spliced for comparison): a client streams pseudo-random
// bytes through the relays to a server that hashes them; both SHA-256 digests must match.
TEST_P(IntegrityTest, StreamHashesMatch) {
  const IntegrityCase& c = GetParam();
  const size_t total = kSanitized ? c.bytes / 4 : c.bytes;
  auto group = LoopGroup::Start(2);
  ASSERT_TRUE(group.ok());
  testing::TestCa ca("ca");
  auto sctx = testing::ServerContext(ca.Issue("server"), ca);
  auto cctx = testing::ClientContext(ca.Issue("client"), ca);
  Listener server;

  std::promise<std::string> server_digest_p;
  auto server_digest = server_digest_p.get_future();
  std::thread server_thread([&] {
    OwnedFd conn = server.Accept(30s);
    EvpMdCtxPtr md(EVP_MD_CTX_new());
    EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
    std::string buf(1 << 20, '\0');
    size_t got = 0;
    for (;;) {
      pollfd p{conn.get(), POLLIN, 0};
      if (::poll(&p, 1, 60'000) != 1) break;
      ssize_t n = ::recv(conn.get(), buf.data(), buf.size(), 0);
      if (n <= 0) break;
      EVP_DigestUpdate(md.get(), buf.data(), static_cast<size_t>(n));
      got += static_cast<size_t>(n);
    }
    unsigned char out[32];
    unsigned len = 0;
    EVP_DigestFinal_ex(md.get(), out, &len);
    std::string hex = Hex(out, len);
    testing::SendAll(conn.get(), hex);
    server_digest_p.set_value(hex + "/" + std::to_string(got));
  });

  std::unique_ptr<RelayHop> hop_a, hop_b;
  if (c.mode == Mode::kTlsChain) {
    RelayHop::Config cb;
    cb.in = Wire::kTls;
    cb.server_ctx = sctx.get();
    cb.target = server.addr();
    hop_b = std::make_unique<RelayHop>(**group, std::move(cb));
    RelayHop::Config ca_cfg;
    ca_cfg.out = Wire::kTls;
    ca_cfg.client_ctx = cctx.get();
    ca_cfg.target = hop_b->addr();
    hop_a = std::make_unique<RelayHop>(**group, std::move(ca_cfg));
  } else {
    RelayHop::Config cfg;
    cfg.target = server.addr();
    cfg.options.use_splice = c.mode == Mode::kSplice;
    hop_a = std::make_unique<RelayHop>(**group, std::move(cfg));
  }

  OwnedFd client = testing::ConnectTo(hop_a->addr());
  ASSERT_TRUE(client.valid());
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
  testing::Prng prng(42);
  std::string chunk(1 << 20, '\0');
  auto start = std::chrono::steady_clock::now();
  size_t sent = 0;
  bool ok = true;
  while (sent < total && ok) {
    size_t n = std::min(chunk.size(), total - sent);
    prng.Fill(chunk.data(), n);
    EVP_DigestUpdate(md.get(), chunk.data(), n);
    ok = testing::SendAll(client.get(), std::string_view(chunk.data(), n), 60s);
    sent += n;
    ASSERT_LT(std::chrono::steady_clock::now() - start, 240s) << "stream too slow";
  }
  ASSERT_TRUE(ok) << "send failed after " << sent << " bytes";
  ::shutdown(client.get(), SHUT_WR);
  auto digest = testing::RecvUntilEof(client.get(), 120s);
  auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  server_thread.join();
  unsigned char out[32];
  unsigned len = 0;
  EVP_DigestFinal_ex(md.get(), out, &len);
  std::string client_hex = Hex(out, len);
  ASSERT_TRUE(digest.ok()) << digest.error().ToString();
  EXPECT_EQ(*digest, client_hex);
  EXPECT_EQ(server_digest.get(), client_hex + "/" + std::to_string(total));
  std::printf("[ INFO ] %s: %zu MiB in %.2f s = %.0f MB/s (sha256 %s...)\n", c.name, total >> 20,
              elapsed, static_cast<double>(total) / elapsed / 1e6,
              client_hex.substr(0, 16).c_str());
  for (RelayHop* hop : {hop_a.get(), hop_b.get()}) {
    if (hop == nullptr) continue;
    auto stats = hop->WaitFinished(1);
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_EQ(stats[0].error, "");
    EXPECT_EQ(stats[0].a_to_b_bytes, total);
    EXPECT_EQ(stats[0].b_to_a_bytes, 64u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Relay, IntegrityTest,
    ::testing::Values(IntegrityCase{Mode::kTlsChain, size_t{1} << 30, "PlainTlsPlain1GiB"},
                      IntegrityCase{Mode::kPlain, size_t{1} << 30, "Plain1GiB"},
                      IntegrityCase{Mode::kSplice, size_t{1} << 30, "Splice1GiB"}),
    [](const auto& tp) { return std::string(tp.param.name); });

// Drives `n` echo clients concurrently with poll(): each sends `per_conn` unique bytes and
// expects them back. Returns the number of connections that got exactly their bytes.
size_t RunConcurrentEchoClients(const sockaddr_storage& to, size_t n, size_t per_conn,
                                std::vector<OwnedFd>& keep) {
  struct Client {
    OwnedFd fd;
    std::string out, expect, got;
    size_t sent = 0;
  };
  std::vector<Client> clients(n);
  testing::Prng prng(9);
  for (size_t i = 0; i < n; ++i) {
    clients[i].fd = testing::ConnectTo(to);
    if (!clients[i].fd.valid()) return 0;
    testing::SetNonBlocking(clients[i].fd.get());
    clients[i].out = prng.Bytes(per_conn);
    clients[i].expect = clients[i].out;
  }
  auto deadline = std::chrono::steady_clock::now() + 60s;
  size_t complete = 0;
  std::vector<pollfd> pfds(n);
  std::vector<char> buf(65536);
  while (complete < n && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < n; ++i) {
      Client& c = clients[i];
      short ev = 0;
      if (c.sent < c.out.size()) ev |= POLLOUT;
      if (c.got.size() < c.expect.size()) ev |= POLLIN;
      pfds[i] = {ev != 0 ? c.fd.get() : -1, ev, 0};
    }
    if (::poll(pfds.data(), n, 1000) < 0) break;
    for (size_t i = 0; i < n; ++i) {
      Client& c = clients[i];
      if (pfds[i].revents & POLLOUT) {
        ssize_t w = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (w > 0) c.sent += static_cast<size_t>(w);
      }
      if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t r = ::recv(c.fd.get(), buf.data(), buf.size(), 0);
        if (r > 0) {
          c.got.append(buf.data(), static_cast<size_t>(r));
          if (c.got.size() >= c.expect.size()) ++complete;
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
          c.got += "<closed>";  // never equals expect
          ++complete;
        }
      }
    }
  }
  size_t correct = 0;
  for (Client& c : clients) {
    if (c.got == c.expect) ++correct;
    keep.push_back(std::move(c.fd));
  }
  return correct;
}

class ConcurrencyTest : public ::testing::TestWithParam<Wire> {};

// Test 3: 1,000 concurrent relayed connections over a LoopGroup of 2 loops.
TEST_P(ConcurrencyTest, ThousandConcurrentEchoes) {
  constexpr size_t kConns = 1000;
  testing::RaiseFdLimit(16384);
  auto group = LoopGroup::Start(2);
  ASSERT_TRUE(group.ok());
  testing::TestCa ca("ca");
  auto sctx = testing::ServerContext(ca.Issue("server"), ca);
  auto cctx = testing::ClientContext(ca.Issue("client"), ca);
  testing::EchoServer echo;
  std::unique_ptr<RelayHop> hop_a, hop_b;
  if (GetParam() == Wire::kTls) {
    RelayHop::Config cb;
    cb.in = Wire::kTls;
    cb.server_ctx = sctx.get();
    cb.target = echo.addr();
    hop_b = std::make_unique<RelayHop>(**group, std::move(cb));
    RelayHop::Config ca_cfg;
    ca_cfg.out = Wire::kTls;
    ca_cfg.client_ctx = cctx.get();
    ca_cfg.target = hop_b->addr();
    hop_a = std::make_unique<RelayHop>(**group, std::move(ca_cfg));
  } else {
    RelayHop::Config cfg;
    cfg.target = echo.addr();
    hop_a = std::make_unique<RelayHop>(**group, std::move(cfg));
  }
  size_t hops = hop_b ? 2 : 1;
  auto start = std::chrono::steady_clock::now();
  std::vector<OwnedFd> clients;
  size_t correct = RunConcurrentEchoClients(hop_a->addr(), kConns, 4096 + 123, clients);
  auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(correct, kConns);
  // All of them are open at once.
  EXPECT_EQ(LiveRelays(), kConns * hops);
  EXPECT_EQ(echo.accepted(), kConns);
  std::printf("[ INFO ] %zu concurrent connections (%zu relays) echoed in %.2f s\n", kConns,
              kConns * hops, elapsed);
  for (auto& fd : clients) ::shutdown(fd.get(), SHUT_WR);
  for (RelayHop* hop : {hop_a.get(), hop_b.get()}) {
    if (hop == nullptr) continue;
    auto stats = hop->WaitFinished(kConns, 60s);
    ASSERT_EQ(stats.size(), kConns);
    size_t clean = 0;
    for (const auto& s : stats) clean += s.error.empty() ? 1 : 0;
    EXPECT_EQ(clean, kConns);
    EXPECT_TRUE(hop->setup_errors().empty());
  }
  EXPECT_EQ(RelayBufferBytesInUse(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Wire, ConcurrencyTest, ::testing::Values(Wire::kPlain, Wire::kTls),
                         [](const auto& tp) { return tp.param == Wire::kTls ? "Tls" : "Plain"; });

class IdleMemoryTest : public ::testing::TestWithParam<Wire> {};

// Test 9: 1,000 idle relayed connections (each after one small exchange each way) hold no
// relay buffers; RelayBufferBytesInUse and the RSS delta per connection are printed.
TEST_P(IdleMemoryTest, IdleRelaysHoldNoBuffers) {
  constexpr size_t kConns = 1000;
  testing::RaiseFdLimit(16384);
  auto group = LoopGroup::Start(2);
  ASSERT_TRUE(group.ok());
  testing::TestCa ca("ca");
  auto sctx = testing::ServerContext(ca.Issue("server"), ca);
  auto cctx = testing::ClientContext(ca.Issue("client"), ca);
  Listener sink;
  std::unique_ptr<RelayHop> hop_a, hop_b;
  if (GetParam() == Wire::kTls) {
    RelayHop::Config cb;
    cb.in = Wire::kTls;
    cb.server_ctx = sctx.get();
    cb.target = sink.addr();
    hop_b = std::make_unique<RelayHop>(**group, std::move(cb));
    RelayHop::Config ca_cfg;
    ca_cfg.out = Wire::kTls;
    ca_cfg.client_ctx = cctx.get();
    ca_cfg.target = hop_b->addr();
    hop_a = std::make_unique<RelayHop>(**group, std::move(ca_cfg));
  } else {
    RelayHop::Config cfg;
    cfg.target = sink.addr();
    hop_a = std::make_unique<RelayHop>(**group, std::move(cfg));
  }
  std::vector<OwnedFd> clients, servers;
  clients.reserve(kConns + 8);
  servers.reserve(kConns + 8);
  const std::string ping(100, 'p'), pong(100, 'q');
  auto exchange = [&] {
    clients.push_back(testing::ConnectTo(hop_a->addr()));
    servers.push_back(sink.Accept());
    return clients.back().valid() && servers.back().valid() &&
           testing::SendAll(clients.back().get(), ping) &&
           testing::RecvExactly(servers.back().get(), ping.size()).ok() &&
           testing::SendAll(servers.back().get(), pong) &&
           testing::RecvExactly(clients.back().get(), pong.size()).ok();
  };
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(exchange());  // warm up allocator arenas
  std::this_thread::sleep_for(100ms);
  size_t rss0 = testing::RssBytes();
  size_t heap0 = testing::HeapInUseBytes();
  for (size_t i = 0; i < kConns; ++i) ASSERT_TRUE(exchange()) << "connection " << i;
  std::this_thread::sleep_for(200ms);
  size_t rss1 = testing::RssBytes();
  double heap_per_conn =
      (static_cast<double>(testing::HeapInUseBytes()) - static_cast<double>(heap0)) / kConns;
  size_t buffers = RelayBufferBytesInUse();
  size_t hops = hop_b ? 2 : 1;
  EXPECT_EQ(LiveRelays(), (kConns + 8) * hops);
  double rss_per_conn = (static_cast<double>(rss1) - static_cast<double>(rss0)) / kConns;
  std::printf(
      "[ INFO ] %s: %zu idle relayed connections (%zu relays): relay buffers %zu bytes "
      "(%.1f per connection), RSS delta %.0f bytes and live heap delta %.0f bytes per "
      "connection%s\n",
      GetParam() == Wire::kTls ? "plain->TLS->plain" : "plain", kConns, kConns * hops, buffers,
      static_cast<double>(buffers) / kConns, rss_per_conn, heap_per_conn,
      kSanitized ? " (ASan build: inflated)" : "");
  EXPECT_LT(buffers / kConns, 10u * 1024u);
  EXPECT_EQ(buffers, 0u);
  if (!kSanitized && GetParam() == Wire::kPlain) {
    // Our whole per-connection footprint (relay state, endpoint, epoll registration, timer).
    EXPECT_LT(rss_per_conn, 10.0 * 1024);
  }
}

INSTANTIATE_TEST_SUITE_P(Wire, IdleMemoryTest, ::testing::Values(Wire::kPlain, Wire::kTls),
                         [](const auto& tp) { return tp.param == Wire::kTls ? "Tls" : "Plain"; });

}  // namespace
}  // namespace sigil::dataplane
