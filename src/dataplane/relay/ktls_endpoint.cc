// KernelTlsLayer: non-blocking I/O on a kTLS socket (control records, close_notify, the
// transmit flush check before shutdown).
#include "dataplane/relay/ktls_endpoint.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

#include "dataplane/relay/record_layer.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace sigil::dataplane {

namespace {

constexpr uint8_t kHandshakeNewSessionTicket = 4;
constexpr uint8_t kHandshakeKeyUpdate = 24;
constexpr uint8_t kAlertCloseNotify = 0;
// outq == 0 and nothing moved for this many flush checks in a row: the kernel holds nothing, so
// the accounting disagrees with it; stop waiting rather than hang the half-close.
constexpr uint32_t kMaxStalledChecks = 50;

IoResult Status(IoStatus status, std::string error = {}) {
  IoResult r;
  r.status = status;
  r.error = std::move(error);
  return r;
}

IoResult Bytes(size_t n) {
  IoResult r;
  r.bytes = n;
  return r;
}

// The record sequence number the kernel will use for its next transmitted record. The kernel
// copies the whole crypto_info (key included) out: wiped here.
template <class Info>
Result<uint64_t> ReadTxSeq(int fd) {
  Info info{};
  socklen_t len = sizeof(info);
  int rc = ::getsockopt(fd, SOL_TLS, TLS_TX, &info, &len);
  int err = errno;
  uint64_t seq = 0;
  if (rc == 0 && len == sizeof(info)) {
    for (uint8_t b : info.rec_seq) seq = (seq << 8) | b;
  }
  OPENSSL_cleanse(&info, sizeof(info));
  if (rc != 0) return Internal(std::string("getsockopt(SOL_TLS, TLS_TX): ") + std::strerror(err));
  if (len != sizeof(info)) return Internal("getsockopt(SOL_TLS, TLS_TX): short answer");
  return seq;
}

Result<uint64_t> TxSeq(int fd, ktls::KtlsCipher cipher) {
  switch (cipher) {
    case ktls::KtlsCipher::kAes128Gcm:
      return ReadTxSeq<tls12_crypto_info_aes_gcm_128>(fd);
    case ktls::KtlsCipher::kAes256Gcm:
      return ReadTxSeq<tls12_crypto_info_aes_gcm_256>(fd);
    case ktls::KtlsCipher::kChacha20Poly1305:
      return ReadTxSeq<tls12_crypto_info_chacha20_poly1305>(fd);
  }
  return Internal("unknown cipher");
}

struct TcpQueued {
  uint64_t total = 0;  // bytes ever queued to TCP (acked + still in the write queue)
  uint32_t outq = 0;   // not yet acknowledged
};

// TCP_INFO first, then SIOCOUTQ: an ACK in between can only make the sum smaller than the truth
// (bytes_acked read before it, outq after), never larger.
Result<TcpQueued> ReadTcpQueued(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof(ti);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
    return Internal(std::string("getsockopt(TCP_INFO): ") + std::strerror(errno));
  }
  if (len < offsetof(tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked)) {
    return Internal("TCP_INFO without tcpi_bytes_acked");
  }
  int outq = 0;
  if (::ioctl(fd, SIOCOUTQ, &outq) != 0 || outq < 0) {
    return Internal(std::string("ioctl(SIOCOUTQ): ") + std::strerror(errno));
  }
  return TcpQueued{ti.tcpi_bytes_acked + static_cast<uint64_t>(outq), static_cast<uint32_t>(outq)};
}

// The exact count at the switch, when nothing writes to the socket: the write queue end is
// fixed, so equal SIOCOUTQ before and after TCP_INFO means no ACK moved in between.
Result<uint64_t> ReadTcpQueuedExact(int fd) {
  for (int attempt = 0; attempt < 16; ++attempt) {
    int before = 0;
    if (::ioctl(fd, SIOCOUTQ, &before) != 0) {
      return Internal(std::string("ioctl(SIOCOUTQ): ") + std::strerror(errno));
    }
    SIGIL_ASSIGN_OR_RETURN(TcpQueued q, ReadTcpQueued(fd));
    if (static_cast<int>(q.outq) == before) return q.total;
  }
  return Internal("TCP queue kept changing");
}

