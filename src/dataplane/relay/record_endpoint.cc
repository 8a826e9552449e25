// RecordLayer: non-blocking TLS 1.3 record I/O over a socket with exported traffic keys.
#include "dataplane/relay/record_endpoint.h"

#include <openssl/crypto.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace sigil::dataplane {

namespace {

constexpr uint8_t kHandshakeNewSessionTicket = 4;
constexpr uint8_t kHandshakeKeyUpdate = 24;
constexpr uint8_t kAlertCloseNotify = 0;

IoResult Status(IoStatus status, std::string error = {}) {
  IoResult r;
  r.status = status;
  r.error = std::move(error);
  return r;
}

}  // namespace

Result<std::unique_ptr<RecordLayer>> RecordLayer::Create(ktls::TrafficKeys keys) {
  std::unique_ptr<RecordLayer> layer(new RecordLayer());
  layer->cipher_ = keys.cipher;
  SIGIL_TRY(layer->tx_.Init(keys.cipher, keys.tx, RecordCipher::Mode::kSeal));
  SIGIL_TRY(layer->rx_.Init(keys.cipher, keys.rx, RecordCipher::Mode::kOpen));
  return layer;
}

RecordLayer::~RecordLayer() { ReleaseBuffers(); }

void RecordLayer::ReleaseBuffers() {
  DropInput();
  out_.reset();
  out_cap_ = out_off_ = out_len_ = 0;
}

void RecordLayer::DropInput() {
  if (in_) OPENSSL_cleanse(in_.get(), kTlsMaxRecord);  // may hold decrypted plaintext
  in_.reset();
  in_start_ = in_len_ = rec_end_ = plain_off_ = plain_end_ = 0;
  opened_ = false;
}

IoResult RecordLayer::ReadFailure(IoStatus status, std::string error) {
  read_failed_ = true;
  DropInput();
  return Status(status, "tls records: " + std::move(error));
}

IoResult RecordLayer::WriteFailure(IoResult r) {
  write_failed_ = true;
  out_.reset();
  out_cap_ = out_off_ = out_len_ = 0;
  return r;
}

void RecordLayer::DropRecord() {
  in_start_ = rec_end_;
  opened_ = false;
  plain_off_ = plain_end_ = 0;
  if (in_start_ == in_len_) {
    in_start_ = in_len_ = rec_end_ = 0;
    in_.reset();
  }
}

IoResult RecordLayer::HandleControl(const OpenedRecord& rec) {
  const std::span<const uint8_t> c = rec.content;
  switch (rec.type) {
    case kTlsContentAlert: {
      if (c.size() != 2) return Status(IoStatus::kError, "malformed alert record");
      if (c[1] == kAlertCloseNotify) return Status(IoStatus::kEof);
      return Status(IoStatus::kReset, "peer sent alert " + std::to_string(c[1]) + " (level " +
                                          std::to_string(c[0]) + ")");
    }
    case kTlsContentHandshake: {
      if (c.empty()) return Status(IoStatus::kError, "empty handshake record");
      // Bounded by the record size: every message consumes at least its 4-byte header.
      for (size_t off = 0; off < c.size();) {
        if (c.size() - off < 4) {
          return Status(IoStatus::kError,
                        "handshake message header split across records (fragmented "
                        "post-handshake messages are not supported)");
        }
        uint8_t type = c[off];
        size_t len = (size_t{c[off + 1]} << 16) | (size_t{c[off + 2]} << 8) | size_t{c[off + 3]};
        if (type == kHandshakeKeyUpdate) {
          return Status(IoStatus::kError, "KeyUpdate not supported after the record-layer switch");
        }
        if (type != kHandshakeNewSessionTicket) {
          return Status(IoStatus::kError,
                        "unexpected post-handshake message type " + std::to_string(type));
        }
        if (c.size() - off - 4 < len) {
          return Status(IoStatus::kError,
                        "NewSessionTicket fragmented across records (not supported)");
        }
        ++tickets_skipped_;
        off += 4 + len;
      }
      return Status(IoStatus::kOk);
    }
    default:
      return Status(IoStatus::kError, "unexpected inner content type " + std::to_string(rec.type));
  }
}

