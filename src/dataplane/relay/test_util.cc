// Test support for sigil_relay (see test_util.h).
#include "dataplane/relay/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

#include "dataplane/relay/async_io.h"

namespace sigil::dataplane::testing {

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "test setup failed: %s\n", what);
    std::abort();
  }
}

void AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  Check(ext != nullptr, "X509V3_EXT_conf_nid");
  Check(X509_add_ext(cert, ext.get(), -1) == 1, "X509_add_ext");
}

CertKey MakeCert(const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, bool ca) {
  CertKey out;
  out.key.reset(EVP_EC_gen("P-256"));
  Check(out.key != nullptr, "EVP_EC_gen");
  out.cert.reset(X509_new());
  X509* x = out.cert.get();
  Check(X509_set_version(x, 2) == 1, "X509_set_version");
  unsigned char serial[16];
  Check(RAND_bytes(serial, sizeof(serial)) == 1, "RAND_bytes");
  serial[0] &= 0x7f;
  BignumPtr bn(BN_bin2bn(serial, sizeof(serial), nullptr));
  Check(BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x)) != nullptr, "serial");
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Sigil test"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer != nullptr ? issuer : x;
  EVP_PKEY* signer_key = issuer_key != nullptr ? issuer_key : out.key.get();
  Check(X509_set_issuer_name(x, X509_get_subject_name(signer)) == 1, "issuer name");
  Check(X509_set_pubkey(x, out.key.get()) == 1, "pubkey");
  AddExt(x, signer, NID_subject_key_identifier, "hash");
  if (ca) {
    AddExt(x, signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    AddExt(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExt(x, signer, NID_authority_key_identifier, "keyid:always");
    AddExt(x, signer, NID_basic_constraints, "critical,CA:FALSE");
    AddExt(x, signer, NID_key_usage, "critical,digitalSignature");
    AddExt(x, signer, NID_ext_key_usage, "serverAuth,clientAuth");
  }
  Check(X509_sign(x, signer_key, EVP_sha256()) > 0, "X509_sign");
  return out;
}

SslCtxPtr BaseContext(const SSL_METHOD* method, const CertKey& id, const TestCa& trusted) {
  SslCtxPtr ctx(SSL_CTX_new(method));
  Check(ctx != nullptr, "SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  Check(SSL_CTX_use_certificate(ctx.get(), id.cert.get()) == 1, "use_certificate");
  Check(SSL_CTX_use_PrivateKey(ctx.get(), id.key.get()) == 1, "use_PrivateKey");
  Check(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), trusted.cert()) == 1,
        "X509_STORE_add_cert");
  return ctx;
}

}  // namespace

TestCa::TestCa(const std::string& name) : ca_(MakeCert(name, nullptr, nullptr, true)) {}

CertKey TestCa::Issue(const std::string& cn) const {
  return MakeCert(cn, ca_.cert.get(), ca_.key.get(), false);
}

SslCtxPtr ServerContext(const CertKey& id, const TestCa& trusted) {
  SslCtxPtr ctx = BaseContext(TLS_server_method(), id, trusted);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return ctx;
}

SslCtxPtr ClientContext(const CertKey& id, const TestCa& trusted) {
  SslCtxPtr ctx = BaseContext(TLS_client_method(), id, trusted);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  return ctx;
}

// ---- sockets ----

sockaddr_storage Loopback(uint16_t port) {
  sockaddr_storage ss{};
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons(port);
  std::memcpy(&ss, &sin, sizeof(sin));
  return ss;
}

uint16_t PortOf(const sockaddr_storage& ss) {
  sockaddr_in sin;
  std::memcpy(&sin, &ss, sizeof(sin));
  return ntohs(sin.sin_port);
}

Listener::Listener(int backlog) {
  fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  Check(fd_.valid(), "socket");
  int one = 1;
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_storage ss = Loopback(0);
  Check(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in)) == 0, "bind");
  Check(::listen(fd_.get(), backlog) == 0, "listen");
  socklen_t len = sizeof(addr_);
  Check(::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr_), &len) == 0, "getsockname");
}

OwnedFd Listener::Accept(std::chrono::milliseconds timeout) {
  pollfd p{fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return OwnedFd();
  return OwnedFd(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
}

OwnedFd ConnectTo(const sockaddr_storage& to) {
  OwnedFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  Check(fd.valid(), "socket");
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof(sockaddr_in)) != 0) {
    return OwnedFd();
  }
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

namespace {
using Clock = std::chrono::steady_clock;
int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}
}  // namespace

