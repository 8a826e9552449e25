// Endpoint: one side of a relay, a connected non-blocking TCP socket: plaintext, TLS with the
// handshake done (OpenSSL), or TLS 1.3 records protected by our own record layer with keys
// exported from OpenSSL after the handshake (Records / SwitchToRecords, see record_endpoint.h).
// Non-blocking I/O primitives with one result type for all kinds, so the relay and the async
// helpers do not care which one they hold.
//
// All calls happen on the owning loop's thread (OpenSSL's error queue is thread-local).
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "common/ossl.h"
#include "common/owned_fd.h"
#include "common/result.h"
#include "dataplane/ktls/ktls.h"

namespace sigil::dataplane {

class RecordLayer;

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
  SSL* ssl() const { return ssl_.get(); }  // nullptr for plain and records
  // Encrypted (OpenSSL or records): bytes on the socket are not the payload, so no splice.
  bool is_tls() const { return ssl_ != nullptr || records_ != nullptr; }
  bool is_records() const { return records_ != nullptr; }
  const RecordLayer* records() const { return records_.get(); }  // nullptr unless records

  // TLS endpoints: hands the connection's record layer from OpenSSL to RecordLayer and frees
  // the SSL (read the peer certificate, session reuse etc. before). The SSL's context must have
  // been prepared with ktls::PrepareContextForKtls before SSL_new. FailedPrecondition (nothing
  // changed, OpenSSL I/O continues) when ExportTrafficKeys refuses: OpenSSL holds unread bytes,
  // has an unfinished write, not TLS 1.3, keys already exported, ... Any other error leaves the
  // endpoint on OpenSSL too (the keys cannot be exported a second time).
  Result<void> SwitchToRecords();
  bool closed() const { return !fd_.valid(); }

  IoResult Read(std::span<char> out);
  // A TLS write that returned kWantRead/kWantWrite must be retried with the same bytes (they
  // may move in memory) and at least the same length.
  IoResult Write(std::span<const char> in);
  // Ends our direction: TLS (and records) sends close_notify (may need kWantWrite retries),
  // then shutdown(SHUT_WR). Reading keeps working.
  IoResult ShutdownWrite();
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
  bool tls_shutdown_sent_ = false;
};

// Classifies an errno from a socket call: ECONNRESET/EPIPE/ENOTCONN/ECONNABORTED are resets.
IoResult ErrnoIoResult(int err, const char* op);

// Closes `fd` with an RST (SO_LINGER {1, 0}) so the peer sees the refusal at once; what
// Endpoint::Abort does, for sockets that never became an Endpoint.
void AbortSocket(OwnedFd fd);

}  // namespace sigil::dataplane
