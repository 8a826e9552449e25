// The kernel-TLS endpoint kind on this host: the control-record parser (pure), and the record
// layer choice after the handshake (MoveRecordLayer / SwitchToKernelTls) against real OpenSSL
// peers. Where the kernel has no tls ULP (this development host) the agent must end up on its
// own record layer; where it has one, on kTLS. Either way data must flow afterwards. The kTLS
// I/O itself (control records, splice relay, half-close flush) is proven in the QEMU guest
// (tests/vm/relay_guest_test.cc, ctest vm.ktls).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <string>
#include <vector>

#include "dataplane/ktls/test_tls_pair.h"
#include "dataplane/relay/endpoint.h"
#include "dataplane/relay/ktls.h"
#include "dataplane/relay/ktls_endpoint.h"
#include "dataplane/relay/record_layer.h"

namespace sigil::dataplane {
namespace {

using namespace std::chrono_literals;
namespace kt = ktls::testing;
using Clock = std::chrono::steady_clock;

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// ---- KtlsControlParser ----

std::vector<uint8_t> Ticket(uint32_t body_len) {
  // (Sized first: GCC 12 -O3 misreads resize() after an initializer list as out of bounds.)
  std::vector<uint8_t> m(4 + body_len, 0xab);
  m[0] = 4;
  m[1] = static_cast<uint8_t>(body_len >> 16);
  m[2] = static_cast<uint8_t>(body_len >> 8);
  m[3] = static_cast<uint8_t>(body_len);
  return m;
}

TEST(KtlsControlParserTest, TicketsWholeAndInPiecesAreSkipped) {
  KtlsControlParser p;
  std::vector<uint8_t> two = Ticket(200);
  std::vector<uint8_t> second = Ticket(37);
  two.insert(two.end(), second.begin(), second.end());
  EXPECT_EQ(p.Feed(kTlsContentHandshake, two).status, IoStatus::kOk);
  EXPECT_EQ(p.tickets(), 2u);
  EXPECT_FALSE(p.mid_message());
  // The same message delivered one byte at a time (a reader with a tiny buffer).
  std::vector<uint8_t> t = Ticket(50);
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(p.Feed(kTlsContentHandshake, {&t[i], 1}).status, IoStatus::kOk);
    EXPECT_EQ(p.mid_message(), i + 1 < t.size()) << i;
  }
  EXPECT_EQ(p.tickets(), 3u);
}

TEST(KtlsControlParserTest, CloseNotifyIsEofOtherAlertsReset) {
  KtlsControlParser a;
  const uint8_t close_notify[] = {1, 0};
  EXPECT_EQ(a.Feed(kTlsContentAlert, {close_notify, 1}).status, IoStatus::kOk);
  EXPECT_TRUE(a.mid_message());
  EXPECT_EQ(a.Feed(kTlsContentAlert, {close_notify + 1, 1}).status, IoStatus::kEof);
  KtlsControlParser b;
  const uint8_t bad_record_mac[] = {2, 20};
  IoResult r = b.Feed(kTlsContentAlert, bad_record_mac);
  EXPECT_EQ(r.status, IoStatus::kReset);
  EXPECT_NE(r.error.find("alert 20"), std::string::npos) << r.error;
}

TEST(KtlsControlParserTest, KeyUpdateAndOtherMessagesAndTypesAreErrors) {
  const uint8_t key_update[] = {24, 0, 0, 1, 0};
  IoResult r = KtlsControlParser().Feed(kTlsContentHandshake, key_update);
  EXPECT_EQ(r.status, IoStatus::kError);
  EXPECT_NE(r.error.find("KeyUpdate"), std::string::npos) << r.error;
  const uint8_t finished[] = {20, 0, 0, 0};
  EXPECT_EQ(KtlsControlParser().Feed(kTlsContentHandshake, finished).status, IoStatus::kError);
  const uint8_t ccs[] = {1};
  EXPECT_EQ(KtlsControlParser().Feed(20, ccs).status, IoStatus::kError);
  // A handshake message interrupted by an alert (TLS 1.3 forbids interleaving).
  KtlsControlParser p;
  std::vector<uint8_t> t = Ticket(10);
  EXPECT_EQ(p.Feed(kTlsContentHandshake, {t.data(), 6}).status, IoStatus::kOk);
  const uint8_t alert[] = {1, 0};
  EXPECT_EQ(p.Feed(kTlsContentAlert, alert).status, IoStatus::kError);
}

// ---- the record layer choice after the handshake ----

bool WaitFd(int fd, short events, Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, static_cast<int>(left.count())) == 1;
}

Result<std::string> EpReadExactly(Endpoint& ep, size_t n) {
  auto deadline = Clock::now() + 10s;
  std::string out;
  std::array<char, 4096> buf;
  while (out.size() < n) {
    IoResult r = ep.Read({buf.data(), std::min(buf.size(), n - out.size())});
    if (r.status == IoStatus::kOk) {
      out.append(buf.data(), r.bytes);
    } else if (r.status == IoStatus::kWantRead || r.status == IoStatus::kWantWrite) {
      if (!WaitFd(ep.fd(), r.status == IoStatus::kWantRead ? POLLIN : POLLOUT, deadline)) {
        return Internal("read timed out");
      }
    } else {
      return Internal("read failed: " + r.error);
    }
  }
  return out;
}

