// Endpoint: one side of a relay, a connected non-blocking TCP socket: plaintext, TLS with the
// handshake done (OpenSSL), or TLS 1.3 records after the handshake protected either by our own
// record layer (Records / SwitchToRecords, see record_endpoint.h) or by the kernel (kTLS,
// SwitchToKernelTls, see ktls_endpoint.h), with keys exported from OpenSSL. Non-blocking I/O
// primitives with one result type for all kinds, so the relay and the async helpers do not care
// which one they hold. Plain and kTLS sockets can also be spliced (payload bytes on the socket).
//
// All calls happen on the owning loop's thread (OpenSSL's error queue is thread-local).
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/ossl.h"
#include "common/owned_fd.h"
#include "common/result.h"
#include "dataplane/ktls/ktls.h"

namespace sigil::dataplane {

class RecordLayer;
class KernelTlsLayer;

enum class IoStatus {
  kOk,         // `bytes` transferred (> 0)
  kWantRead,   // retry when the fd is readable
  kWantWrite,  // retry when the fd is writable (a TLS read can need this too)
  kEof,        // orderly end of the peer's stream (read side only)
  kReset,      // ECONNRESET / EPIPE: the peer reset or is gone
  kError,      // anything else; `error` says what
};

struct IoResult {
  IoStatus status = IoStatus::kOk;
  size_t bytes = 0;
  // kEof from a TLS peer that closed TCP without sending close_notify.
  bool truncated = false;
  std::string error;
};

class Endpoint {
 public:
  // `fd` must be a connected socket; it is made non-blocking.
  static std::unique_ptr<Endpoint> Plain(OwnedFd fd);
  // `ssl` is attached to `fd` (SSL_set_fd) and handshaken. Sets the SSL modes the relay needs:
  // partial writes, moving write buffer, released idle buffers.
  static std::unique_ptr<Endpoint> Tls(OwnedFd fd, SslPtr ssl);
  // `fd` carries a TLS 1.3 connection whose handshake is done and whose traffic keys (with
  // exact record sequence numbers) are `keys` (ktls::ExportTrafficKeys); no OpenSSL object is
  // kept. Errors: keys not matching the cipher suite, or OpenSSL failing to key a context.
  static Result<std::unique_ptr<Endpoint>> Records(OwnedFd fd, ktls::TrafficKeys keys);
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  int fd() const { return fd_.get(); }
  SSL* ssl() const { return ssl_.get(); }  // nullptr for plain, records and kTLS
  // TLS of any kind (OpenSSL, records, kTLS).
  bool is_tls() const { return ssl_ != nullptr || records_ != nullptr || ktls_ != nullptr; }
  bool is_records() const { return records_ != nullptr; }
  bool is_ktls() const { return ktls_ != nullptr; }
  // Plain or kTLS: the bytes read from / written to the socket are the payload (splice works).
  bool can_splice() const { return fd_.valid() && ssl_ == nullptr && records_ == nullptr; }
  const RecordLayer* records() const { return records_.get(); }  // nullptr unless records
  const KernelTlsLayer* ktls() const { return ktls_.get(); }     // nullptr unless kTLS

  // TLS endpoints: hands the connection's record layer from OpenSSL to RecordLayer and frees
  // the SSL (read the peer certificate, session reuse etc. before). The SSL's context must have
  // been prepared with ktls::PrepareContextForKtls before SSL_new. FailedPrecondition (nothing
  // changed, OpenSSL I/O continues) when ExportTrafficKeys refuses: OpenSSL holds unread bytes,
  // has an unfinished write, not TLS 1.3, keys already exported, ... Any other error leaves the
  // endpoint on OpenSSL too (the keys cannot be exported a second time).
  Result<void> SwitchToRecords();
  // TLS endpoints: hands the record layer to the kernel (ktls::EnableKernelTls: TCP_ULP "tls",
  // TLS_TX, TLS_RX) and frees the SSL; same preconditions as SwitchToRecords. Call only where
  // KernelTlsAvailable(). Errors:
  //   FailedPrecondition, Unimplemented: nothing changed, OpenSSL I/O continues (and
  //       SwitchToRecords would refuse for the same reason).
  //   Unavailable: the kernel refused the tls ULP after the keys were exported: OpenSSL I/O
  //       continues, but the keys cannot be exported again (SwitchToRecords refuses).
  //   Internal: key derivation failed or the kernel refused the keys after the ULP was
  //       attached; the endpoint has been aborted (RST) and is closed.
  Result<void> SwitchToKernelTls();
  bool closed() const { return !fd_.valid(); }

  IoResult Read(std::span<char> out);
  // A TLS write that returned kWantRead/kWantWrite must be retried with the same bytes (they
  // may move in memory) and at least the same length.
  IoResult Write(std::span<const char> in);
  // Ends our direction: TLS (and records) sends close_notify (may need kWantWrite retries),
  // then shutdown(SHUT_WR). Reading keeps working. kTLS: kWantWrite also while the kernel still
  // holds records it has not handed to TCP (see ktls_endpoint.h); no writability edge is
  // guaranteed for that, so retry on a short timer too.
  IoResult ShutdownWrite();
  // splice(2) between the socket and a pipe (can_splice() endpoints only): socket -> `pipe_w`
  // (at most `max` bytes; kOk, kEof, kWantRead, errors; a kTLS socket consumes control records
  // on the way) and `pipe_r` -> socket (`n` bytes at most; kOk, kWantWrite, errors).
  IoResult SpliceToPipe(int pipe_w, size_t max);
  IoResult SpliceFromPipe(int pipe_r, size_t n);
  // Closes the socket with an RST (SO_LINGER {1, 0}); no close_notify.
  void Abort();
  // Closes the socket normally.
  void Close();

 private:
  Endpoint(OwnedFd fd, SslPtr ssl);
  IoResult SslFailure(int rc, const char* op);

  OwnedFd fd_;
  SslPtr ssl_;
  std::unique_ptr<RecordLayer> records_;
  std::unique_ptr<KernelTlsLayer> ktls_;
  bool tls_shutdown_sent_ = false;
};

// Where the record layer of a handshaken TLS endpoint went (MoveRecordLayer).
enum class RecordPath {
  kKernelTls,  // the kernel (kTLS): the relay can splice
  kRecords,    // our RecordLayer
  kOpenSsl,    // stayed on OpenSSL (records pending, not TLS 1.3, keys already exported, ...)
  kFailed,     // SwitchToKernelTls failed with Internal: the endpoint was aborted
};

// After the handshake and any I/O through OpenSSL: frees the SSL and moves the record layer to
// the best place available, kernel TLS first when `kernel_tls` (normally KernelTlsAvailable()),
// then our RecordLayer, else it stays on OpenSSL. `why` (optional) gets the reason when the
// result is not the first choice.
RecordPath MoveRecordLayer(Endpoint& ep, bool kernel_tls, std::string* why = nullptr);
std::string_view RecordPathName(RecordPath path);

// Classifies an errno from a socket call: ECONNRESET/EPIPE/ENOTCONN/ECONNABORTED are resets.
IoResult ErrnoIoResult(int err, const char* op);

// Closes `fd` with an RST (SO_LINGER {1, 0}) so the peer sees the refusal at once; what
// Endpoint::Abort does, for sockets that never became an Endpoint.
void AbortSocket(OwnedFd fd);

}  // namespace sigil::dataplane
