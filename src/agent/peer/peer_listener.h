// PeerListener: the agent's own accept loop for the Workload API Unix socket, so that every
// gRPC call can be attributed to the process on the other end of its connection.
//
// gRPC C++ 1.51 does not expose Unix peer credentials. The listener therefore owns the
// listening socket: a thread accepts each connection, reads SO_PEERCRED + a pidfd
// (peer_creds.h), records a PeerInfo under the connection's fd number N, and hands the fd to
// the server with grpc::AddInsecureChannelFromFd. The server must be built with no listening
// ports (ServerBuilder::BuildAndStart() without AddListeningPort).
//
// Mapping a call to its connection. Probed on this gRPC (1.51.1, Debian 12):
// - ServerContext::peer() of a call on such a channel is exactly "fd:N" (N = the fd number
//   passed to AddInsecureChannelFromFd). Nothing else per connection is visible to a handler:
//   the auth context of an fd channel carries no properties (no handshake, no security
//   connector), so "fd:N" is the only key.
// - gRPC keeps N open until the last call on the connection has been destroyed: a handler still
//   running after its client was SIGKILLed sees N open and unchanged (peer_listener_test.cc
//   keeps checking this). So while a handler runs, N cannot be closed and handed to a new
//   connection; PeerOf() from inside a handler is exact.
// Defence in depth against fd-number reuse:
// - N is chosen by the listener (fcntl F_DUPFD_CLOEXEC) round-robin from the top of the fd
//   space [RLIMIT_NOFILE - fd_range_size, RLIMIT_NOFILE): a number comes back only after the
//   cursor went round, not whenever the kernel's lowest-free rule would return it. (If every
//   number of the range is taken, the accepted fd is used as it is.) Cost: the kernel's fd
//   table grows to RLIMIT_NOFILE slots (8 bytes each); fds above 1023 are fine for epoll-based
//   gRPC but not for select(2), which nothing here uses.
// - Each entry records the socket's (st_dev, st_ino); PeerOf() fstat()s N and returns nothing
//   if N is closed or now refers to another file. Socket inode numbers are unique among live
//   sockets and recycled only after 2^32 allocations.
// Residual race (documented, not reachable with gRPC 1.51): if a future gRPC closed N before
// the calls on that connection ended, a handler outliving its connection could be attributed
// to a new connection given the same N, which takes at least `fd_range_size` accepts after the
// close. PeerOf() must only be called from within the handler of the call (the ServerContext
// alive); a call's PeerInfo copied out is still the right one later.
//
// Connection lifetime: the listener adds N to its own epoll set (EPOLLRDHUP, one-shot; the
// registration dies with the socket, no dup is held: a dup would keep gRPC's own epoll
// registration of a closed fd alive). After a hang-up the entry is re-checked every 10 ms for
// 2 s, and every entry is re-checked once a second; an entry is removed once N is closed or
// refers to another file, which releases its pidfd (closed when the last PeerInfo copy goes).
// At most `max_connections` entries exist; a connection beyond that is closed at once.
//
// Shutdown order: Stop() (no new connections; socket file unlinked), then grpc::Server::Shutdown
// and Wait, then destroy the listener. PeerOf() works until destruction.
// Thread-safety: PeerOf/GetStats may be called concurrently from any thread; Stop is idempotent.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "agent/peer/owned_fd.h"
#include "agent/peer/peer_creds.h"
#include "common/result.h"

namespace sigil::agent::peer {

struct ListenOptions {
  mode_t mode = 0666;                      // socket file mode: workloads of any uid connect
  size_t max_connections = 1024;           // open connections tracked at once
  int fd_range_size = 4096;                // see header comment; clamped to RLIMIT_NOFILE / 2
  bool TEST_disable_socket_pidfd = false;  // force the pidfd_open(pid) fallback
};

class PeerListener {
 public:
  struct Stats {
    size_t connections = 0;  // entries in the table now
    uint64_t accepted = 0;   // handed to gRPC
    uint64_t rejected = 0;   // closed at accept: table full, peer gone, credential error
    int fd_range_begin = 0;  // the range N is chosen from
    int fd_range_end = 0;
  };

  // Binds `socket_path` (socket_path.h for the file-system rules) and starts the accept
  // thread. `server` is borrowed and must outlive Stop().
  static Result<std::unique_ptr<PeerListener>> Listen(const std::string& socket_path,
                                                      grpc::Server* server, mode_t mode = 0666);
  static Result<std::unique_ptr<PeerListener>> Listen(const std::string& socket_path,
                                                      grpc::Server* server,
                                                      const ListenOptions& options);
  ~PeerListener();
  PeerListener(const PeerListener&) = delete;
  PeerListener& operator=(const PeerListener&) = delete;

  // Stops accepting, joins the thread, closes the listening socket and unlinks the socket file
  // if it is still ours. Existing connections stay with gRPC. Idempotent.
  void Stop();

  // The peer of the connection `context`'s call arrived on; nullopt if the call did not come
  // through this listener or its connection is no longer tracked.
  std::optional<PeerInfo> PeerOf(const grpc::ServerContext& context) const;

  Stats GetStats() const;
  const std::string& socket_path() const { return path_; }

 private:
  struct Connection {
    PeerInfo info;
    dev_t dev = 0;
    ino_t ino = 0;
    std::optional<std::chrono::steady_clock::time_point> hung_up_at;
  };

  PeerListener(std::string path, grpc::Server* server, const ListenOptions& options);
  void Loop();
  void AcceptAll();
  void Handle(OwnedFd accepted);
  int PlaceFd(int fd);   // F_DUPFD_CLOEXEC round-robin; `fd` itself if the range is full
  void Reap(bool full);  // removes entries whose fd is gone; requires mu_
  bool StillOpen(int fd, const Connection& c) const;
  int NextTimeoutMs() const;

  const std::string path_;
  grpc::Server* const server_;
  const ListenOptions options_;
  OwnedFd listen_fd_;
  dev_t file_dev_ = 0;
  ino_t file_ino_ = 0;
  OwnedFd epoll_fd_;
  OwnedFd wake_fd_;  // eventfd
  int range_begin_ = 0;
  int range_end_ = 0;
  int cursor_ = 0;  // accept thread only
  uint64_t next_id_ = 1;
  std::chrono::steady_clock::time_point next_full_sweep_;
  std::chrono::steady_clock::time_point accept_paused_until_;
  bool accept_paused_ = false;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::once_flag stop_once_;

  mutable std::mutex mu_;
  std::unordered_map<int, Connection> by_fd_;   // guarded by mu_
  std::unordered_map<uint64_t, int> fd_by_id_;  // guarded by mu_
  uint64_t accepted_ = 0;                       // guarded by mu_
  uint64_t rejected_ = 0;                       // guarded by mu_
};

}  // namespace sigil::agent::peer
