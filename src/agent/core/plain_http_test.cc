// PlainHttpServer over real loopback sockets: routing, HEAD, bad input, bounds, slow clients.
#include "agent/core/plain_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <chrono>
#include <string>

namespace sigil::agent {
namespace {

int Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

// Sends `request` and reads until the server closes (bounded: 5 s).
std::string Exchange(int port, const std::string& request) {
  int fd = Connect(port);
  EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 500) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::unique_ptr<PlainHttpServer> StartServer() {
  auto s = PlainHttpServer::Start("127.0.0.1", 0, [](std::string_view path) -> HttpReply {
    if (path == "/hello") return {200, "text/plain", "hi\n"};
    return {404, "text/plain", "nope\n"};
  });
  EXPECT_TRUE(s.ok()) << s.error().ToString();
  return std::move(*s);
}

TEST(PlainHttp, ServesGetAndHeadAndStripsQuery) {
  auto s = StartServer();
  std::string r = Exchange(s->port(), "GET /hello?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(r.substr(0, 15), "HTTP/1.1 200 OK");
  EXPECT_NE(r.find("Content-Length: 3\r\n"), std::string::npos);
  EXPECT_EQ(r.substr(r.size() - 3), "hi\n");
  r = Exchange(s->port(), "HEAD /hello HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r.substr(0, 15), "HTTP/1.1 200 OK");
  EXPECT_EQ(r.substr(r.size() - 4), "\r\n\r\n");
  r = Exchange(s->port(), "GET /other HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.substr(0, 12), "HTTP/1.1 404");
}

TEST(PlainHttp, RejectsBadRequests) {
  auto s = StartServer();
  EXPECT_EQ(Exchange(s->port(), "POST /hello HTTP/1.1\r\n\r\n").substr(0, 12), "HTTP/1.1 405");
  EXPECT_EQ(Exchange(s->port(), "GET /hello\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  EXPECT_EQ(Exchange(s->port(), "GET hello HTTP/1.1\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  EXPECT_EQ(Exchange(s->port(), "GET /a\x01 HTTP/1.1\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  // A head that never ends is cut at 8 KiB.
  EXPECT_EQ(
      Exchange(s->port(), "GET /hello HTTP/1.1\r\nX: " + std::string(9000, 'a')).substr(0, 12),
      "HTTP/1.1 400");
}

TEST(PlainHttp, SilentClientDoesNotBlockOthersForever) {
  auto s = StartServer();
  int idle = Connect(s->port());  // never sends; the server drops it after its deadline
  const auto start = std::chrono::steady_clock::now();
  std::string r = Exchange(s->port(), "GET /hello HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.substr(0, 15), "HTTP/1.1 200 OK");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(7));
  ::close(idle);
}

TEST(PlainHttp, StopIsPromptAndBindErrorsNameTheAddress) {
  auto s = StartServer();
  const auto start = std::chrono::steady_clock::now();
  s->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  auto bad = PlainHttpServer::Start("localhost", 0, nullptr);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("localhost"), std::string::npos);
}

TEST(PlainHttp, ParseRequestLine) {
  auto r = ParseRequestLine("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, "GET");
  EXPECT_EQ(r->second, "/metrics");
  EXPECT_FALSE(ParseRequestLine("GET /metrics HTTP/2\r\n\r\n").ok());
  EXPECT_FALSE(ParseRequestLine("GET  /metrics HTTP/1.1\r\n\r\n").ok());
  EXPECT_FALSE(ParseRequestLine("\r\n\r\n").ok());
}

}  // namespace
}  // namespace sigil::agent