IoResult RecordLayer::Read(int fd, std::span<char> out) {
  if (read_failed_) return Status(IoStatus::kError, "tls records: read side failed earlier");
  if (read_eof_) return Status(IoStatus::kEof);
  if (out.empty()) return Status(IoStatus::kOk);
  // Each pass hands out data, consumes one record, or makes one recv() call; control records
  // are bounded by kMaxEmptyRecords and recv() by EAGAIN/EOF, so the loop ends.
  for (;;) {
    if (opened_) {
      size_t n = std::min<size_t>(out.size(), plain_end_ - plain_off_);
      std::memcpy(out.data(), in_.get() + plain_off_, n);
      plain_off_ += static_cast<uint32_t>(n);
      if (plain_off_ == plain_end_) DropRecord();
      IoResult r;
      r.bytes = n;
      return r;
    }
    size_t avail = in_len_ - in_start_;
    if (avail >= kTlsRecordHeaderLen) {
      std::span<const uint8_t, kTlsRecordHeaderLen> header(in_.get() + in_start_,
                                                           kTlsRecordHeaderLen);
      Result<size_t> body = ParseRecordHeader(header);
      if (!body.ok()) return ReadFailure(IoStatus::kError, body.error().message());
      size_t rec_len = kTlsRecordHeaderLen + *body;
      if (avail >= rec_len) {
        Result<OpenedRecord> rec = rx_.Open({in_.get() + in_start_, rec_len});
        if (!rec.ok()) return ReadFailure(IoStatus::kError, rec.error().message());
        rec_end_ = in_start_ + static_cast<uint32_t>(rec_len);
        if (rec->type == kTlsContentApplicationData && !rec->content.empty()) {
          empty_run_ = 0;
          opened_ = true;
          plain_off_ = static_cast<uint32_t>(rec->content.data() - in_.get());
          plain_end_ = plain_off_ + static_cast<uint32_t>(rec->content.size());
          continue;
        }
        if (++empty_run_ > kMaxEmptyRecords) {
          return ReadFailure(IoStatus::kError, "too many records without application data");
        }
        IoResult c = rec->type == kTlsContentApplicationData ? IoResult{} : HandleControl(*rec);
        DropRecord();
        if (c.status == IoStatus::kEof) {
          DropInput();  // nothing after close_notify is read; a pending write stays
          read_eof_ = true;
          return c;
        }
        if (c.status != IoStatus::kOk) return ReadFailure(c.status, c.error);
        continue;
      }
    }
    // Need more bytes: compact, then receive as much as one record can take.
    if (!in_) {
      in_ = std::make_unique_for_overwrite<uint8_t[]>(kTlsMaxRecord);
      in_start_ = in_len_ = 0;
    } else if (in_start_ > 0) {
      std::memmove(in_.get(), in_.get() + in_start_, avail);
      in_start_ = 0;
      in_len_ = static_cast<uint32_t>(avail);
    }
    ssize_t n;
    do {
      n = ::recv(fd, in_.get() + in_len_, kTlsMaxRecord - in_len_, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      in_len_ += static_cast<uint32_t>(n);
      continue;
    }
    if (n == 0) {
      // TCP EOF without close_notify (possibly in the middle of a record): truncation.
      DropInput();
      read_eof_ = true;
      IoResult r = Status(IoStatus::kEof);
      r.truncated = true;
      return r;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (in_len_ == 0) in_.reset();
      return Status(IoStatus::kWantRead);
    }
    IoResult r = ErrnoIoResult(errno, "read");
    return ReadFailure(r.status, r.error);
  }
}

IoResult RecordLayer::Flush(int fd) {
  while (out_off_ < out_len_) {
    ssize_t n = ::send(fd, out_.get() + out_off_, out_len_ - out_off_, MSG_NOSIGNAL);
    if (n > 0) {
      out_off_ += static_cast<uint32_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) return Status(IoStatus::kWantWrite);
    return WriteFailure(ErrnoIoResult(errno, "write"));
  }
  out_.reset();
  out_cap_ = out_off_ = out_len_ = 0;
  return Status(IoStatus::kOk);
}

namespace {

// Sends as much of `rec` as the socket takes: the number of bytes sent, or -1 with errno set
// (EAGAIN included when nothing at all was sent).
ssize_t SendSome(int fd, std::span<const uint8_t> rec) {
  size_t sent = 0;
  while (sent < rec.size()) {
    ssize_t n = ::send(fd, rec.data() + sent, rec.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = EAGAIN;
    if (sent > 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return -1;
  }
  return static_cast<ssize_t>(sent);
}

}  // namespace

IoResult RecordLayer::Write(int fd, std::span<const char> in) {
  if (write_failed_) return Status(IoStatus::kError, "tls records: write side failed earlier");
  if (close_notify_sealed_) return Status(IoStatus::kError, "tls records: write after shutdown");
  if (out_) {
    // The retry of a write that returned kWantWrite: its record is already sealed.
    if (in.size() < out_plain_) {
      return WriteFailure(
          Status(IoStatus::kError, "tls records: write retried with fewer bytes than before"));
    }
    IoResult r = Flush(fd);
    if (r.status != IoStatus::kOk) return r;
    r.bytes = std::exchange(out_plain_, 0);
    return r;
  }
  if (in.empty()) return Status(IoStatus::kOk);
  const size_t n = std::min(in.size(), kTlsMaxPlaintext);
  std::array<uint8_t, SealedRecordSize(kTlsMaxPlaintext)> rec;  // NOLINT: written by Seal
  Result<size_t> sealed =
      tx_.Seal(kTlsContentApplicationData,
               std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(in.data()), n), rec);
  if (!sealed.ok()) {
    return WriteFailure(Status(IoStatus::kError, "tls records: " + sealed.error().message()));
  }
  std::span<const uint8_t> wire(rec.data(), *sealed);
  ssize_t sent = SendSome(fd, wire);
  if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    return WriteFailure(ErrnoIoResult(errno, "write"));
  }
  size_t done = sent < 0 ? 0 : static_cast<size_t>(sent);
  if (done == wire.size()) {
    IoResult r;
    r.bytes = n;
    return r;
  }
  // The record is sealed (its sequence number used): keep the unsent tail until it is out.
  out_cap_ = static_cast<uint32_t>(wire.size() - done);
  out_ = std::make_unique_for_overwrite<uint8_t[]>(out_cap_);
  std::memcpy(out_.get(), wire.data() + done, out_cap_);
  out_off_ = 0;
  out_len_ = out_cap_;
  out_plain_ = static_cast<uint32_t>(n);
  return Status(IoStatus::kWantWrite);
}

IoResult RecordLayer::SendCloseNotify(int fd) {
  if (write_failed_) return Status(IoStatus::kError, "tls records: write side failed earlier");
  if (out_) {
    IoResult r = Flush(fd);
    if (r.status != IoStatus::kOk) return r;
    out_plain_ = 0;
  }
  if (close_notify_sealed_) return Status(IoStatus::kOk);
  const std::array<uint8_t, 2> alert = {1, kAlertCloseNotify};  // warning, close_notify
  std::array<uint8_t, SealedRecordSize(2)> rec{};
  Result<size_t> sealed = tx_.Seal(kTlsContentAlert, alert, rec);
  if (!sealed.ok()) {
    return WriteFailure(Status(IoStatus::kError, "tls records: " + sealed.error().message()));
  }
  close_notify_sealed_ = true;
  std::span<const uint8_t> wire(rec.data(), *sealed);
  ssize_t sent = SendSome(fd, wire);
  if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    return WriteFailure(ErrnoIoResult(errno, "tls close_notify"));
  }
  size_t done = sent < 0 ? 0 : static_cast<size_t>(sent);
  if (done == wire.size()) return Status(IoStatus::kOk);
  out_cap_ = static_cast<uint32_t>(wire.size() - done);
  out_ = std::make_unique_for_overwrite<uint8_t[]>(out_cap_);
  std::memcpy(out_.get(), wire.data() + done, out_cap_);
  out_off_ = 0;
  out_len_ = out_cap_;
  out_plain_ = 0;
  return Status(IoStatus::kWantWrite);
}

}  // namespace sigil::dataplane
