// Test support for sigil_relay: a throwaway EC P-256 PKI and TLS contexts, loopback sockets
// with bounded blocking I/O, independent peers (echo and hashing servers on their own
// threads), and RelayHop, a listener that relays each accepted connection to a target.
#pragma once

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/ossl.h"
#include "common/owned_fd.h"
#include "common/result.h"
#include "dataplane/relay/event_loop.h"
#include "dataplane/relay/relay.h"

namespace sigil::dataplane::testing {

using namespace std::chrono_literals;

// ---- PKI ----

struct CertKey {
  X509Ptr cert;
  EvpPkeyPtr key;
};

// A self-signed CA (cA=true, keyCertSign) that issues leaves (serverAuth + clientAuth).
class TestCa {
 public:
  explicit TestCa(const std::string& name);
  CertKey Issue(const std::string& cn) const;
  X509* cert() const { return ca_.cert.get(); }

 private:
  CertKey ca_;
};

// TLS 1.3 contexts. The server requires a client certificate chaining to `trusted`; the
// client verifies the server against `trusted`.
SslCtxPtr ServerContext(const CertKey& id, const TestCa& trusted);
SslCtxPtr ClientContext(const CertKey& id, const TestCa& trusted);

// ---- sockets ----

sockaddr_storage Loopback(uint16_t port);
uint16_t PortOf(const sockaddr_storage& ss);

class Listener {
 public:
  explicit Listener(int backlog = 4096);
  int fd() const { return fd_.get(); }
  const sockaddr_storage& addr() const { return addr_; }
  // Blocking accept with a timeout; invalid fd on timeout.
  OwnedFd Accept(std::chrono::milliseconds timeout = 10s);

 private:
  OwnedFd fd_;
  sockaddr_storage addr_{};
};

OwnedFd ConnectTo(const sockaddr_storage& to);  // blocking connect, then blocking socket
bool SendAll(int fd, std::string_view data, std::chrono::milliseconds timeout = 10s);
// Reads until EOF (or `max` bytes). Returns the bytes, or an error (with errno text).
Result<std::string> RecvUntilEof(int fd, std::chrono::milliseconds timeout = 10s,
                                 size_t max = 64 << 20);
Result<std::string> RecvExactly(int fd, size_t n, std::chrono::milliseconds timeout = 10s);
// Waits for the socket to fail; returns the errno of the failing recv (0 on EOF, -1 timeout).
int WaitForError(int fd, std::chrono::milliseconds timeout = 10s);
void SetNonBlocking(int fd);
void RaiseFdLimit(rlim_t want);
size_t RssBytes();
// Bytes of live malloc allocations (glibc mallinfo2, all arenas).
size_t HeapInUseBytes();

// Runs `fn` on `loop` and waits for it.
void RunOn(EventLoop& loop, std::function<void()> fn);

// Deterministic pseudo-random bytes.
class Prng {
 public:
  explicit Prng(uint64_t seed) : s_(seed ? seed : 1) {}
  void Fill(char* p, size_t n);
  std::string Bytes(size_t n);

 private:
  uint64_t s_;
};

std::string Sha256Hex(std::string_view data);

// ---- independent peers ----

// Echoes every connection on its own thread with poll(); closes after echoing EOF.
class EchoServer {
 public:
  EchoServer();
  ~EchoServer();
  const sockaddr_storage& addr() const { return listener_.addr(); }
  size_t accepted() const { return accepted_.load(); }

 private:
  void Loop();
  Listener listener_;
  OwnedFd wake_r_, wake_w_;
  std::atomic<size_t> accepted_{0};
  std::thread thread_;
};

// ---- relay hop ----

enum class Wire { kPlain, kTls };

// Accepts on a loop of `group`, relays each connection to `target` on the next loop:
// in = plain or TLS server (handshake with `server_ctx`), out = plain or TLS client.
class RelayHop {
 public:
  struct Config {
    Wire in = Wire::kPlain;
    Wire out = Wire::kPlain;
    sockaddr_storage target{};
    SSL_CTX* server_ctx = nullptr;
    SSL_CTX* client_ctx = nullptr;
    RelayOptions options;
  };
  RelayHop(LoopGroup& group, Config config);
  ~RelayHop();
  const sockaddr_storage& addr() const { return listener_.addr(); }

  // Waits until `n` relays have finished (or timeout); returns their stats.
  std::vector<RelayStats> WaitFinished(size_t n, std::chrono::milliseconds timeout = 30s);
  // Waits until `n` relays have started (or timeout); returns their handles.
  std::vector<std::shared_ptr<RelayHandle>> WaitStarted(size_t n,
                                                        std::chrono::milliseconds timeout = 30s);
  std::vector<std::string> setup_errors();

  // Shared with callbacks that may outlive the hop.
  struct State {
    Config config;
    std::mutex mu;
    std::condition_variable cv;
    std::vector<RelayStats> finished;
    std::vector<std::shared_ptr<RelayHandle>> started;
    std::vector<std::string> errors;
    void Error(std::string e);
  };

  std::shared_ptr<State> state() const { return state_; }

 private:
  LoopGroup& group_;
  std::shared_ptr<State> state_;
  Listener listener_;
  EventLoop& accept_loop_;
};

}  // namespace sigil::dataplane::testing
