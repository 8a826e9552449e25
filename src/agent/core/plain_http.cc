#include "agent/core/plain_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/owned_fd.h"

namespace sigil::agent {
namespace {

constexpr size_t kMaxHeadBytes = 8 * 1024;
constexpr auto kRequestDeadline = std::chrono::seconds(2);

std::string_view StatusText(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

void WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the client went away; nothing to do
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

Result<std::pair<std::string, std::string>> ParseRequestLine(std::string_view head) {
  const size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return InvalidArgument("request line is not \"METHOD PATH HTTP/1.x\"");
  }
  const std::string_view method = line.substr(0, sp1);
  std::string_view path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return InvalidArgument("unsupported HTTP version");
  }
  if (path.empty() || path.front() != '/') return InvalidArgument("path must start with /");
  for (char c : line) {
    if (static_cast<unsigned char>(c) < 0x21 && c != ' ') {
      return InvalidArgument("control character in request line");
    }
    if (static_cast<unsigned char>(c) > 0x7e) return InvalidArgument("non-ASCII request line");
  }
  if (const size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  return std::pair<std::string, std::string>(std::string(method), std::string(path));
}

struct PlainHttpServer::Impl {
  OwnedFd listener;
  OwnedFd stop_event;
  Handler handler;
  std::thread thread;
  int port = 0;
  bool stopped = false;

  void Serve() {
    for (;;) {
      pollfd fds[2] = {{listener.get(), POLLIN, 0}, {stop_event.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (fds[1].revents != 0) return;
      OwnedFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!conn.valid()) continue;
      HandleOne(conn.get());
    }
  }

  void HandleOne(int fd) {
    const auto deadline = std::chrono::steady_clock::now() + kRequestDeadline;
    std::string head;
    while (head.find("\r\n\r\n") == std::string::npos) {
      if (head.size() >= kMaxHeadBytes) return Reply(fd, {400, "text/plain", "head too large\n"});
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return;  // slow client: drop it
      pollfd p[2] = {{fd, POLLIN, 0}, {stop_event.get(), POLLIN, 0}};
      if (::poll(p, 2, static_cast<int>(left.count())) <= 0 || p[1].revents != 0) return;
      char buf[2048];
      const size_t room = std::min(sizeof buf, kMaxHeadBytes - head.size());
      ssize_t n = ::recv(fd, buf, room, 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return;
      head.append(buf, static_cast<size_t>(n));
    }
    auto request = ParseRequestLine(head);
    if (!request.ok()) return Reply(fd, {400, "text/plain", request.error().message() + "\n"});
    const auto& [method, path] = *request;
    if (method != "GET" && method != "HEAD") {
      return Reply(fd, {405, "text/plain", "only GET and HEAD\n"});
    }
    HttpReply reply = handler(path);
    if (method == "HEAD") reply.body.clear();
    Reply(fd, reply);
  }

  static void Reply(int fd, const HttpReply& r) {
    // A blocking write bounded by SO_SNDTIMEO so a client that never reads cannot stall us.
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " +
                      std::string(StatusText(r.status)) + "\r\nContent-Type: " + r.content_type +
                      "\r\nContent-Length: " + std::to_string(r.body.size()) +
                      "\r\nConnection: close\r\n\r\n" + r.body;
    WriteAll(fd, out);
  }
};

PlainHttpServer::PlainHttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PlainHttpServer::~PlainHttpServer() { Stop(); }
int PlainHttpServer::port() const { return impl_->port; }

void PlainHttpServer::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(impl_->stop_event.get(), &one, sizeof one);
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<PlainHttpServer>> PlainHttpServer::Start(const std::string& host, int port,
                                                                Handler handler) {
  const std::string what = "http: " + host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
    return InvalidArgument(what + ": " + ::gai_strerror(rc) + " (a numeric address is needed)");
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, &::freeaddrinfo);
  auto impl = std::make_unique<Impl>();
  impl->handler = std::move(handler);
  impl->listener.Reset(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!impl->listener.valid()) return Internal(what + ": socket: " + std::strerror(errno));
  int yes = 1;
  ::setsockopt(impl->listener.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  if (::bind(impl->listener.get(), res->ai_addr, res->ai_addrlen) != 0 ||
      ::listen(impl->listener.get(), 64) != 0) {
    return Unavailable(what + ": bind: " + std::strerror(errno));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(impl->listener.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  impl->port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  impl->stop_event.Reset(::eventfd(0, EFD_CLOEXEC));
  if (!impl->stop_event.valid()) return Internal(what + ": eventfd: " + std::strerror(errno));
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Serve(); });
  return std::unique_ptr<PlainHttpServer>(new PlainHttpServer(std::move(impl)));
}

}  // namespace sigil::agent