// recvmsg with room for the record type. `type` is application data unless the kernel says
// otherwise (it sends no control message for TCP EOF).
ssize_t RecvWithType(int fd, std::span<char> buf, uint8_t* type) {
  std::array<char, CMSG_SPACE(sizeof(unsigned char))> control{};
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, 0);
  } while (n < 0 && errno == EINTR);
  *type = kTlsContentApplicationData;
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) *type = *CMSG_DATA(c);
  }
  return n;
}

IoResult KtlsErrno(int err, const char* op) {
  if (err == EBADMSG) {
    return Status(IoStatus::kError, std::string(op) + ": record failed authentication (EBADMSG)");
  }
  return ErrnoIoResult(err, op);
}

}  // namespace

// ---- control content ----

IoResult KtlsControlParser::Feed(uint8_t type, std::span<const uint8_t> c) {
  if (mid_message() && type != last_type_) {
    return Status(IoStatus::kError, "ktls: record type changed inside a message");
  }
  last_type_ = type;
  switch (type) {
    case kTlsContentAlert:
      for (uint8_t b : c) {
        if (alert_len_ == 2) return Status(IoStatus::kError, "ktls: data after an alert");
        alert_[alert_len_++] = b;
      }
      if (alert_len_ < 2) return Status(IoStatus::kOk);
      if (alert_[1] == kAlertCloseNotify) return Status(IoStatus::kEof);
      return Status(IoStatus::kReset, "ktls: peer sent alert " + std::to_string(alert_[1]) +
                                          " (level " + std::to_string(alert_[0]) + ")");
    case kTlsContentHandshake:
      // Bounded by the content: every step consumes at least one byte.
      while (!c.empty()) {
        if (hs_body_left_ > 0) {
          size_t skip = std::min<size_t>(hs_body_left_, c.size());
          hs_body_left_ -= static_cast<uint32_t>(skip);
          c = c.subspan(skip);
          continue;
        }
        hs_hdr_[hs_hdr_len_++] = c[0];
        c = c.subspan(1);
        if (hs_hdr_len_ < 4) continue;
        hs_hdr_len_ = 0;
        if (hs_hdr_[0] == kHandshakeKeyUpdate) {
          return Status(IoStatus::kError,
                        "ktls: peer sent KeyUpdate; a kTLS socket cannot be rekeyed");
        }
        if (hs_hdr_[0] != kHandshakeNewSessionTicket) {
          return Status(IoStatus::kError, "ktls: unexpected post-handshake message type " +
                                              std::to_string(hs_hdr_[0]));
        }
        hs_body_left_ = (uint32_t{hs_hdr_[1]} << 16) | (uint32_t{hs_hdr_[2]} << 8) | hs_hdr_[3];
        ++tickets_;
      }
      return Status(IoStatus::kOk);
    default:
      return Status(IoStatus::kError, "ktls: unexpected record type " + std::to_string(type));
  }
}

// ---- setup ----

