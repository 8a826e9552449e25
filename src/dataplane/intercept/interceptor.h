// Interceptor: what the proxy asks "who really opened this connection, and where did it want
// to go?" for connections it accepts on its outbound listener, and "which managed process
// serves this port?" for the inbound side. Two implementations:
//
//  * BpfInterceptor (bpf_interceptor.h): cgroup/connect4|6 + sockops programs record the
//    caller at connect() time and rewrite the destination. Exact attribution (pid, tid, uid
//    of the connect() call itself). The default.
//  * NftInterceptor (nft_interceptor.h): an nftables `dnat` in the output hook for sockets of
//    managed cgroups (`socket cgroupv2`), the original destination from SO_ORIGINAL_DST, the
//    process found afterwards through sock_diag (socket cgroup and inode) and /proc. The
//    fallback where the BPF programs cannot be loaded or attached; weaker, see
//    docs/dataplane.md ("nftables fallback").
//
// Either way, the agent must look up right after accept(): a client that has already fully
// closed cannot be attributed (fail closed: reject the connection).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/result.h"

namespace sigil::dataplane {

struct InterceptConfig {
  // The agent's outbound listener for IPv4 (and IPv4-mapped) destinations. Required.
  sockaddr_in redirect_v4{};
  // The listener for native IPv6 destinations; without it IPv6 connects are not intercepted.
  std::optional<sockaddr_in6> redirect_v6;
  // Connects to this port (the mesh's mTLS inbound port) are never redirected.
  uint16_t inbound_port = 15008;
  // Connects made by this process (the agent) are never redirected.
  pid_t agent_tgid = getpid();
  // Leave 127.0.0.0/8, ::1 (and 0.0.0.0, ::) destinations alone.
  bool skip_loopback = true;
};

// What a managed process dialled and who it was. Pids are from the initial pid namespace.
struct OriginalConnection {
  sockaddr_storage original_dst{};  // sockaddr_in or sockaddr_in6 (ports in network order)
  pid_t tgid = 0;
  pid_t tid = 0;  // nftables: not known, equals tgid
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t cgroup_id = 0;
  uint64_t cookie = 0;  // BPF: socket cookie of the client socket; nftables: its inode
};

// The managed process that bound (BPF) or holds (nftables) a listening TCP port. A hint: it
// may be stale (the process exited, or the entry was evicted); re-verify before trusting it.
struct ListenerOwner {
  pid_t tgid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t cgroup_id = 0;
};

// Counters for /metrics. Each implementation fills what it can know; the rest stay 0.
struct InterceptCounters {
  uint64_t redirected = 0;  // connects redirected (BPF program / nftables rule counter)
  // BPF only:
  uint64_t skipped_agent = 0;
  uint64_t skipped_loopback = 0;
  uint64_t update_failures = 0;  // map updates that failed (a failed connect record -> EPERM)
  uint64_t established = 0;
  uint64_t closed = 0;
  uint64_t skipped_inbound = 0;  // destination port == inbound_port
  uint64_t skipped_self = 0;     // destination == the redirect address itself
  uint64_t listeners = 0;        // TCP binds recorded
  // nftables only (attribution happens in user space, after accept()):
  uint64_t lookups = 0;          // Lookup() calls
  uint64_t lookup_failures = 0;  // Lookup() calls that returned an error (refused)
  uint64_t lookup_micros = 0;    // total time spent in Lookup(), for its mean cost
};

class Interceptor {
 public:
  virtual ~Interceptor() = default;
  Interceptor() = default;
  Interceptor(const Interceptor&) = delete;
  Interceptor& operator=(const Interceptor&) = delete;

  // "bpf" or "nftables" (logs, metrics).
  virtual const char* method() const = 0;

  // Intercepts TCP connects of every process in the cgroup v2 directory and below. Attaching
  // a directory that is already attached is a no-op.
  virtual Result<void> Attach(const std::string& cgroup_dir) = 0;
  // Stops intercepting a directory previously attached; NotFound if it was not.
  virtual Result<void> Detach(const std::string& cgroup_dir) = 0;

  // After accept(): `accepted_fd` is the accepted socket and `peer` its getpeername() (the
  // client's local address and port). NotFound if the connection was not intercepted by us;
  // any error means the connection must be refused. Safe to call from several threads.
  virtual Result<OriginalConnection> Lookup(int accepted_fd,
                                            const sockaddr_storage& peer) const = 0;

  // The managed process serving TCP `port`. For AF_INET, an IPv6 listener that also takes
  // IPv4 is returned when there is no IPv4 one.
  virtual std::optional<ListenerOwner> LookupListener(int family, uint16_t port) const = 0;

  virtual InterceptCounters Counters() const = 0;
};

}  // namespace sigil::dataplane
