// KernelTlsLayer: the kernel-TLS (kTLS) kind of Endpoint (Endpoint::SwitchToKernelTls). After
// the handshake the TLS 1.3 traffic keys go into the kernel (ktls::EnableKernelTls: TCP_ULP
// "tls", TLS_TX, TLS_RX) and the SSL object is freed; plain send()/recv()/splice() on the socket
// then carry payload bytes while the kernel seals and opens the records. This class adds what
// the kernel leaves to the application, with the same non-blocking contract as the other kinds:
//
// Receive. A recvmsg() with room for the TLS_GET_RECORD_TYPE control message returns the
// content of one record type at a time (a plain recv() would fail with EIO at a non-data
// record; splice() fails with EINVAL and leaves the record queued). Non-data content is parsed
// as a byte stream per type, so a record delivered in pieces (small buffers) is handled too:
//   alert      close_notify -> kEof (clean); any other alert -> kReset
//   handshake  NewSessionTicket -> skipped (tickets_skipped()); KeyUpdate -> kError (Linux 6.1
//              cannot rekey a kTLS socket; Sigil peers never send one); anything else -> kError
//   other      kError
// More than kMaxControlRecords control reads in a row without application data is an error (a
// peer cannot keep the loop busy). TCP EOF without close_notify is kEof with `truncated`. A
// record that fails authentication makes the kernel fail the socket (EBADMSG): kError.
//
// Send. send()/splice() hand plaintext to the kernel. ShutdownWrite's close_notify is an alert
// record sent with a TLS_SET_RECORD_TYPE control message. One kernel behaviour needs care: on a
// non-blocking socket the kernel may encrypt a record and then keep (part of) it in its own
// transmit list because TCP's send buffer was full, while send() reports the bytes as accepted;
// a kernel work item pushes the rest when TCP has room again. shutdown(SHUT_WR) or close() before
// that would drop those bytes (the FIN goes out first and later pushes fail). So
// SendCloseNotify() returns kOk only once everything up to and including the close_notify is
// in TCP's queue, judged by byte accounting: TCP bytes queued since the switch (TCP_INFO
// bytes_acked + SIOCOUTQ) must equal the plaintext handed over plus 22 bytes per record sealed
// (the record sequence number from getsockopt TLS_TX; header 5 + content type 1 + tag 16). Until
// then it returns kWantWrite; since no writability edge is guaranteed when the kernel's work
// item finishes, the caller must retry on a short timer as well (the relay does).
//
// Not thread-safe; used from the owning loop's thread like every Endpoint.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/result.h"
#include "dataplane/ktls/ktls.h"
#include "dataplane/relay/endpoint.h"

namespace sigil::dataplane {

// The non-data content of kTLS receive operations, parsed as one byte stream per record type.
class KtlsControlParser {
 public:
  // Feeds content of inner type `type` (not application data). kOk: consumed, go on; kEof:
  // close_notify; kReset: another alert; kError: anything not allowed after the handshake.
  IoResult Feed(uint8_t type, std::span<const uint8_t> content);
  // Inside a handshake message or an alert: application data now would be a protocol error.
  bool mid_message() const { return hs_hdr_len_ > 0 || hs_body_left_ > 0 || alert_len_ > 0; }
  uint64_t tickets() const { return tickets_; }

 private:
  uint8_t hs_hdr_[4] = {};
  uint32_t hs_hdr_len_ = 0;
  uint32_t hs_body_left_ = 0;
  uint8_t alert_[2] = {};
  uint32_t alert_len_ = 0;
  uint8_t last_type_ = 0;
  uint64_t tickets_ = 0;
};

class KernelTlsLayer {
 public:
  static constexpr uint32_t kMaxControlRecords = 256;
  static constexpr uint64_t kRecordOverhead = 22;  // TLS 1.3: header 5 + type 1 + tag 16

  // Installs the keys of `ssl` (TLS 1.3, handshake done, context prepared with
  // ktls::PrepareContextForKtls) on `fd` with ktls::EnableKernelTls; errors are its errors
  // (Internal: the socket is in an undefined state and must be reset).
  static Result<std::unique_ptr<KernelTlsLayer>> Enable(int fd, SSL* ssl);
  KernelTlsLayer(const KernelTlsLayer&) = delete;
  KernelTlsLayer& operator=(const KernelTlsLayer&) = delete;

  // Endpoint::Read/Write semantics on the non-blocking socket `fd`.
  IoResult Read(int fd, std::span<char> out);
  IoResult Write(int fd, std::span<const char> in);
  // splice(2) from the socket into the pipe `pipe_w` (at most `max` bytes; control records in
  // the way are consumed as in Read), and from the pipe `pipe_r` into the socket.
  IoResult SpliceToPipe(int fd, int pipe_w, size_t max);
  IoResult SpliceFromPipe(int fd, int pipe_r, size_t n);
  // Sends close_notify (once) and waits (kWantWrite) until the kernel has handed every record
  // to TCP; see the header comment. Does not shut the socket down; Endpoint does.
  IoResult SendCloseNotify(int fd);

  ktls::KtlsCipher cipher() const { return cipher_; }
  uint64_t tickets_skipped() const { return control_.tickets(); }
  uint64_t plaintext_sent() const { return plain_sent_; }
  // SendCloseNotify calls that found records still inside the kernel.
  uint64_t flush_waits() const { return flush_waits_; }
  // False when the byte accounting could not be set up or was abandoned (then SendCloseNotify
  // does not wait).
  bool tx_accounting() const { return tx_accounting_; }
  // Bytes sealed by the kernel but not yet in TCP's queue according to the accounting (0 when
  // everything was handed over; negative would mean the accounting is wrong). For tests and
  // diagnostics; FailedPrecondition without accounting.
  Result<int64_t> UnsentBytes(int fd) const;

 private:
  KernelTlsLayer() = default;
  IoResult ReadFailure(IoResult r);
  IoResult WriteFailure(IoResult r);
  // One recvmsg into `buf` and what it means: data (bytes > 0), kOk with 0 bytes (control
  // content consumed), kEof, kWantRead or a failure.
  IoResult ReceiveOnce(int fd, std::span<char> buf);
  // Whether TCP has been handed everything sealed so far (see the header comment).
  bool TxFlushed(int fd);

  KtlsControlParser control_;
  ktls::KtlsCipher cipher_ = ktls::KtlsCipher::kAes128Gcm;
  uint64_t tx_seq0_ = 0;     // first record sequence number of the kernel's transmit side
  uint64_t tcp_base_ = 0;    // TCP bytes queued (bytes_acked + SIOCOUTQ) at the switch
  uint64_t plain_sent_ = 0;  // plaintext handed to the kernel, close_notify's 2 bytes included
  uint64_t last_queued_ = 0;
  uint64_t flush_waits_ = 0;
  uint32_t stalled_checks_ = 0;
  uint32_t control_run_ = 0;
  bool tx_accounting_ = false;
  bool close_notify_sent_ = false;
  bool read_eof_ = false;
  bool read_failed_ = false;
  bool write_failed_ = false;
};

}  // namespace sigil::dataplane
