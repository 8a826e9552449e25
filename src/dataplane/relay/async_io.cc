// AsyncConnect, AsyncTlsHandshake, AsyncReadMessage, AsyncWriteAll: small one-shot state
// machines sharing the same teardown (timer, stop hook, fd watch) and exactly-once completion.
#include "dataplane/relay/async_io.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace sigil::dataplane {

namespace {

constexpr uint32_t kAllEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

Error Deadline(std::string msg) { return Error(ErrorCode::kDeadlineExceeded, std::move(msg)); }

std::string AddrString(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    sockaddr_in sin;
    std::memcpy(&sin, &ss, sizeof(sin));
    ::inet_ntop(AF_INET, &sin.sin_addr, host, sizeof(host));
    port = ntohs(sin.sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (ss.ss_family == AF_INET6) {
    sockaddr_in6 sin6;
    std::memcpy(&sin6, &ss, sizeof(sin6));
    ::inet_ntop(AF_INET6, &sin6.sin6_addr, host, sizeof(host));
    port = ntohs(sin6.sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "<family " + std::to_string(ss.ss_family) + ">";
}

// Registrations common to every operation; Teardown() undoes them once.
template <class Derived, class R>
class Op : public std::enable_shared_from_this<Derived> {
 public:
  Op(EventLoop& loop, std::function<void(R)> done) : loop_(loop), done_(std::move(done)) {}

  // Arms the timeout and the stop hook, and watches `fd` (if >= 0) calling Derived::Step.
  Result<void> Arm(std::chrono::milliseconds timeout, int fd, std::string what) {
    std::shared_ptr<Derived> self = this->shared_from_this();
    timer_ = loop_.AddTimer(timeout, [self, what, timeout] {
      self->timer_ = 0;
      self->Finish(Deadline(what + ": timed out after " + std::to_string(timeout.count()) + " ms"));
    });
    hook_ = loop_.AddStopHook([self, what] {
      self->hook_ = 0;
      self->Finish(Unavailable(what + ": event loop stopped"));
    });
    if (fd >= 0) {
      SIGIL_TRY(loop_.Watch(fd, kAllEvents, [self](uint32_t ev) { self->Step(ev); }));
      watched_fd_ = fd;
      // Also step once without waiting for an event: a TLS endpoint may hold decrypted bytes.
      loop_.Post([self] { self->Step(0); });
    }
    return Ok();
  }

  // Completes the operation (first call wins) after undoing every registration.
  void Finish(R result) {
    if (finished_) return;
    finished_ = true;
    std::shared_ptr<Derived> keep = this->shared_from_this();
    if (timer_ != 0) loop_.CancelTimer(std::exchange(timer_, 0));
    if (hook_ != 0) loop_.RemoveStopHook(std::exchange(hook_, 0));
    if (watched_fd_ >= 0) loop_.Unwatch(std::exchange(watched_fd_, -1));
    auto done = std::move(done_);
    done(std::move(result));
  }

  // Completes asynchronously (never inside the starting call).
  void FinishLater(R result) {
    std::shared_ptr<Derived> self = this->shared_from_this();
    auto holder = std::make_shared<R>(std::move(result));
    loop_.Post([self, holder] { self->Finish(std::move(*holder)); });
  }

  bool finished() const { return finished_; }

 protected:
  EventLoop& loop_;

 private:
  std::function<void(R)> done_;
  EventLoop::TimerId timer_ = 0;
  EventLoop::HookId hook_ = 0;
  int watched_fd_ = -1;
  bool finished_ = false;
};

// ---- connect ----

class ConnectOp : public Op<ConnectOp, Result<OwnedFd>> {
 public:
  ConnectOp(EventLoop& loop, OwnedFd fd, std::string target,
            std::function<void(Result<OwnedFd>)> done)
      : Op(loop, std::move(done)), fd_(std::move(fd)), target_(std::move(target)) {}

  void Step(uint32_t events) {
    if (finished()) return;
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      std::string msg = "connect to " + target_ + ": " + std::strerror(err);
      Finish(err == ETIMEDOUT ? Deadline(std::move(msg)) : Unavailable(std::move(msg)));
      return;
    }
    if ((events & EPOLLOUT) == 0) return;  // not yet connected
    Finish(std::move(fd_));
  }

 private:
  OwnedFd fd_;
  std::string target_;
};

// ---- TLS handshake ----

class HandshakeOp : public Op<HandshakeOp, Result<std::unique_ptr<Endpoint>>> {
 public:
  HandshakeOp(EventLoop& loop, OwnedFd fd, SslPtr ssl,
              std::function<void(Result<std::unique_ptr<Endpoint>>)> done)
      : Op(loop, std::move(done)), fd_(std::move(fd)), ssl_(std::move(ssl)) {}

  void Step(uint32_t /*events*/) {
    if (finished()) return;
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl_.get());
    if (rc == 1) {
      Finish(Endpoint::Tls(std::move(fd_), std::move(ssl_)));
      return;
    }
    int saved_errno = errno;
    int err = SSL_get_error(ssl_.get(), rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
    const char* role = SSL_is_server(ssl_.get()) ? "server" : "client";
    std::string msg = std::string("tls handshake (") + role + "): ";
    const std::string reasons = DrainOsslErrors();
    if (!reasons.empty()) {
      msg += reasons;
    } else if (err == SSL_ERROR_SYSCALL) {
      msg += saved_errno != 0 ? std::string(std::strerror(saved_errno))
                              : std::string("peer closed the connection");
    } else {
      msg += "SSL error " + std::to_string(err);
    }
    long verify = SSL_get_verify_result(ssl_.get());
    if (verify != X509_V_OK) {
      msg += std::string("; certificate verification failed: ") +
             X509_verify_cert_error_string(verify);
      Finish(Unauthenticated(std::move(msg)));
      return;
    }
    Finish(Unavailable(std::move(msg)));
  }

 private:
  OwnedFd fd_;
  SslPtr ssl_;
};

// ---- read one message ----

class ReadMessageOp : public Op<ReadMessageOp, Result<std::pair<std::string, std::string>>> {
 public:
  ReadMessageOp(EventLoop& loop, Endpoint& ep, size_t max_bytes,
                std::function<ssize_t(std::string_view)> parse,
                std::function<void(Result<std::pair<std::string, std::string>>)> done)
      : Op(loop, std::move(done)), ep_(ep), max_bytes_(max_bytes), parse_(std::move(parse)) {}

  void Step(uint32_t /*events*/) {
    if (finished()) return;
    for (;;) {
      if (buf_.size() >= max_bytes_) {
        Finish(ResourceExhausted("read message: no complete message within " +
                                 std::to_string(max_bytes_) + " bytes"));
        return;
      }
      size_t want = std::min<size_t>(max_bytes_ - buf_.size(), 16 * 1024);
      size_t old = buf_.size();
      buf_.resize(old + want);
      IoResult r = ep_.Read(std::span<char>(buf_.data() + old, want));
      buf_.resize(old + (r.status == IoStatus::kOk ? r.bytes : 0));
      switch (r.status) {
        case IoStatus::kOk:
          break;
        case IoStatus::kWantRead:
        case IoStatus::kWantWrite:
          return;
        case IoStatus::kEof:
          Finish(Unavailable("read message: connection closed after " +
                             std::to_string(buf_.size()) + " bytes, before a complete message"));
          return;
        case IoStatus::kReset:
        case IoStatus::kError:
          Finish(Unavailable("read message: " + r.error));
          return;
      }
      ssize_t consumed = parse_(std::string_view(buf_));
      if (consumed < 0) {
        Finish(InvalidArgument("read message: malformed message"));
        return;
      }
      if (consumed > 0) {
        if (static_cast<size_t>(consumed) > buf_.size()) {
          Finish(Internal("read message: parser consumed more than was buffered"));
          return;
        }
        std::string rest = buf_.substr(static_cast<size_t>(consumed));
        buf_.resize(static_cast<size_t>(consumed));
        Finish(std::make_pair(std::move(buf_), std::move(rest)));
        return;
      }
    }
  }

 private:
  Endpoint& ep_;
  size_t max_bytes_;
  std::function<ssize_t(std::string_view)> parse_;
  std::string buf_;
};

// ---- write everything ----

class WriteAllOp : public Op<WriteAllOp, Result<void>> {
 public:
  WriteAllOp(EventLoop& loop, Endpoint& ep, std::string bytes,
             std::function<void(Result<void>)> done)
      : Op(loop, std::move(done)), ep_(ep), bytes_(std::move(bytes)) {}

  void Step(uint32_t /*events*/) {
    if (finished()) return;
    while (off_ < bytes_.size()) {
      IoResult r = ep_.Write(std::span<const char>(bytes_.data() + off_, bytes_.size() - off_));
      switch (r.status) {
        case IoStatus::kOk:
          off_ += r.bytes;
          break;
        case IoStatus::kWantRead:
        case IoStatus::kWantWrite:
          return;
        case IoStatus::kEof:
        case IoStatus::kReset:
        case IoStatus::kError:
          Finish(Unavailable("write: " + (r.error.empty() ? std::string("peer closed") : r.error)));
          return;
      }
    }
    Finish(Ok());
  }

 private:
  Endpoint& ep_;
  std::string bytes_;
  size_t off_ = 0;
};

}  // namespace

void AsyncConnect(EventLoop& loop, const sockaddr_storage& to, std::chrono::milliseconds timeout,
                  std::function<void(Result<OwnedFd>)> done) {
  std::string target = AddrString(to);
  auto fail = [&](Error e) {
    auto op = std::make_shared<ConnectOp>(loop, OwnedFd(), target, std::move(done));
    op->FinishLater(std::move(e));
  };
  socklen_t len;
  if (to.ss_family == AF_INET) {
    len = sizeof(sockaddr_in);
  } else if (to.ss_family == AF_INET6) {
    len = sizeof(sockaddr_in6);
  } else {
    fail(InvalidArgument("connect: address family " + std::to_string(to.ss_family) +
                         " is not AF_INET or AF_INET6"));
    return;
  }
  OwnedFd fd(::socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    fail(Unavailable(std::string("connect: socket: ") + std::strerror(errno)));
    return;
  }
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), len) != 0 &&
      errno != EINPROGRESS) {
    fail(Unavailable("connect to " + target + ": " + std::strerror(errno)));
    return;
  }
  int raw = fd.get();
  auto op = std::make_shared<ConnectOp>(loop, std::move(fd), target, std::move(done));
  auto armed = op->Arm(timeout, raw, "connect to " + target);
  if (!armed.ok()) op->FinishLater(std::move(armed).error());
}