bool SendAll(int fd, std::string_view data, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, RemainingMs(deadline)) != 1) return false;
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

Result<std::string> RecvUntilEof(int fd, std::chrono::milliseconds timeout, size_t max) {
  auto deadline = Clock::now() + timeout;
  std::string out;
  char buf[65536];
  while (out.size() < max) {
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, RemainingMs(deadline));
    if (pr == 0) return Error(ErrorCode::kDeadlineExceeded, "recv: timeout");
    ssize_t n = ::recv(fd, buf, std::min(sizeof(buf), max - out.size()), MSG_DONTWAIT);
    if (n == 0) return out;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return Unavailable(std::string("recv: ") + std::strerror(errno));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<std::string> RecvExactly(int fd, size_t n, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::string out(n, '\0');
  size_t off = 0;
  while (off < n) {
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, RemainingMs(deadline));
    if (pr == 0) return Error(ErrorCode::kDeadlineExceeded, "recv: timeout");
    ssize_t r = ::recv(fd, out.data() + off, n - off, MSG_DONTWAIT);
    if (r == 0) return Unavailable("recv: eof after " + std::to_string(off) + " bytes");
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return Unavailable(std::string("recv: ") + std::strerror(errno));
    }
    off += static_cast<size_t>(r);
  }
  return out;
}

int WaitForError(int fd, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, RemainingMs(deadline)) != 1) return -1;
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) return 0;
    if (n < 0 && errno != EAGAIN && errno != EINTR) return errno;
  }
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

void RaiseFdLimit(rlim_t want) {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur >= want) return;
  if (rl.rlim_max < want) rl.rlim_max = want;  // root may raise the hard limit
  rl.rlim_cur = want;
  Check(::setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit(RLIMIT_NOFILE)");
}

size_t RssBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  int got = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

size_t HeapInUseBytes() { return mallinfo2().uordblks + mallinfo2().hblkhd; }

void RunOn(EventLoop& loop, std::function<void()> fn) {
  std::promise<void> done;
  auto fut = done.get_future();
  loop.Post([&] {
    fn();
    done.set_value();
  });
  Check(fut.wait_for(30s) == std::future_status::ready, "RunOn timed out");
}

void Prng::Fill(char* p, size_t n) {
  while (n > 0) {
    // xorshift64*
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    uint64_t v = s_ * 0x2545F4914F6CDD1DULL;
    size_t k = std::min<size_t>(n, sizeof(v));
    std::memcpy(p, &v, k);
    p += k;
    n -= k;
  }
}

std::string Prng::Bytes(size_t n) {
  std::string s(n, '\0');
  Fill(s.data(), n);
  return s;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

// ---- EchoServer ----

EchoServer::EchoServer() {
  int p[2];
  Check(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2");
  wake_r_.Reset(p[0]);
  wake_w_.Reset(p[1]);
  SetNonBlocking(listener_.fd());
  thread_ = std::thread([this] { Loop(); });
}

EchoServer::~EchoServer() {
  char c = 'x';
  [[maybe_unused]] ssize_t n = ::write(wake_w_.get(), &c, 1);
  thread_.join();
}

void EchoServer::Loop() {
  struct Conn {
    OwnedFd fd;
    std::string out;
    bool eof = false;
  };
  std::map<int, Conn> conns;
  std::vector<pollfd> pfds;
  char buf[65536];
  for (;;) {
    pfds.clear();
    pfds.push_back({wake_r_.get(), POLLIN, 0});
    pfds.push_back({listener_.fd(), POLLIN, 0});
    for (auto& [fd, c] : conns) {
      short ev = 0;
      if (!c.eof && c.out.size() < (1 << 20)) ev |= POLLIN;
      if (!c.out.empty()) ev |= POLLOUT;
      pfds.push_back({fd, ev, 0});
    }
    if (::poll(pfds.data(), pfds.size(), 1000) < 0 && errno != EINTR) return;
    if (pfds[0].revents != 0) return;
    if (pfds[1].revents & POLLIN) {
      for (;;) {
        int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;
        accepted_.fetch_add(1);
        conns[fd].fd.Reset(fd);
      }
    }
    for (size_t i = 2; i < pfds.size(); ++i) {
      if (pfds[i].revents == 0) continue;
      auto it = conns.find(pfds[i].fd);
      Conn& c = it->second;
      bool drop = false;
      if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = ::recv(c.fd.get(), buf, sizeof(buf), 0);
        if (n > 0) {
          c.out.append(buf, static_cast<size_t>(n));
        } else if (n == 0) {
          c.eof = true;
        } else if (errno != EAGAIN && errno != EINTR) {
          drop = true;
        }
      }
      if (!drop && !c.out.empty()) {
        ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n > 0) {
          c.out.erase(0, static_cast<size_t>(n));
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          drop = true;
        }
      }
      if (drop || (c.eof && c.out.empty())) conns.erase(it);
    }
  }
}

