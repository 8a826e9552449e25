// kTLS for OpenSSL TLS 1.3 connections: key export (keylog + message callbacks), HKDF-Expand-
// Label, kernel crypto_info installation, and the small kTLS receive/alert helpers.
#include "dataplane/ktls/ktls.h"

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <utility>
#include <vector>

#include "common/ossl.h"
#include "common/owned_fd.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace sigil::dataplane::ktls {

Result<std::pair<OwnedFd, OwnedFd>> ConnectedLoopbackPair() {
  OwnedFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.valid()) return Internal(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener.get(), 1) != 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Internal(std::string("loopback listen: ") + std::strerror(errno));
  }
  OwnedFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!client.valid() ||
      ::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Internal(std::string("loopback connect: ") + std::strerror(errno));
  }
  OwnedFd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!server.valid()) return Internal(std::string("loopback accept: ") + std::strerror(errno));
  return std::pair<OwnedFd, OwnedFd>(std::move(client), std::move(server));
}

namespace {

constexpr uint8_t kContentAlert = 21;
constexpr uint8_t kContentHandshake = 22;
constexpr uint8_t kContentApplicationData = 23;
constexpr uint8_t kHandshakeNewSessionTicket = 4;
constexpr uint8_t kHandshakeFinished = 20;
constexpr uint8_t kHandshakeKeyUpdate = 24;
constexpr size_t kIvLen = 12;

// result.h has no helper for this code.
Error Unimplemented(std::string msg) { return {ErrorCode::kUnimplemented, std::move(msg)}; }

// Per-connection capture, attached to the SSL as ex_data by the message callback.
struct Capture {
  Capture() = default;
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;
  SecretBytes client_secret;  // CLIENT_TRAFFIC_SECRET_0
  SecretBytes server_secret;  // SERVER_TRAFFIC_SECRET_0
  bool tx_app = false;        // our Finished written: later records use the application keys
  bool rx_app = false;        // peer's Finished read
  uint64_t tx_records = 0;    // records written / read under the application keys
  uint64_t rx_records = 0;
  bool key_update = false;  // a KeyUpdate passed in either direction
  bool exported = false;
};

void FreeCapture(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
                 void* /*argp*/) {
  delete static_cast<Capture*>(ptr);  // SecretBytes wipe themselves
}

int CaptureIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeCapture);
  return index;
}

Capture* GetCapture(const SSL* ssl) {
  return static_cast<Capture*>(SSL_get_ex_data(ssl, CaptureIndex()));
}

void MsgCallback(int write_p, int version, int content_type, const void* buf, size_t len, SSL* ssl,
                 void* /*arg*/) {
  (void)version;
  Capture* cap = GetCapture(ssl);
  if (cap == nullptr) {
    cap = new Capture();
    if (SSL_set_ex_data(ssl, CaptureIndex(), cap) != 1) {
      delete cap;
      return;  // ExportTrafficKeys then reports the missing capture
    }
  }
  const auto* bytes = static_cast<const uint8_t*>(buf);
  if (content_type == SSL3_RT_HEADER) {
    if (write_p != 0 && cap->tx_app) ++cap->tx_records;
    if (write_p == 0 && cap->rx_app) ++cap->rx_records;
    return;
  }
  if (content_type != SSL3_RT_HANDSHAKE || len < 1) return;
  // TLS 1.3 changes keys at record boundaries right after Finished, and OpenSSL reports a
  // handshake message after the header of the record that carried it.
  if (bytes[0] == kHandshakeFinished) {
    if (write_p != 0) {
      cap->tx_app = true;
      cap->tx_records = 0;
    } else {
      cap->rx_app = true;
      cap->rx_records = 0;
    }
  } else if (bytes[0] == kHandshakeKeyUpdate) {
    cap->key_update = true;
  }
}

int HexNibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void KeylogCallback(const SSL* ssl, const char* line) {
  Capture* cap = GetCapture(ssl);
  if (cap == nullptr) return;
  std::string_view text(line);
  SecretBytes* dest = nullptr;
  if (text.starts_with("CLIENT_TRAFFIC_SECRET_0 ")) {
    dest = &cap->client_secret;
  } else if (text.starts_with("SERVER_TRAFFIC_SECRET_0 ")) {
    dest = &cap->server_secret;
  } else {
    return;
  }
  size_t last_space = text.rfind(' ');
  std::string_view hex = text.substr(last_space + 1);
  if (hex.empty() || hex.size() % 2 != 0 || hex.size() > 2 * EVP_MAX_MD_SIZE) return;
  SecretBytes secret(hex.size() / 2);
  for (size_t i = 0; i < secret.size(); ++i) {
    int hi = HexNibble(hex[2 * i]);
    int lo = HexNibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return;  // `secret` wipes itself
    secret.data()[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  *dest = std::move(secret);
}

struct CipherParams {
  KtlsCipher cipher;
  size_t key_len;
};

Result<CipherParams> CipherOf(const SSL* ssl) {
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl);
  if (c == nullptr) return FailedPrecondition("ktls: no cipher negotiated");
  switch (SSL_CIPHER_get_id(c)) {
    case TLS1_3_CK_AES_128_GCM_SHA256:
      return CipherParams{KtlsCipher::kAes128Gcm, 16};
    case TLS1_3_CK_AES_256_GCM_SHA384:
      return CipherParams{KtlsCipher::kAes256Gcm, 32};
    case TLS1_3_CK_CHACHA20_POLY1305_SHA256:
      return CipherParams{KtlsCipher::kChacha20Poly1305, 32};
    default:
      return Unimplemented(std::string("ktls: cipher suite ") + SSL_CIPHER_get_name(c) +
                           " is not supported");
  }
}

Result<DirectionKeys> DeriveDirection(const EVP_MD* md, const SecretBytes& secret, size_t key_len,
                                      uint64_t seq) {
  DirectionKeys keys;
  SIGIL_ASSIGN_OR_RETURN(keys.key, HkdfExpandLabel(md, secret.span(), "key", {}, key_len));
  SIGIL_ASSIGN_OR_RETURN(keys.iv, HkdfExpandLabel(md, secret.span(), "iv", {}, kIvLen));
  keys.seq = seq;
  return keys;
}

void PutSeq(uint64_t seq, unsigned char* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<unsigned char>(seq & 0xff);
    seq >>= 8;
  }
}

// Fills the kernel's crypto_info for one direction, installs it and wipes it.
template <class Info>
Result<void> InstallInfo(int fd, int optname, Info& info) {
  int rc = ::setsockopt(fd, SOL_TLS, optname, &info, sizeof(info));
  int err = errno;
  OPENSSL_cleanse(&info, sizeof(info));
  if (rc != 0) {
    return Internal(std::string("ktls: setsockopt(SOL_TLS, ") +
                    (optname == TLS_TX ? "TLS_TX" : "TLS_RX") + "): " + std::strerror(err));
  }
  return Ok();
}

// AES-GCM (128 or 256): the kernel takes the IV as a 4-byte salt and an 8-byte explicit part.
template <typename Info>
Result<void> InstallGcm(int fd, int optname, uint16_t cipher_type, const DirectionKeys& k) {
  Info info{};
  info.info.version = TLS_1_3_VERSION;
  info.info.cipher_type = cipher_type;
  std::memcpy(info.key, k.key.data(), sizeof(info.key));
  std::memcpy(info.salt, k.iv.data(), sizeof(info.salt));
  std::memcpy(info.iv, k.iv.data() + sizeof(info.salt), sizeof(info.iv));
  PutSeq(k.seq, info.rec_seq);
  return InstallInfo(fd, optname, info);
}

Result<void> InstallDirection(int fd, int optname, KtlsCipher cipher, const DirectionKeys& k) {
  switch (cipher) {
    case KtlsCipher::kAes128Gcm:
      return InstallGcm<tls12_crypto_info_aes_gcm_128>(fd, optname, TLS_CIPHER_AES_GCM_128, k);
    case KtlsCipher::kAes256Gcm:
      return InstallGcm<tls12_crypto_info_aes_gcm_256>(fd, optname, TLS_CIPHER_AES_GCM_256, k);
    case KtlsCipher::kChacha20Poly1305: {
      tls12_crypto_info_chacha20_poly1305 info{};
      info.info.version = TLS_1_3_VERSION;
      info.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
      std::memcpy(info.key, k.key.data(), sizeof(info.key));
      std::memcpy(info.iv, k.iv.data(), sizeof(info.iv));  // no salt: the whole 12-byte IV
      PutSeq(k.seq, info.rec_seq);
      return InstallInfo(fd, optname, info);
    }
  }
  return Internal("ktls: unknown cipher");
}

