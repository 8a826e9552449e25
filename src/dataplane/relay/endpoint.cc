// Endpoint: non-blocking plaintext and TLS socket I/O with a common result type.
#include "dataplane/relay/endpoint.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/ossl.h"
#include "dataplane/relay/ktls_endpoint.h"
#include "dataplane/relay/record_endpoint.h"

namespace sigil::dataplane {

namespace {

void SetNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

}  // namespace

IoResult ErrnoIoResult(int err, const char* op) {
  IoResult r;
  if (err == EAGAIN || err == EWOULDBLOCK) {
    r.status = IoStatus::kWantRead;  // callers override for writes
    return r;
  }
  r.status = (err == ECONNRESET || err == EPIPE || err == ENOTCONN || err == ECONNABORTED)
                 ? IoStatus::kReset
                 : IoStatus::kError;
  r.error = std::string(op) + ": " + std::strerror(err);
  return r;
}

Endpoint::Endpoint(OwnedFd fd, SslPtr ssl) : fd_(std::move(fd)), ssl_(std::move(ssl)) {}

Endpoint::~Endpoint() = default;

std::unique_ptr<Endpoint> Endpoint::Plain(OwnedFd fd) {
  SetNonBlocking(fd.get());
  return std::unique_ptr<Endpoint>(new Endpoint(std::move(fd), nullptr));
}

std::unique_ptr<Endpoint> Endpoint::Tls(OwnedFd fd, SslPtr ssl) {
  SetNonBlocking(fd.get());
  SSL_set_mode(ssl.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
  return std::unique_ptr<Endpoint>(new Endpoint(std::move(fd), std::move(ssl)));
}

Result<std::unique_ptr<Endpoint>> Endpoint::Records(OwnedFd fd, ktls::TrafficKeys keys) {
  if (!fd.valid()) return InvalidArgument("records endpoint: bad fd");
  SIGIL_ASSIGN_OR_RETURN(std::unique_ptr<RecordLayer> layer, RecordLayer::Create(std::move(keys)));
  SetNonBlocking(fd.get());
  std::unique_ptr<Endpoint> ep(new Endpoint(std::move(fd), nullptr));
  ep->records_ = std::move(layer);
  return ep;
}

Result<void> Endpoint::SwitchToRecords() {
  if (!fd_.valid()) return FailedPrecondition("records switch: endpoint closed");
  if (records_ || ktls_) return FailedPrecondition("records switch: already switched");
  if (!ssl_) return FailedPrecondition("records switch: not a TLS endpoint");
  if (tls_shutdown_sent_) return FailedPrecondition("records switch: close_notify already sent");
  SIGIL_ASSIGN_OR_RETURN(ktls::TrafficKeys keys, ktls::ExportTrafficKeys(ssl_.get()));
  SIGIL_ASSIGN_OR_RETURN(records_, RecordLayer::Create(std::move(keys)));
  // SSL_set_fd attached the socket with BIO_NOCLOSE: freeing the SSL leaves fd_ open and sends
  // nothing. Mark it shut down first: SSL_free of a connection that was not shut down counts
  // its session as bad and makes it non-resumable, which would throw away the session ticket
  // the proxy keeps for the next connection.
  SSL_set_quiet_shutdown(ssl_.get(), 1);
  SSL_set_shutdown(ssl_.get(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  ssl_.reset();
  return Ok();
}

Result<void> Endpoint::SwitchToKernelTls() {
  if (!fd_.valid()) return FailedPrecondition("ktls switch: endpoint closed");
  if (records_ || ktls_) return FailedPrecondition("ktls switch: already switched");
  if (!ssl_) return FailedPrecondition("ktls switch: not a TLS endpoint");
  if (tls_shutdown_sent_) return FailedPrecondition("ktls switch: close_notify already sent");
  Result<std::unique_ptr<KernelTlsLayer>> layer = KernelTlsLayer::Enable(fd_.get(), ssl_.get());
  if (!layer.ok()) {
    // Internal: half a kernel configuration (or none) on a socket whose keys are gone.
    if (layer.error().code() == ErrorCode::kInternal) Abort();
    return layer.error();
  }
  ktls_ = std::move(*layer);
  // EnableKernelTls marked the SSL shut down (quietly), so freeing it keeps its session
  // resumable and sends nothing; the socket stays open (BIO_NOCLOSE).
  ssl_.reset();
  return Ok();
}

RecordPath MoveRecordLayer(Endpoint& ep, bool kernel_tls, std::string* why) {
  if (kernel_tls) {
    Result<void> k = ep.SwitchToKernelTls();
    if (k.ok()) return RecordPath::kKernelTls;
    if (why) *why = k.error().ToString();
    if (ep.closed()) return RecordPath::kFailed;
  }
  Result<void> r = ep.SwitchToRecords();
  if (r.ok()) return RecordPath::kRecords;
  if (why) *why = (why->empty() ? "" : *why + "; ") + r.error().ToString();
  return RecordPath::kOpenSsl;
}

std::string_view RecordPathName(RecordPath path) {
  switch (path) {
    case RecordPath::kKernelTls:
      return "ktls";
    case RecordPath::kRecords:
      return "records";
    case RecordPath::kOpenSsl:
      return "openssl";
    case RecordPath::kFailed:
      return "failed";
  }
  return "unknown";
}

IoResult Endpoint::SslFailure(int rc, const char* op) {
  IoResult r;
  int saved_errno = errno;
  int err = SSL_get_error(ssl_.get(), rc);
  switch (err) {
    case SSL_ERROR_WANT_READ:
      r.status = IoStatus::kWantRead;
      return r;
    case SSL_ERROR_WANT_WRITE:
      r.status = IoStatus::kWantWrite;
      return r;
    case SSL_ERROR_ZERO_RETURN:  // close_notify
      r.status = IoStatus::kEof;
      return r;
    case SSL_ERROR_SYSCALL: {
      std::string reasons = DrainOsslErrors();
      if (saved_errno == 0) {
        // EOF without close_notify (the pre-3.0 way OpenSSL reports it).
        r.status = IoStatus::kEof;
        r.truncated = true;
        return r;
      }
      r = ErrnoIoResult(saved_errno, op);
      if (r.status == IoStatus::kWantRead) {  // EAGAIN without a WANT_*: treat as retry
        r.status = IoStatus::kWantRead;
      }
      if (!reasons.empty()) r.error += " (" + reasons + ")";
      return r;
    }
    case SSL_ERROR_SSL: {
      unsigned long e = ERR_peek_error();
      if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
          ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        r.status = IoStatus::kEof;
        r.truncated = true;
        return r;
      }
      r.status = IoStatus::kError;
      r.error = std::string(op) + ": " + DrainOsslErrors();
      return r;
    }
    default:
      r.status = IoStatus::kError;
      r.error = std::string(op) + ": SSL error " + std::to_string(err) + " " + DrainOsslErrors();
      return r;
  }
}

IoResult Endpoint::Read(std::span<char> out) {
  IoResult r;
  if (!fd_.valid()) {
    r.status = IoStatus::kError;
    r.error = "read: endpoint closed";
    return r;
  }
  if (records_) return records_->Read(fd_.get(), out);
  if (ktls_) return ktls_->Read(fd_.get(), out);
  if (ssl_) {
    ClearOsslErrors();
    errno = 0;
    size_t n = 0;
    int rc = SSL_read_ex(ssl_.get(), out.data(), out.size(), &n);
    if (rc == 1) {
      r.bytes = n;
      return r;
    }
    return SslFailure(rc, "tls read");
  }
  ssize_t n;
  do {
    n = ::recv(fd_.get(), out.data(), out.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    r.bytes = static_cast<size_t>(n);
    return r;
  }
  if (n == 0) {
    r.status = IoStatus::kEof;
    return r;
  }
  return ErrnoIoResult(errno, "read");
}

IoResult Endpoint::Write(std::span<const char> in) {
  IoResult r;
  if (!fd_.valid()) {
    r.status = IoStatus::kError;
    r.error = "write: endpoint closed";
    return r;
  }
  if (records_) {
    r = records_->Write(fd_.get(), in);
    if (r.status == IoStatus::kEof) r.status = IoStatus::kReset;
    return r;
  }
  if (ktls_) return ktls_->Write(fd_.get(), in);
  if (ssl_) {
    ClearOsslErrors();
    errno = 0;
    size_t n = 0;
    int rc = SSL_write_ex(ssl_.get(), in.data(), in.size(), &n);
    if (rc == 1) {
      r.bytes = n;
      return r;
    }
    r = SslFailure(rc, "tls write");
    // A write never sees an orderly EOF; a vanished peer is a reset.
    if (r.status == IoStatus::kEof) {
      r.status = IoStatus::kReset;
      r.error = "tls write: peer closed";
    }
    return r;
  }
  ssize_t n;
  do {
    n = ::send(fd_.get(), in.data(), in.size(), MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) {
    r.bytes = static_cast<size_t>(n);
    if (n == 0) r.status = IoStatus::kWantWrite;
    return r;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    r.status = IoStatus::kWantWrite;
    return r;
  }
  return ErrnoIoResult(errno, "write");
}

IoResult Endpoint::ShutdownWrite() {
  IoResult r;
  if (!fd_.valid()) {
    r.status = IoStatus::kError;
    r.error = "shutdown: endpoint closed";
    return r;
  }
  if (records_) {
    r = records_->SendCloseNotify(fd_.get());
    if (r.status != IoStatus::kOk) return r;
  }
  if (ktls_) {
    r = ktls_->SendCloseNotify(fd_.get());
    if (r.status != IoStatus::kOk) return r;
  }
  if (ssl_ && !tls_shutdown_sent_ && SSL_in_init(ssl_.get()) == 1) {
    // OpenSSL is in the middle of a post-handshake message (a NewSessionTicket read only in
    // part) and refuses SSL_shutdown; end the stream with a FIN alone (seen by the peer as a
    // TLS truncation) rather than fail the half-close.
    tls_shutdown_sent_ = true;
  }
  if (ssl_ && !tls_shutdown_sent_) {
    ERR_clear_error();
    errno = 0;
    int rc = SSL_shutdown(ssl_.get());
    if (rc < 0) {
      r = SslFailure(rc, "tls shutdown");
      if (r.status == IoStatus::kEof) r.status = IoStatus::kReset;
      return r;
    }
    tls_shutdown_sent_ = true;  // 0: sent, peer's not yet seen; 1: both done
  }
  if (::shutdown(fd_.get(), SHUT_WR) != 0) {
    if (errno == ENOTCONN) return r;  // peer already gone both ways; nothing left to end
    return ErrnoIoResult(errno, "shutdown");
  }
  return r;
}

IoResult Endpoint::SpliceToPipe(int pipe_w, size_t max) {
  IoResult r;
  if (!can_splice()) {
    r.status = IoStatus::kError;
    r.error = fd_.valid() ? "splice read: not a plain or kTLS socket" : "splice read: closed";
    return r;
  }
  if (ktls_) return ktls_->SpliceToPipe(fd_.get(), pipe_w, max);
  ssize_t n;
  do {
    n = ::splice(fd_.get(), nullptr, pipe_w, nullptr, max, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    r.bytes = static_cast<size_t>(n);
    return r;
  }
  if (n == 0) {
    r.status = IoStatus::kEof;
    return r;
  }
  return ErrnoIoResult(errno, "splice read");  // EAGAIN: kWantRead
}

IoResult Endpoint::SpliceFromPipe(int pipe_r, size_t n) {
  IoResult r;
  if (!can_splice()) {
    r.status = IoStatus::kError;
    r.error = fd_.valid() ? "splice write: not a plain or kTLS socket" : "splice write: closed";
    return r;
  }
  if (ktls_) return ktls_->SpliceFromPipe(fd_.get(), pipe_r, n);
  ssize_t s;
  do {
    s = ::splice(pipe_r, nullptr, fd_.get(), nullptr, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  } while (s < 0 && errno == EINTR);
  if (s > 0) {
    r.bytes = static_cast<size_t>(s);
    return r;
  }
  if (s == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
    r.status = IoStatus::kWantWrite;
    return r;
  }
  return ErrnoIoResult(errno, "splice write");
}

void AbortSocket(OwnedFd fd) {
  if (!fd.valid()) return;
  linger lg{};
  lg.l_onoff = 1;
  lg.l_linger = 0;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

void Endpoint::Abort() {
  AbortSocket(std::move(fd_));
  if (records_) records_->ReleaseBuffers();
}

void Endpoint::Close() {
  fd_.Reset();
  if (records_) records_->ReleaseBuffers();
}

}  // namespace sigil::dataplane
