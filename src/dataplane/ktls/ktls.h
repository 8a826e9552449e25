// Kernel TLS (kTLS) for TLS 1.3 connections handshaken by OpenSSL: after the handshake the
// record layer moves into the kernel, so plain send()/recv()/splice() on the socket produce and
// consume TLS records that the peer's ordinary TLS stack (OpenSSL or kTLS) understands.
//
// Why our own key export instead of OpenSSL's SSL_OP_ENABLE_KTLS: OpenSSL 3.0 offloads TLS 1.3
// only for transmit on Linux (receive offload for TLS 1.3 arrived in 3.2), it only does so while
// the application keeps calling SSL_read/SSL_write, and it decides silently (BIO_get_ktls_send).
// Here the traffic secrets are captured with the keylog callback, the record sequence numbers
// are counted with the message callback, and both directions are installed with
// setsockopt(SOL_TLS, TLS_TX/TLS_RX), after which the SSL object is only kept for its peer
// certificate and must not do I/O again.
//
// Usage:
//   PrepareContextForKtls(ctx)          // once per SSL_CTX, before SSL_new
//   ... SSL_accept / SSL_connect ...
//   EnableKernelTls(fd, ssl)            // Unavailable: keep using SSL_read/SSL_write
//
// The sequence-number rule. EnableKernelTls hands the kernel the number of records each side
// already protected with the application keys (NewSessionTicket messages, application data read
// or written through OpenSSL), counted exactly from the message callback. What it cannot see are
// records still in flight towards us; the kernel will decrypt them correctly (the numbering
// continues), but post-handshake messages arrive as non-data records:
//   - The server side may switch right after SSL_accept: OpenSSL writes its NewSessionTickets
//     inside SSL_accept and they are counted.
//   - On the client side the server's tickets may still be in flight. Either the peer sends no
//     tickets (SSL_CTX_set_num_tickets(ctx, 0)), or the client switches only after SSL_read has
//     returned application data the server wrote after its handshake (tickets precede it), or
//     the client reads with KtlsRecv(), which consumes NewSessionTicket records. A plain recv()
//     that meets a non-data record fails with EIO (never silently passes it on); splice() fails
//     with EINVAL.
//   - Refused (FailedPrecondition): OpenSSL holds buffered bytes (SSL_has_pending: unread
//     application data or read-ahead), has an unfinished write, the handshake is not complete,
//     the version is not TLS 1.3, the context was not prepared, or a KeyUpdate was seen.
// KeyUpdate after the switch is unsupported: Linux 6.1 cannot rekey a kTLS socket. KtlsRecv
// reports a received KeyUpdate as Unimplemented; plain recv() fails with EIO. (OpenSSL only
// sends KeyUpdate when the application calls SSL_key_update.)
//
// Secrets: the captured traffic secrets, derived keys and the kernel crypto_info structures are
// wiped (OPENSSL_cleanse) as soon as they have been handed to the kernel, and when the SSL is
// freed. The keylog callback of the prepared context belongs to this library (it would
// otherwise be SSLKEYLOGFILE-style debugging); so does its message callback.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "common/owned_fd.h"
#include "common/result.h"
#include "common/secret_bytes.h"

namespace sigil::dataplane::ktls {

enum class KtlsCipher { kAes128Gcm, kAes256Gcm, kChacha20Poly1305 };
std::string_view KtlsCipherName(KtlsCipher cipher);

// What EnableKernelTls installed.
struct KtlsStatus {
  KtlsCipher cipher = KtlsCipher::kAes128Gcm;
  bool tx = false;
  bool rx = false;
  uint64_t tx_seq = 0;  // sequence number of the first record the kernel will send
  uint64_t rx_seq = 0;  // sequence number of the first record the kernel will decrypt
};

// Installs the keylog and message callbacks that EnableKernelTls needs. Call before SSL_new
// (SSL objects copy the message callback). FailedPrecondition if the context already has a
// different keylog callback.
Result<void> PrepareContextForKtls(SSL_CTX* ctx);

// HKDF-Expand-Label(secret, label, context, length) of RFC 8446 section 7.1 ("tls13 " prefix).
Result<SecretBytes> HkdfExpandLabel(const EVP_MD* md, std::span<const uint8_t> secret,
                                    std::string_view label, std::span<const uint8_t> context,
                                    size_t length);

// One direction's record protection: key and IV (RFC 8446 7.3) and the next sequence number.
struct DirectionKeys {
  SecretBytes key;
  SecretBytes iv;  // 12 bytes: the per-record nonce is iv XOR (seq, left-padded to 12 bytes)
  uint64_t seq = 0;
};
struct TrafficKeys {
  KtlsCipher cipher = KtlsCipher::kAes128Gcm;
  DirectionKeys tx;
  DirectionKeys rx;
};

// Checks the preconditions above and derives both directions' keys from the captured
// application traffic secrets, which are wiped afterwards (one export per connection).
// EnableKernelTls uses it; exposed so tests can check the keys against OpenSSL's records.
Result<TrafficKeys> ExportTrafficKeys(SSL* ssl);

// Moves the record layer of the TLS 1.3 connection `ssl` (handshake complete, socket `fd`) into
// the kernel: TCP_ULP "tls", then TLS_TX and TLS_RX. Errors:
//   Unavailable         the kernel has no tls ULP: nothing changed, OpenSSL I/O continues.
//   FailedPrecondition  see the rule above: nothing changed, OpenSSL I/O continues.
//   Unimplemented       cipher suite not supported by this library.
//   Internal            the kernel refused the keys after the ULP was attached: the connection
//                       is unusable and must be closed.
// On success the SSL must not be used for I/O again (it is marked shut down so an accidental
// SSL_shutdown writes nothing); free it whenever convenient.
Result<KtlsStatus> EnableKernelTls(int fd, SSL* ssl);

// Receives application data from a kTLS socket: returns the byte count, 0 on close_notify (or
// TCP EOF), consumes NewSessionTicket records, Unavailable on other alerts, Unimplemented on
// KeyUpdate, Internal on socket errors (EAGAIN included: `fd` is expected to be blocking).
Result<size_t> KtlsRecv(int fd, std::span<uint8_t> buf);

// Sends a close_notify alert record through the kernel (the peer's SSL_read then returns 0).
Result<void> KtlsSendCloseNotify(int fd);
// The sendmsg(2) behind it, for non-blocking callers: returns what sendmsg returned (the alert
// is 2 bytes, taken whole or not at all; errno set on -1, EINTR already retried).
ssize_t KtlsSendCloseNotifyRecord(int fd);

// True if setsockopt(TCP_ULP, "tls") succeeds on a connected loopback TCP pair. Probed once.
bool KernelTlsSupported();

// A connected pair of blocking TCP sockets on 127.0.0.1: {client, server}. For the probe
// above and for tests that need a real TCP connection.
Result<std::pair<OwnedFd, OwnedFd>> ConnectedLoopbackPair();

// The counters of /proc/net/tls_stat (TlsCurrTxSw, TlsTxSw, TlsCurrRxSw, TlsRxSw, ...).
// Unavailable if the file does not exist (tls module not loaded).
Result<std::map<std::string, uint64_t>> ReadTlsStat();

}  // namespace sigil::dataplane::ktls