void AsyncTlsHandshake(EventLoop& loop, OwnedFd fd, SslPtr ssl, std::chrono::milliseconds timeout,
                       std::function<void(Result<std::unique_ptr<Endpoint>>)> done) {
  int raw = fd.get();
  if (raw >= 0) {
    int flags = ::fcntl(raw, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK) == 0) ::fcntl(raw, F_SETFL, flags | O_NONBLOCK);
  }
  if (ssl && raw >= 0 && SSL_get_fd(ssl.get()) != raw) {
    if (SSL_set_fd(ssl.get(), raw) != 1) {
      auto op = std::make_shared<HandshakeOp>(loop, OwnedFd(), nullptr, std::move(done));
      op->FinishLater(OsslError("tls handshake: SSL_set_fd"));
      return;
    }
  }
  bool valid = ssl && raw >= 0;
  auto op = std::make_shared<HandshakeOp>(loop, std::move(fd), std::move(ssl), std::move(done));
  if (!valid) {
    op->FinishLater(InvalidArgument("tls handshake: missing fd or SSL"));
    return;
  }
  auto armed = op->Arm(timeout, raw, "tls handshake");
  if (!armed.ok()) op->FinishLater(std::move(armed).error());
}

void AsyncReadMessage(EventLoop& loop, Endpoint& ep, size_t max_bytes,
                      std::chrono::milliseconds timeout,
                      std::function<ssize_t(std::string_view buffered)> parse,
                      std::function<void(Result<std::pair<std::string, std::string>>)> done) {
  auto op = std::make_shared<ReadMessageOp>(loop, ep, max_bytes, std::move(parse), std::move(done));
  if (ep.closed()) {
    op->FinishLater(InvalidArgument("read message: endpoint closed"));
    return;
  }
  auto armed = op->Arm(timeout, ep.fd(), "read message");
  if (!armed.ok()) op->FinishLater(std::move(armed).error());
}

void AsyncWriteAll(EventLoop& loop, Endpoint& ep, std::string bytes,
                   std::chrono::milliseconds timeout, std::function<void(Result<void>)> done) {
  auto op = std::make_shared<WriteAllOp>(loop, ep, std::move(bytes), std::move(done));
  if (ep.closed()) {
    op->FinishLater(InvalidArgument("write: endpoint closed"));
    return;
  }
  auto armed = op->Arm(timeout, ep.fd(), "write");
  if (!armed.ok()) op->FinishLater(std::move(armed).error());
}

}  // namespace sigil::dataplane