Result<void> EpWriteAll(Endpoint& ep, std::string_view data) {
  auto deadline = Clock::now() + 10s;
  while (!data.empty()) {
    IoResult r = ep.Write(data);
    if (r.status == IoStatus::kOk) {
      data.remove_prefix(r.bytes);
    } else if (r.status == IoStatus::kWantRead || r.status == IoStatus::kWantWrite) {
      if (!WaitFd(ep.fd(), r.status == IoStatus::kWantRead ? POLLIN : POLLOUT, deadline)) {
        return Internal("write timed out");
      }
    } else {
      return Internal("write failed: " + r.error);
    }
  }
  return Ok();
}

// Data both ways between `ep` (the switched server side) and the OpenSSL client.
void ExpectDataFlows(Endpoint& ep, SSL* client) {
  ASSERT_TRUE(kt::SslWriteAll(client, Bytes("ping after switch")).ok());
  auto got = EpReadExactly(ep, 17);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, "ping after switch");
  ASSERT_TRUE(EpWriteAll(ep, "pong").ok());
  std::array<uint8_t, 4> pong{};
  ASSERT_TRUE(kt::SslReadExact(client, pong).ok());
  EXPECT_EQ(std::string(pong.begin(), pong.end()), "pong");
}

// What the proxy does (Proxy::Impl::SwitchRecordLayer): kTLS where available, else records.
TEST(MoveRecordLayerTest, PicksKernelTlsWhereAvailableElseRecords) {
  auto pair = kt::MakeTlsPair({});
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  std::unique_ptr<Endpoint> ep =
      Endpoint::Tls(std::move(pair->server.fd), std::move(pair->server.ssl));
  std::string why;
  const bool available = KernelTlsAvailable();
  RecordPath path = MoveRecordLayer(*ep, available, &why);
  EXPECT_EQ(path, available ? RecordPath::kKernelTls : RecordPath::kRecords)
      << RecordPathName(path) << " " << why;
  EXPECT_EQ(ep->ssl(), nullptr);
  EXPECT_EQ(ep->is_ktls(), available);
  EXPECT_EQ(ep->is_records(), !available);
  EXPECT_EQ(ep->can_splice(), available);  // records never splice
  EXPECT_TRUE(ep->is_tls());
  ExpectDataFlows(*ep, pair->client.ssl.get());
}

TEST(MoveRecordLayerTest, WithoutKernelTlsGoesToRecords) {
  auto pair = kt::MakeTlsPair({});
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  std::unique_ptr<Endpoint> ep =
      Endpoint::Tls(std::move(pair->server.fd), std::move(pair->server.ssl));
  EXPECT_FALSE(ep->can_splice());
  EXPECT_EQ(MoveRecordLayer(*ep, /*kernel_tls=*/false), RecordPath::kRecords);
  EXPECT_TRUE(ep->is_records());
  ExpectDataFlows(*ep, pair->client.ssl.get());
}

TEST(MoveRecordLayerTest, StaysOnOpensslWhileRecordsArePending) {
  auto pair = kt::MakeTlsPair({});
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  SSL* client = pair->client.ssl.get();
  std::unique_ptr<Endpoint> ep =
      Endpoint::Tls(std::move(pair->server.fd), std::move(pair->server.ssl));
  ASSERT_TRUE(kt::SslWriteAll(client, Bytes("0123456789")).ok());
  auto first = EpReadExactly(*ep, 1);  // OpenSSL now holds 9 unread bytes
  ASSERT_TRUE(first.ok());
  std::string why;
  EXPECT_EQ(MoveRecordLayer(*ep, KernelTlsAvailable(), &why), RecordPath::kOpenSsl);
  EXPECT_NE(why.find("buffered"), std::string::npos) << why;
  EXPECT_NE(ep->ssl(), nullptr);
  auto rest = EpReadExactly(*ep, 9);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(*first + *rest, "0123456789");
}

// SwitchToKernelTls directly: on a kernel without the tls ULP it reports Unavailable and the
// connection carries on through OpenSSL; with the ULP it switches.
TEST(SwitchToKernelTlsTest, UnavailableKeepsOpensslWorkingElseSwitches) {
  auto pair = kt::MakeTlsPair({});
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  std::unique_ptr<Endpoint> ep =
      Endpoint::Tls(std::move(pair->server.fd), std::move(pair->server.ssl));
  Result<void> r = ep->SwitchToKernelTls();
  if (KernelTlsAvailable()) {
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_TRUE(ep->is_ktls());
    ASSERT_NE(ep->ktls(), nullptr);
    EXPECT_EQ(ep->ktls()->cipher(), ktls::KtlsCipher::kAes128Gcm);
  } else {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable) << r.error().ToString();
    EXPECT_FALSE(ep->closed());
    EXPECT_NE(ep->ssl(), nullptr);
    EXPECT_FALSE(ep->is_ktls());
    // The keys were exported for the kernel: a second export is refused.
    EXPECT_FALSE(ep->SwitchToRecords().ok());
  }
  ExpectDataFlows(*ep, pair->client.ssl.get());
}

TEST(SwitchToKernelTlsTest, RefusedOnPlainEndpoint) {
  auto pair = ktls::ConnectedLoopbackPair();
  ASSERT_TRUE(pair.ok());
  std::unique_ptr<Endpoint> ep = Endpoint::Plain(std::move(pair->first));
  auto r = ep->SwitchToKernelTls();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(ep->can_splice());
  EXPECT_FALSE(ep->is_tls());
}

}  // namespace
}  // namespace sigil::dataplane