bool ProbeUlp() {
  auto pair = ConnectedLoopbackPair();
  if (!pair.ok()) return false;
  // The ULP can only be set on an established socket.
  return ::setsockopt(pair->first.get(), SOL_TCP, TCP_ULP, "tls", std::strlen("tls")) == 0;
}

// recvmsg with room for the TLS_GET_RECORD_TYPE control message; returns bytes and type.
struct RecordRead {
  size_t bytes = 0;
  uint8_t type = kContentApplicationData;
};

Result<RecordRead> RecvRecord(int fd, std::span<uint8_t> buf, int flags) {
  std::array<char, CMSG_SPACE(sizeof(unsigned char))> control{};
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Internal(std::string("ktls: recvmsg: ") + std::strerror(errno));
  RecordRead out;
  out.bytes = static_cast<size_t>(n);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) {
      out.type = *CMSG_DATA(c);
    }
  }
  return out;
}

}  // namespace

std::string_view KtlsCipherName(KtlsCipher cipher) {
  switch (cipher) {
    case KtlsCipher::kAes128Gcm:
      return "TLS_AES_128_GCM_SHA256";
    case KtlsCipher::kAes256Gcm:
      return "TLS_AES_256_GCM_SHA384";
    case KtlsCipher::kChacha20Poly1305:
      return "TLS_CHACHA20_POLY1305_SHA256";
  }
  return "unknown";
}

Result<void> PrepareContextForKtls(SSL_CTX* ctx) {
  if (ctx == nullptr) return InvalidArgument("ktls: null SSL_CTX");
  if (CaptureIndex() < 0) return OsslError("ktls: SSL_get_ex_new_index");
  SSL_CTX_keylog_cb_func existing = SSL_CTX_get_keylog_callback(ctx);
  if (existing != nullptr && existing != KeylogCallback) {
    return FailedPrecondition("ktls: the SSL_CTX already has a keylog callback");
  }
  SSL_CTX_set_keylog_callback(ctx, KeylogCallback);
  SSL_CTX_set_msg_callback(ctx, MsgCallback);
  return Ok();
}

Result<SecretBytes> HkdfExpandLabel(const EVP_MD* md, std::span<const uint8_t> secret,
                                    std::string_view label, std::span<const uint8_t> context,
                                    size_t length) {
  constexpr std::string_view kPrefix = "tls13 ";
  if (md == nullptr || secret.empty()) return InvalidArgument("hkdf: missing digest or secret");
  if (length == 0 || length > 0xffff || kPrefix.size() + label.size() > 255 ||
      context.size() > 255) {
    return InvalidArgument("hkdf: label, context or length out of range");
  }
  std::vector<uint8_t> info;
  info.push_back(static_cast<uint8_t>(length >> 8));
  info.push_back(static_cast<uint8_t>(length & 0xff));
  info.push_back(static_cast<uint8_t>(kPrefix.size() + label.size()));
  info.insert(info.end(), kPrefix.begin(), kPrefix.end());
  info.insert(info.end(), label.begin(), label.end());
  info.push_back(static_cast<uint8_t>(context.size()));
  info.insert(info.end(), context.begin(), context.end());

  EvpPkeyCtxPtr pctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  if (!pctx) return OsslError("hkdf: EVP_PKEY_CTX_new_id");
  SIGIL_TRY(OsslCheck(EVP_PKEY_derive_init(pctx.get()), "hkdf: derive_init"));
  SIGIL_TRY(OsslCheck(EVP_PKEY_CTX_set_hkdf_mode(pctx.get(), EVP_PKEY_HKDEF_MODE_EXPAND_ONLY),
                      "hkdf: mode"));
  SIGIL_TRY(OsslCheck(EVP_PKEY_CTX_set_hkdf_md(pctx.get(), md), "hkdf: md"));
  SIGIL_TRY(OsslCheck(
      EVP_PKEY_CTX_set1_hkdf_key(pctx.get(), secret.data(), static_cast<int>(secret.size())),
      "hkdf: key"));
  SIGIL_TRY(
      OsslCheck(EVP_PKEY_CTX_add1_hkdf_info(pctx.get(), info.data(), static_cast<int>(info.size())),
                "hkdf: info"));
  SecretBytes out(length);
  size_t out_len = length;
  SIGIL_TRY(OsslCheck(EVP_PKEY_derive(pctx.get(), out.data(), &out_len), "hkdf: derive"));
  if (out_len != length) return Internal("hkdf: short output");
  return out;
}