Result<std::unique_ptr<KernelTlsLayer>> KernelTlsLayer::Enable(int fd, SSL* ssl) {
  SIGIL_ASSIGN_OR_RETURN(ktls::KtlsStatus status, ktls::EnableKernelTls(fd, ssl));
  std::unique_ptr<KernelTlsLayer> layer(new KernelTlsLayer());
  layer->cipher_ = status.cipher;
  layer->tx_seq0_ = status.tx_seq;
  // Without the accounting the half-close cannot wait for the kernel's transmit list; the
  // connection still works (as any kTLS user without it does).
  if (auto base = ReadTcpQueuedExact(fd); base.ok()) {
    layer->tcp_base_ = *base;
    layer->last_queued_ = *base;
    layer->tx_accounting_ = TxSeq(fd, status.cipher).ok();
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  return layer;
}

IoResult KernelTlsLayer::ReadFailure(IoResult r) {
  read_failed_ = true;
  return r;
}

IoResult KernelTlsLayer::WriteFailure(IoResult r) {
  write_failed_ = true;
  return r;
}

// ---- receive ----

IoResult KernelTlsLayer::ReceiveOnce(int fd, std::span<char> buf) {
  uint8_t type = kTlsContentApplicationData;
  ssize_t n = RecvWithType(fd, buf, &type);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Status(IoStatus::kWantRead);
    return ReadFailure(KtlsErrno(errno, "ktls read"));
  }
  if (type == kTlsContentApplicationData) {
    if (n == 0) {
      // TCP EOF without close_notify.
      read_eof_ = true;
      IoResult r = Status(IoStatus::kEof);
      r.truncated = true;
      return r;
    }
    if (control_.mid_message()) {
      return ReadFailure(Status(IoStatus::kError, "ktls: application data inside a message"));
    }
    control_run_ = 0;
    return Bytes(static_cast<size_t>(n));
  }
  if (n == 0) return ReadFailure(Status(IoStatus::kError, "ktls: empty control record"));
  if (++control_run_ > kMaxControlRecords) {
    return ReadFailure(Status(IoStatus::kError, "ktls: too many records without application data"));
  }
  IoResult c =
      control_.Feed(type, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(buf.data()),
                                                   static_cast<size_t>(n)));
  if (c.status == IoStatus::kEof) {
    read_eof_ = true;
    return c;
  }
  if (c.status != IoStatus::kOk) return ReadFailure(std::move(c));
  return Bytes(0);
}

IoResult KernelTlsLayer::Read(int fd, std::span<char> out) {
  if (read_failed_) return Status(IoStatus::kError, "ktls: read side failed earlier");
  if (read_eof_) return Status(IoStatus::kEof);
  if (out.empty()) return Status(IoStatus::kOk);
  // Each pass consumes control content or returns; ReceiveOnce bounds the control run.
  for (;;) {
    IoResult r = ReceiveOnce(fd, out);
    if (r.status != IoStatus::kOk || r.bytes > 0) return r;
  }
}