// ---- RelayHop ----

void RelayHop::State::Error(std::string e) {
  std::lock_guard lock(mu);
  errors.push_back(std::move(e));
  cv.notify_all();
}

namespace {

void StartHopRelay(EventLoop& loop, std::shared_ptr<RelayHop::State> st,
                   std::unique_ptr<Endpoint> in, std::unique_ptr<Endpoint> out) {
  auto handle = StartRelay(loop, std::move(in), std::move(out), st->config.options,
                           [st](const RelayStats& stats) {
                             std::lock_guard lock(st->mu);
                             st->finished.push_back(stats);
                             st->cv.notify_all();
                           });
  std::lock_guard lock(st->mu);
  st->started.push_back(std::move(handle));
  st->cv.notify_all();
}

void ConnectOut(EventLoop& loop, std::shared_ptr<RelayHop::State> st,
                std::shared_ptr<std::unique_ptr<Endpoint>> in) {
  AsyncConnect(loop, st->config.target, 10s, [&loop, st, in](Result<OwnedFd> fd) {
    if (!fd.ok()) {
      st->Error("connect: " + fd.error().ToString());
      return;
    }
    if (st->config.out == Wire::kPlain) {
      StartHopRelay(loop, st, std::move(*in), Endpoint::Plain(std::move(*fd)));
      return;
    }
    SslPtr ssl(SSL_new(st->config.client_ctx));
    SSL_set_connect_state(ssl.get());
    AsyncTlsHandshake(loop, std::move(*fd), std::move(ssl), 10s,
                      [&loop, st, in](Result<std::unique_ptr<Endpoint>> ep) {
                        if (!ep.ok()) {
                          st->Error("client handshake: " + ep.error().ToString());
                          return;
                        }
                        StartHopRelay(loop, st, std::move(*in), std::move(*ep));
                      });
  });
}

}  // namespace

RelayHop::RelayHop(LoopGroup& group, Config config)
    : group_(group), state_(std::make_shared<State>()), accept_loop_(group.at(0)) {
  state_->config = std::move(config);
  SetNonBlocking(listener_.fd());
  std::shared_ptr<State> st = state_;
  LoopGroup* g = &group_;
  int lfd = listener_.fd();
  RunOn(accept_loop_, [this, st, g, lfd] {
    auto watched = accept_loop_.Watch(lfd, EPOLLIN, [st, g, lfd](uint32_t) {
      for (;;) {
        int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) return;
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        auto owned = std::make_shared<OwnedFd>(fd);
        EventLoop& loop = g->Next();
        loop.Post([&loop, st, owned] {
          if (st->config.in == Wire::kPlain) {
            ConnectOut(
                loop, st,
                std::make_shared<std::unique_ptr<Endpoint>>(Endpoint::Plain(std::move(*owned))));
            return;
          }
          SslPtr ssl(SSL_new(st->config.server_ctx));
          SSL_set_accept_state(ssl.get());
          AsyncTlsHandshake(
              loop, std::move(*owned), std::move(ssl), 10s,
              [&loop, st](Result<std::unique_ptr<Endpoint>> ep) {
                if (!ep.ok()) {
                  st->Error("server handshake: " + ep.error().ToString());
                  return;
                }
                ConnectOut(loop, st, std::make_shared<std::unique_ptr<Endpoint>>(std::move(*ep)));
              });
        });
      }
    });
    Check(watched.ok(), "watch listener");
  });
}

RelayHop::~RelayHop() {
  if (!accept_loop_.stopped()) {
    int lfd = listener_.fd();
    RunOn(accept_loop_, [this, lfd] { accept_loop_.Unwatch(lfd); });
  }
}

std::vector<RelayStats> RelayHop::WaitFinished(size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mu);
  state_->cv.wait_for(lock, timeout, [&] { return state_->finished.size() >= n; });
  return state_->finished;
}

std::vector<std::shared_ptr<RelayHandle>> RelayHop::WaitStarted(size_t n,
                                                                std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mu);
  state_->cv.wait_for(lock, timeout, [&] { return state_->started.size() >= n; });
  return state_->started;
}

std::vector<std::string> RelayHop::setup_errors() {
  std::lock_guard lock(state_->mu);
  return state_->errors;
}

}  // namespace sigil::dataplane::testing
