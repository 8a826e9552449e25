#include "dataplane/protocol/preamble.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace sigil::dataplane {
namespace {

TEST(Destination, ParseAndPrintRoundTrip) {
  for (const char* text : {"10.0.0.2:8080", "[2001:db8::1]:443", "[::1]:1", "0.0.0.0:65535"}) {
    auto d = Destination::Parse(text);
    ASSERT_TRUE(d.ok()) << text << ": " << d.error().ToString();
    EXPECT_EQ(d->str(), text);
    auto back = Destination::FromSockaddr(d->ToSockaddr());
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, *d);
  }
}

TEST(Destination, RejectsBadInput) {
  for (const char* text :
       {"", "10.0.0.2", "10.0.0.2:0", "10.0.0.2:65536", "10.0.0.2:080", "host.example:80",
        "2001:db8::1:443", "[10.0.0.1]:80", "[::1]80", "[::1]:", "10.0.0.2:+80", "10.0.0.256:80"}) {
    EXPECT_FALSE(Destination::Parse(text).ok()) << text;
  }
}

TEST(Destination, MappedIpv6BecomesIpv4) {
  sockaddr_storage ss{};
  auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
  a->sin6_family = AF_INET6;
  a->sin6_port = htons(80);
  ASSERT_EQ(inet_pton(AF_INET6, "::ffff:192.0.2.7", &a->sin6_addr), 1);
  auto d = Destination::FromSockaddr(ss);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->family, AF_INET);
  EXPECT_EQ(d->str(), "192.0.2.7:80");
}

TEST(Connect, EncodeParse) {
  auto d = Destination::Parse("[2001:db8::5]:8443");
  ASSERT_TRUE(d.ok());
  const std::string line = EncodeConnect(*d);
  EXPECT_EQ(line, "CONNECT [2001:db8::5]:8443 SIGIL/1\r\n");
  Destination out;
  auto n = ParseConnect(line + "leftover", &out);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, line.size());
  EXPECT_EQ(out, *d);
}

TEST(Connect, NeedsMoreUntilCrlf) {
  const std::string line = "CONNECT 10.0.0.2:80 SIGIL/1\r\n";
  for (size_t i = 0; i < line.size(); ++i) {
    Destination out;
    auto n = ParseConnect(std::string_view(line).substr(0, i), &out);
    ASSERT_TRUE(n.ok()) << i << ": " << n.error().ToString();
    EXPECT_EQ(*n, 0u) << i;
  }
}

TEST(Connect, RejectsMalformed) {
  for (const char* text :
       {"GET / HTTP/1.1\r\n", "CONNECT 10.0.0.2:80 SIGIL/2\r\n", "CONNECT 10.0.0.2:80\r\n",
        "CONNECT  10.0.0.2:80 SIGIL/1\r\n", "CONNECT 10.0.0.2:80 SIGIL/1\n",
        "CONNECT 10.0.0.2:80 SIGIL/1\rX", "CONNECT 10.0.0.2:80\tSIGIL/1\r\n",
        "CONNECT example.com:80 SIGIL/1\r\n"}) {
    Destination out;
    EXPECT_FALSE(ParseConnect(text, &out).ok()) << text;
  }
}

TEST(Connect, BoundedWithoutCrlf) {
  Destination out;
  // 254 bytes may still end with CRLF within the bound; 255 cannot.
  EXPECT_TRUE(ParseConnect(std::string(kMaxLineBytes - 2, 'A'), &out).ok());
  auto too_long = ParseConnect(std::string(kMaxLineBytes - 1, 'A'), &out);
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.error().message().find("longer than"), std::string::npos);
}

TEST(Connect, LineOfExactlyTheBoundIsAcceptedOneMoreIsNot) {
  // Found by fuzz/dp_preamble_fuzz: a CR at offset 255 with its LF at 256 made a 257-byte line.
  const std::string head = "SIGIL/1 403 ";
  const std::string fits = head + std::string(kMaxLineBytes - 2 - head.size(), 'a') + "\r\n";
  ASSERT_EQ(fits.size(), kMaxLineBytes);
  Reply r;
  auto n = ParseReply(fits, &r);
  ASSERT_TRUE(n.ok()) << n.error().ToString();
  EXPECT_EQ(*n, kMaxLineBytes);
  const std::string over = head + std::string(kMaxLineBytes - 1 - head.size(), 'a') + "\r\n";
  EXPECT_FALSE(ParseReply(over, &r).ok());
  // Without the LF yet, a CR at the last allowed offset still waits for more.
  EXPECT_EQ(*ParseReply(fits.substr(0, fits.size() - 1), &r), 0u);
  EXPECT_FALSE(ParseReply(over.substr(0, over.size() - 1), &r).ok());
}