IoResult KernelTlsLayer::SpliceToPipe(int fd, int pipe_w, size_t max) {
  if (read_failed_) return Status(IoStatus::kError, "ktls: read side failed earlier");
  if (read_eof_) return Status(IoStatus::kEof);
  for (;;) {
    ssize_t n;
    do {
      n = ::splice(fd, nullptr, pipe_w, nullptr, max, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      if (control_.mid_message()) {
        return ReadFailure(Status(IoStatus::kError, "ktls: application data inside a message"));
      }
      control_run_ = 0;
      return Bytes(static_cast<size_t>(n));
    }
    if (n == 0) {
      read_eof_ = true;
      IoResult r = Status(IoStatus::kEof);
      r.truncated = true;
      return r;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Status(IoStatus::kWantRead);
    if (errno != EINVAL) return ReadFailure(KtlsErrno(errno, "ktls splice read"));
    // splice() cannot carry a non-data record and leaves it at the head of the queue: take it
    // with recvmsg (which returns content of one type only, so no application data is taken
    // here), then splice again. A record's content is at most 2^14 bytes.
    std::array<char, kTlsMaxPlaintext> scratch;  // NOLINT: written by recvmsg
    IoResult c = ReceiveOnce(fd, scratch);
    OPENSSL_cleanse(scratch.data(), scratch.size());
    if (c.status == IoStatus::kOk && c.bytes > 0) {
      return ReadFailure(Status(IoStatus::kError, "ktls: splice refused application data"));
    }
    if (c.status != IoStatus::kOk) return c;
  }
}

// ---- send ----

IoResult KernelTlsLayer::Write(int fd, std::span<const char> in) {
  if (write_failed_) return Status(IoStatus::kError, "ktls: write side failed earlier");
  if (close_notify_sent_) return Status(IoStatus::kError, "ktls: write after shutdown");
  if (in.empty()) return Status(IoStatus::kOk);
  ssize_t n;
  do {
    n = ::send(fd, in.data(), in.size(), MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    plain_sent_ += static_cast<uint64_t>(n);
    return Bytes(static_cast<size_t>(n));
  }
  if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) return Status(IoStatus::kWantWrite);
  return WriteFailure(KtlsErrno(errno, "ktls write"));
}

IoResult KernelTlsLayer::SpliceFromPipe(int fd, int pipe_r, size_t n) {
  if (write_failed_) return Status(IoStatus::kError, "ktls: write side failed earlier");
  if (close_notify_sent_) return Status(IoStatus::kError, "ktls: write after shutdown");
  ssize_t s;
  do {
    s = ::splice(pipe_r, nullptr, fd, nullptr, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  } while (s < 0 && errno == EINTR);
  if (s > 0) {
    plain_sent_ += static_cast<uint64_t>(s);
    return Bytes(static_cast<size_t>(s));
  }
  if (s == 0 || errno == EAGAIN || errno == EWOULDBLOCK) return Status(IoStatus::kWantWrite);
  return WriteFailure(KtlsErrno(errno, "ktls splice write"));
}

IoResult KernelTlsLayer::SendCloseNotify(int fd) {
  if (write_failed_) return Status(IoStatus::kError, "ktls: write side failed earlier");
  if (!close_notify_sent_) {
    const ssize_t n = ktls::KtlsSendCloseNotifyRecord(fd);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status(IoStatus::kWantWrite);
      return WriteFailure(KtlsErrno(errno, "ktls close_notify"));
    }
    if (n != 2) {
      // The kernel takes a 2-byte record whole or not at all.
      return WriteFailure(Status(IoStatus::kError, "ktls close_notify: short write"));
    }
    plain_sent_ += 2;
    close_notify_sent_ = true;
  }
  if (!TxFlushed(fd)) {
    ++flush_waits_;
    return Status(IoStatus::kWantWrite);
  }
  return Status(IoStatus::kOk);
}

Result<int64_t> KernelTlsLayer::UnsentBytes(int fd) const {
  if (!tx_accounting_) return FailedPrecondition("ktls: no transmit accounting");
  SIGIL_ASSIGN_OR_RETURN(uint64_t seq, TxSeq(fd, cipher_));
  SIGIL_ASSIGN_OR_RETURN(TcpQueued q, ReadTcpQueued(fd));
  if (seq < tx_seq0_ || q.total < tcp_base_) return Internal("ktls: counters went backwards");
  const uint64_t expected = plain_sent_ + kRecordOverhead * (seq - tx_seq0_);
  return static_cast<int64_t>(expected) - static_cast<int64_t>(q.total - tcp_base_);
}

bool KernelTlsLayer::TxFlushed(int fd) {
  if (!tx_accounting_) return true;
  Result<uint64_t> seq = TxSeq(fd, cipher_);
  Result<TcpQueued> q = seq.ok() ? ReadTcpQueued(fd) : Result<TcpQueued>(seq.error());
  if (!q.ok() || *seq < tx_seq0_ || q->total < tcp_base_) {
    tx_accounting_ = false;  // cannot judge: do not wait
    return true;
  }
  const uint64_t expected = plain_sent_ + kRecordOverhead * (*seq - tx_seq0_);
  const uint64_t queued = q->total - tcp_base_;
  if (queued >= expected) return true;
  if (q->outq == 0 && q->total == last_queued_) {
    if (++stalled_checks_ >= kMaxStalledChecks) {
      tx_accounting_ = false;
      return true;
    }
  } else {
    stalled_checks_ = 0;
  }
  last_queued_ = q->total;
  return false;
}

}  // namespace sigil::dataplane