Result<TrafficKeys> ExportTrafficKeys(SSL* ssl) {
  if (ssl == nullptr) return InvalidArgument("ktls: null SSL");
  if (SSL_version(ssl) != TLS1_3_VERSION) {
    return FailedPrecondition("ktls: only TLS 1.3 connections are supported");
  }
  if (SSL_is_init_finished(ssl) != 1) return FailedPrecondition("ktls: handshake not complete");
  Capture* cap = GetCapture(ssl);
  if (cap == nullptr) {
    return FailedPrecondition("ktls: SSL_CTX was not prepared with PrepareContextForKtls");
  }
  if (cap->exported) return FailedPrecondition("ktls: traffic keys were already exported");
  if (cap->client_secret.empty() || cap->server_secret.empty()) {
    return FailedPrecondition("ktls: application traffic secrets were not captured");
  }
  if (!cap->tx_app || !cap->rx_app) {
    return FailedPrecondition("ktls: Finished messages not seen in both directions");
  }
  if (cap->key_update) {
    return FailedPrecondition("ktls: a KeyUpdate happened; only generation-0 keys are supported");
  }
  if (SSL_has_pending(ssl) != 0) {
    return FailedPrecondition(
        "ktls: OpenSSL holds buffered records (unread application data or read-ahead); read "
        "them with SSL_read first");
  }
  if (SSL_want_write(ssl) != 0 || BIO_wpending(SSL_get_wbio(ssl)) > 0) {
    return FailedPrecondition("ktls: OpenSSL has an unfinished write");
  }
  SIGIL_ASSIGN_OR_RETURN(CipherParams params, CipherOf(ssl));
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(SSL_get_current_cipher(ssl));
  if (md == nullptr) return Internal("ktls: cipher has no handshake digest");

  bool server = SSL_is_server(ssl) == 1;
  const SecretBytes& tx_secret = server ? cap->server_secret : cap->client_secret;
  const SecretBytes& rx_secret = server ? cap->client_secret : cap->server_secret;
  TrafficKeys keys;
  keys.cipher = params.cipher;
  SIGIL_ASSIGN_OR_RETURN(keys.tx, DeriveDirection(md, tx_secret, params.key_len, cap->tx_records));
  SIGIL_ASSIGN_OR_RETURN(keys.rx, DeriveDirection(md, rx_secret, params.key_len, cap->rx_records));
  cap->client_secret = SecretBytes();  // move-assign wipes the old buffers
  cap->server_secret = SecretBytes();
  cap->exported = true;
  return keys;
}

Result<KtlsStatus> EnableKernelTls(int fd, SSL* ssl) {
  if (fd < 0) return InvalidArgument("ktls: bad fd");
  if (ssl == nullptr) return InvalidArgument("ktls: null SSL");
  if (SSL_get_fd(ssl) != fd) return InvalidArgument("ktls: fd is not the SSL's socket");
  // Preconditions first (they leave the connection usable), then the key export.
  SIGIL_ASSIGN_OR_RETURN(TrafficKeys keys, ExportTrafficKeys(ssl));
  if (::setsockopt(fd, SOL_TCP, TCP_ULP, "tls", std::strlen("tls")) != 0) {
    int err = errno;
    if (err == ENOENT) {
      return Unavailable("ktls: kernel has no tls ULP (setsockopt TCP_ULP \"tls\": ENOENT)");
    }
    return Unavailable(std::string("ktls: setsockopt TCP_ULP \"tls\": ") + std::strerror(err));
  }
  KtlsStatus status;
  status.cipher = keys.cipher;
  status.tx_seq = keys.tx.seq;
  status.rx_seq = keys.rx.seq;
  SIGIL_TRY(InstallDirection(fd, TLS_TX, keys.cipher, keys.tx));
  status.tx = true;
  SIGIL_TRY(InstallDirection(fd, TLS_RX, keys.cipher, keys.rx));
  status.rx = true;
  // OpenSSL's record state is stale from here on: make SSL_shutdown a no-op.
  SSL_set_quiet_shutdown(ssl, 1);
  SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  return status;
}

