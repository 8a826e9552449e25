#include "dataplane/ktls/test_tls_pair.h"

#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "dataplane/ktls/ktls.h"

namespace sigil::dataplane::ktls::testing {

namespace {

struct Identity {
  EvpPkeyPtr key;
  X509Ptr cert;
};

Result<Identity> MakeIdentity() {
  Identity id;
  id.key.reset(EVP_EC_gen("P-256"));
  if (!id.key) return OsslError("test: EC key generation");
  id.cert.reset(X509_new());
  if (!id.cert) return OsslError("test: X509_new");
  X509* c = id.cert.get();
  SIGIL_TRY(OsslCheck(X509_set_version(c, 2), "test: version"));
  SIGIL_TRY(OsslCheck(ASN1_INTEGER_set(X509_get_serialNumber(c), 1), "test: serial"));
  if (X509_gmtime_adj(X509_getm_notBefore(c), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(c), 3600) == nullptr) {
    return OsslError("test: validity");
  }
  X509_NAME* name = X509_get_subject_name(c);
  SIGIL_TRY(OsslCheck(
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("ktls-test"), -1, -1, 0),
      "test: CN"));
  SIGIL_TRY(OsslCheck(X509_set_issuer_name(c, name), "test: issuer"));
  SIGIL_TRY(OsslCheck(X509_set_pubkey(c, id.key.get()), "test: pubkey"));
  if (X509_sign(c, id.key.get(), EVP_sha256()) <= 0) return OsslError("test: sign");
  return id;
}

Result<SslCtxPtr> MakeContext(bool server, const Identity& id, const PairOptions& o) {
  SslCtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  if (!ctx) return OsslError("test: SSL_CTX_new");
  int version = o.tls12 ? TLS1_2_VERSION : TLS1_3_VERSION;
  SSL_CTX_set_min_proto_version(ctx.get(), version);
  SSL_CTX_set_max_proto_version(ctx.get(), version);
  if (!o.tls12) {
    SIGIL_TRY(OsslCheck(SSL_CTX_set_ciphersuites(ctx.get(), o.ciphersuite.c_str()),
                        "test: ciphersuites"));
  }
  if (server) {
    SIGIL_TRY(OsslCheck(SSL_CTX_use_certificate(ctx.get(), id.cert.get()), "test: cert"));
    SIGIL_TRY(OsslCheck(SSL_CTX_use_PrivateKey(ctx.get(), id.key.get()), "test: key"));
    SIGIL_TRY(OsslCheck(SSL_CTX_set_num_tickets(ctx.get(), static_cast<size_t>(o.num_tickets)),
                        "test: num_tickets"));
  } else {
    SIGIL_TRY(OsslCheck(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), id.cert.get()),
                        "test: trust"));
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  }
  if (o.prepare) SIGIL_TRY(PrepareContextForKtls(ctx.get()));
  return ctx;
}

Error Errno(std::string what) { return Internal(what + ": " + std::strerror(errno)); }

Result<void> SetTimeouts(int fd, int seconds) {
  timeval tv{};
  tv.tv_sec = seconds;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
    return Errno("test: socket timeouts");
  }
  return Ok();
}

}  // namespace

Result<TlsPair> MakeTlsPair(const PairOptions& options) {
  SIGIL_ASSIGN_OR_RETURN(Identity id, MakeIdentity());
  TlsPair pair;
  SIGIL_ASSIGN_OR_RETURN(pair.server_ctx, MakeContext(true, id, options));
  SIGIL_ASSIGN_OR_RETURN(pair.client_ctx, MakeContext(false, id, options));

  SIGIL_ASSIGN_OR_RETURN(auto sockets, ConnectedLoopbackPair());
  pair.client.fd = std::move(sockets.first);
  pair.server.fd = std::move(sockets.second);
  SIGIL_TRY(SetTimeouts(pair.client.fd.get(), options.io_timeout_sec));
  SIGIL_TRY(SetTimeouts(pair.server.fd.get(), options.io_timeout_sec));

  pair.server.ssl.reset(SSL_new(pair.server_ctx.get()));
  pair.client.ssl.reset(SSL_new(pair.client_ctx.get()));
  if (!pair.server.ssl || !pair.client.ssl) return OsslError("test: SSL_new");
  SSL_set_fd(pair.server.ssl.get(), pair.server.fd.get());
  SSL_set_fd(pair.client.ssl.get(), pair.client.fd.get());

  int server_rc = 0;
  std::thread server([&] { server_rc = SSL_accept(pair.server.ssl.get()); });
  int client_rc = SSL_connect(pair.client.ssl.get());
  if (client_rc != 1) ::shutdown(pair.client.fd.get(), SHUT_RDWR);  // unblock the server
  server.join();
  if (client_rc != 1) return OsslError("test: SSL_connect");
  if (server_rc != 1) return OsslError("test: SSL_accept");
  return pair;
}

Result<void> SendAll(int fd, std::span<const uint8_t> data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("test: send");
    data = data.subspan(static_cast<size_t>(n));
  }
  return Ok();
}

Result<void> RecvExact(int fd, std::span<uint8_t> out) {
  while (!out.empty()) {
    ssize_t n = ::recv(fd, out.data(), out.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return Internal("test: recv: unexpected EOF");
    if (n < 0) return Errno("test: recv");
    out = out.subspan(static_cast<size_t>(n));
  }
  return Ok();
}

Result<void> SslWriteAll(SSL* ssl, std::span<const uint8_t> data) {
  while (!data.empty()) {
    size_t written = 0;
    if (SSL_write_ex(ssl, data.data(), data.size(), &written) != 1) {
      return OsslError("test: SSL_write");
    }
    data = data.subspan(written);
  }
  return Ok();
}

Result<void> SslReadExact(SSL* ssl, std::span<uint8_t> out) {
  while (!out.empty()) {
    size_t got = 0;
    if (SSL_read_ex(ssl, out.data(), out.size(), &got) != 1) return OsslError("test: SSL_read");
    out = out.subspan(got);
  }
  return Ok();
}

}  // namespace sigil::dataplane::ktls::testing
