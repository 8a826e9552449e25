#include "agent/core/first_contact.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <cerrno>
#include <cstring>

#include "common/host_port.h"
#include "common/ossl.h"

namespace sigil::agent {
namespace {

using SslCtxPtr = std::unique_ptr<SSL_CTX, OsslFree<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, OsslFree<SSL_free>>;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Result<void> ConnectWithTimeout(Fd& sock, const std::string& host, int port,
                                std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port_text = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res); rc != 0) {
    return Unavailable("server " + host + ":" + port_text + ": " + ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(res, ::freeaddrinfo);
  std::string last = "no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    Fd s{::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
    if (s.fd < 0) continue;
    if (::connect(s.fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last = std::strerror(errno);
      continue;
    }
    pollfd p{s.fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
      last = "connect timed out";
      continue;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      last = std::strerror(err);
      continue;
    }
    // Blocking from here on, bounded by socket timeouts.
    ::fcntl(s.fd, F_SETFL, 0);
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sock.fd = s.fd;
    s.fd = -1;
    return Ok();
  }
  return Unavailable("server " + host + ":" + port_text + ": " + last);
}

}  // namespace

Result<PinnedServer> FetchPinnedRoot(const std::string& address, const core::JoinToken& token,
                                     std::chrono::milliseconds timeout) {
  SIGIL_ASSIGN_OR_RETURN(auto hp, SplitHostPort("--server", address));
  if (hp.second == 0) return InvalidArgument("--server: port 0 in \"" + address + "\"");
  Fd sock;
  SIGIL_TRY(ConnectWithTimeout(sock, hp.first, hp.second, timeout));
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return OsslError("first contact: SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);  // verified below, against the pin
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof kAlpn);
  SslPtr ssl(SSL_new(ctx.get()));
  if (!ssl || SSL_set_fd(ssl.get(), sock.fd) != 1) return OsslError("first contact: SSL_new");
  if (SSL_connect(ssl.get()) != 1) {
    ClearOsslErrors();
    return Unavailable("first contact with " + address + ": TLS handshake failed");
  }
  STACK_OF(X509)* presented = SSL_get_peer_cert_chain(ssl.get());
  if (presented == nullptr || sk_X509_num(presented) == 0) {
    return PermissionDenied("first contact with " + address + ": no certificate presented");
  }
  std::vector<core::Certificate> chain;
  for (int i = 0; i < sk_X509_num(presented); ++i) {
    chain.push_back(core::Certificate::FromX509(sk_X509_value(presented, i)));
  }
  SSL_shutdown(ssl.get());

  const core::Certificate* root = nullptr;
  for (const auto& c : chain) {
    if (c.IsCa() && c.IsSelfSigned() && token.PinsCa(c)) root = &c;
  }
  if (root == nullptr) {
    return PermissionDenied("first contact with " + address +
                            ": the server did not present the CA the join token pins (sha256 " +
                            token.ca_sha256() + "); refusing to send the token");
  }
  // The leaf must validate to the pinned root alone.
  X509StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), root->get());
  std::unique_ptr<STACK_OF(X509), decltype([](STACK_OF(X509) * s) { sk_X509_free(s); })> untrusted(
      sk_X509_new_null());
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), chain[i].get());
  X509StoreCtxPtr vctx(X509_STORE_CTX_new());
  if (!vctx || X509_STORE_CTX_init(vctx.get(), store.get(), chain[0].get(), untrusted.get()) != 1) {
    return OsslError("first contact: X509_STORE_CTX_init");
  }
  if (X509_verify_cert(vctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(vctx.get());
    ClearOsslErrors();
    return PermissionDenied("first contact with " + address +
                            ": server certificate does not validate to the pinned CA: " +
                            X509_verify_cert_error_string(err));
  }
  auto uris = chain[0].UriSans();
  if (uris.size() != 1) {
    return PermissionDenied("first contact with " + address + ": server certificate has " +
                            std::to_string(uris.size()) + " URI SANs, want 1");
  }
  auto id = core::SpiffeId::Parse(uris[0]);
  if (!id.ok() || id->path() != "/sigil/server") {
    return PermissionDenied("first contact with " + address + ": server certificate is " + uris[0] +
                            ", not spiffe://<trust domain>/sigil/server");
  }
  return PinnedServer{*root, id->trust_domain()};
}

}  // namespace sigil::agent