Result<size_t> KtlsRecv(int fd, std::span<uint8_t> buf) {
  if (buf.empty()) return InvalidArgument("ktls: empty receive buffer");
  // Bounded: every skipped record is a NewSessionTicket; a peer sending endless tickets is
  // treated as an error rather than looping forever.
  constexpr int kMaxSkippedRecords = 64;
  for (int skipped = 0; skipped <= kMaxSkippedRecords; ++skipped) {
    uint8_t peek_byte = 0;
    SIGIL_ASSIGN_OR_RETURN(RecordRead peek, RecvRecord(fd, {&peek_byte, 1}, MSG_PEEK));
    if (peek.bytes == 0) return size_t{0};  // TCP EOF
    if (peek.type == kContentApplicationData) {
      SIGIL_ASSIGN_OR_RETURN(RecordRead rec, RecvRecord(fd, buf, 0));
      if (rec.type != kContentApplicationData) return Internal("ktls: record type changed");
      return rec.bytes;
    }
    // A control record: read it whole (a TLS record carries at most 2^14 plaintext bytes).
    std::vector<uint8_t> record(16384 + 256);
    SIGIL_ASSIGN_OR_RETURN(RecordRead rec, RecvRecord(fd, record, 0));
    if (rec.type == kContentAlert) {
      if (rec.bytes >= 2 && record[1] == 0) return size_t{0};  // close_notify
      return Unavailable("ktls: peer sent alert " +
                         std::to_string(rec.bytes >= 2 ? record[1] : 255));
    }
    if (rec.type != kContentHandshake) {
      return Internal("ktls: unexpected record type " + std::to_string(rec.type));
    }
    for (size_t off = 0; off < rec.bytes;) {
      if (rec.bytes - off < 4) return Internal("ktls: truncated post-handshake message");
      uint8_t msg_type = record[off];
      size_t msg_len = (size_t{record[off + 1]} << 16) | (size_t{record[off + 2]} << 8) |
                       size_t{record[off + 3]};
      if (msg_type == kHandshakeKeyUpdate) {
        return Unimplemented("ktls: peer sent KeyUpdate; kTLS rekeying is not supported");
      }
      if (msg_type != kHandshakeNewSessionTicket) {
        return Internal("ktls: unexpected post-handshake message " + std::to_string(msg_type));
      }
      if (rec.bytes - off - 4 < msg_len) return Internal("ktls: ticket spans records");
      off += 4 + msg_len;
    }
    OPENSSL_cleanse(record.data(), record.size());
  }
  return Internal("ktls: too many post-handshake records");
}

ssize_t KtlsSendCloseNotifyRecord(int fd) {
  std::array<uint8_t, 2> alert = {1, 0};  // warning, close_notify
  std::array<char, CMSG_SPACE(sizeof(unsigned char))> control{};
  iovec iov{alert.data(), alert.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_TLS;
  c->cmsg_type = TLS_SET_RECORD_TYPE;
  c->cmsg_len = CMSG_LEN(sizeof(unsigned char));
  *CMSG_DATA(c) = kContentAlert;
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

Result<void> KtlsSendCloseNotify(int fd) {
  const ssize_t n = KtlsSendCloseNotifyRecord(fd);
  if (n != 2) {
    return Internal(std::string("ktls: sending close_notify: ") +
                    (n < 0 ? std::strerror(errno) : "short write"));
  }
  return Ok();
}

bool KernelTlsSupported() {
  static const bool supported = ProbeUlp();
  return supported;
}

Result<std::map<std::string, uint64_t>> ReadTlsStat() {
  std::ifstream in("/proc/net/tls_stat");
  if (!in) return Unavailable("ktls: /proc/net/tls_stat missing (tls module not loaded)");
  std::map<std::string, uint64_t> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name;
    uint64_t value = 0;
    if (!(fields >> name >> value)) {
      return Internal("ktls: unparsable /proc/net/tls_stat line: " + line);
    }
    out[name] = value;
  }
  return out;
}

}  // namespace sigil::dataplane::ktls