TEST(Reply, EncodeParseAndSanitise) {
  Reply r;
  const std::string ok = EncodeReply(200, "OK");
  EXPECT_EQ(ok, "SIGIL/1 200 OK\r\n");
  ASSERT_EQ(*ParseReply(ok, &r), ok.size());
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.reason, "OK");

  const std::string denied = EncodeReply(403, "denied\r\nX-Evil: 1" + std::string(400, 'a'));
  EXPECT_LE(denied.size(), kMaxLineBytes);
  ASSERT_EQ(*ParseReply(denied, &r), denied.size());
  EXPECT_EQ(r.code, 403);
  EXPECT_EQ(r.reason.substr(0, 20), "denied??X-Evil: 1aaa");

  for (const char* bad : {"SIGIL/1 20 OK\r\n", "SIGIL/1 2000 OK\r\n", "HTTP/1.1 200 OK\r\n",
                          "SIGIL/1 099 x\r\n", "SIGIL/1 abc x\r\n"}) {
    EXPECT_FALSE(ParseReply(bad, &r).ok()) << bad;
  }
}

TEST(Sni, PortRoundTrip) {
  EXPECT_EQ(SniForPort(8080), "8080.sigil.invalid");
  EXPECT_EQ(PortFromSni("8080.sigil.invalid"), 8080);
  EXPECT_EQ(PortFromSni("0.sigil.invalid"), std::nullopt);
  EXPECT_EQ(PortFromSni("70000.sigil.invalid"), std::nullopt);
  EXPECT_EQ(PortFromSni("example.com"), std::nullopt);
  EXPECT_EQ(PortFromSni(".sigil.invalid"), std::nullopt);
}

}  // namespace
}  // namespace sigil::dataplane

#include "dataplane/protocol/proxy_v2.h"

namespace sigil::dataplane {
namespace {

TEST(ProxyV2, Ipv4HeaderWithSpiffeTlv) {
  auto src = *Destination::Parse("10.0.0.1:40000");
  auto dst = *Destination::Parse("10.0.0.2:8080");
  const std::string id = "spiffe://example.org/web";
  const std::string h = EncodeProxyV2(src, dst, id);
  ASSERT_EQ(h.size(), 16u + 12u + 3u + id.size());
  EXPECT_EQ(h.substr(0, 12), std::string("\r\n\r\n\0\r\nQUIT\n", 12));
  EXPECT_EQ(static_cast<uint8_t>(h[12]), 0x21);
  EXPECT_EQ(static_cast<uint8_t>(h[13]), 0x11);
  EXPECT_EQ((static_cast<uint8_t>(h[14]) << 8) | static_cast<uint8_t>(h[15]), 12 + 3 + 24);
  EXPECT_EQ(static_cast<uint8_t>(h[16]), 10);  // source 10.0.0.1
  EXPECT_EQ(static_cast<uint8_t>(h[23]), 2);   // destination 10.0.0.2
  EXPECT_EQ((static_cast<uint8_t>(h[24]) << 8) | static_cast<uint8_t>(h[25]), 40000);
  EXPECT_EQ((static_cast<uint8_t>(h[26]) << 8) | static_cast<uint8_t>(h[27]), 8080);
  EXPECT_EQ(static_cast<uint8_t>(h[28]), kSpiffeIdTlv);
  EXPECT_EQ(h.substr(31), id);
}

TEST(ProxyV2, Ipv6Family) {
  auto src = *Destination::Parse("[2001:db8::1]:1");
  auto dst = *Destination::Parse("[2001:db8::2]:2");
  const std::string h = EncodeProxyV2(src, dst, "spiffe://a/b");
  EXPECT_EQ(static_cast<uint8_t>(h[13]), 0x21);
  EXPECT_EQ(h.size(), 16u + 36u + 3u + 12u);
}

}  // namespace
}  // namespace sigil::dataplane
