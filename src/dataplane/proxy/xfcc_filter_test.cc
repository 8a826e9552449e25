// XfccFilter: one trustworthy x-forwarded-client-cert per request, whatever the client sent,
// however the bytes are split; upgrades decided by the application's answer; malformed
// requests fail the stream instead of passing unchecked.
#include "dataplane/proxy/xfcc_filter.h"

#include <gtest/gtest.h>

namespace sigil::dataplane {
namespace {

const std::string kValue = XfccValue("spiffe://td/web", std::string(64, 'a'), "spiffe://td/client");

// Feeds `in` in pieces of `step` bytes (0: all at once); returns what the application gets.
std::string FeedAll(XfccFilter& f, std::string_view in, size_t step = 0) {
  mux::ByteQueue out;
  size_t off = 0;
  for (int guard = 0; off < in.size() && guard < 100000; ++guard) {
    const size_t n = step == 0 ? in.size() - off : std::min(step, in.size() - off);
    off += f.ToLocal(in.substr(off, n), out);
    if (!f.Failure().empty()) break;
  }
  auto r = out.readable();
  return std::string(r.data(), r.size());
}

size_t Count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
  return n;
}

TEST(Xfcc, ValueFormat) {
  EXPECT_EQ(XfccValue("spiffe://td/web", "ab", "spiffe://td/c"),
            "By=spiffe://td/web;Hash=ab;URI=spiffe://td/c");
  EXPECT_EQ(XfccValue("spiffe://td/web", "", "spiffe://td/c"),
            "By=spiffe://td/web;URI=spiffe://td/c");
}

TEST(Xfcc, ForgedHeadersReplacedOnEveryPipelinedRequest) {
  const std::string in =
      "GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-Client-Cert: URI=spiffe://evil\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nx-forwarded-client-cert: a\r\n"
      "x-forwarded-client-cert: b\r\n\r\nhello"
      "GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
  for (size_t step : {size_t{0}, size_t{1}, size_t{7}}) {
    XfccFilter f(kValue);
    const std::string out = FeedAll(f, in, step);
    EXPECT_TRUE(f.Failure().empty()) << f.Failure();
    EXPECT_EQ(Count(out, "x-forwarded-client-cert: " + kValue + "\r\n"), 3u) << out;
    EXPECT_EQ(Count(out, "evil"), 0u);
    EXPECT_EQ(Count(out, "rded-Client-Cert"), 0u);            // the client's spelling is gone
    EXPECT_NE(out.find("\r\n\r\nhello"), std::string::npos);  // the body is untouched
    EXPECT_EQ(f.requests(), 3u);
  }
}

TEST(Xfcc, MalformedRequestFailsTheStream) {
  XfccFilter f(kValue);
  const std::string out = FeedAll(f, "GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n");
  EXPECT_FALSE(f.Failure().empty());
  EXPECT_EQ(out, "");  // nothing of the bad head reaches the application
}

TEST(Xfcc, SmugglingAttemptFailsTheStream) {
  XfccFilter f(kValue);
  FeedAll(f,
          "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_FALSE(f.Failure().empty());
}

TEST(Xfcc, UpgradeAcceptedBecomesOpaque) {
  XfccFilter f(kValue);
  mux::ByteQueue out;
  const std::string req =
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
  const std::string after = "GET /not-http HTTP/1.1\r\nx-forwarded-client-cert: raw\r\n\r\n";
  const std::string in = req + after;
  size_t taken = f.ToLocal(in, out);
  EXPECT_EQ(taken, req.size());  // paused after the upgrade request
  EXPECT_TRUE(
      f.FromLocal("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: upgrade\r\n\r\n"));
  taken += f.ToLocal(std::string_view(in).substr(taken), out);
  EXPECT_EQ(taken, in.size());
  auto r = out.readable();
  const std::string got(r.data(), r.size());
  EXPECT_NE(got.find(after), std::string::npos);  // relayed as is after the switch
}

TEST(Xfcc, UpgradeRefusedKeepsRewriting) {
  XfccFilter f(kValue);
  mux::ByteQueue out;
  const std::string req =
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
  const std::string next = "GET /b HTTP/1.1\r\nHost: x\r\nx-forwarded-client-cert: forged\r\n\r\n";
  const std::string in = req + next;
  size_t taken = f.ToLocal(in, out);
  EXPECT_TRUE(f.FromLocal("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
  taken += f.ToLocal(std::string_view(in).substr(taken), out);
  EXPECT_EQ(taken, in.size());
  auto r = out.readable();
  const std::string got(r.data(), r.size());
  EXPECT_EQ(Count(got, "forged"), 0u) << got;
  EXPECT_EQ(Count(got, "x-forwarded-client-cert: " + kValue), 2u) << got;
}

TEST(Xfcc, UnfollowableResponsesDuringAnUpgradeFailTheStream) {
  XfccFilter f(kValue);
  mux::ByteQueue out;
  f.ToLocal("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            out);
  EXPECT_TRUE(f.FromLocal("garbage that is not a response\r\n\r\n"));
  f.ToLocal("more", out);
  EXPECT_FALSE(f.Failure().empty());
}

}  // namespace
}  // namespace sigil::dataplane
