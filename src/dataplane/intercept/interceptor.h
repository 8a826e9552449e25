// Interceptor: loads the eBPF connection-interception programs (src/dataplane/bpf/), attaches
// them to managed cgroup v2 directories, and answers "who really opened this connection, and
// where did it want to go?" for connections the agent accepts on its outbound listener.
//
// Flow: a managed process connect()s to D; cgroup/connect4|6 records (D, pid, uid, gid,
// cgroup) and rewrites the destination to the agent's listener; when the connection is
// established the record is indexed by the client's local (address, port); the agent
// accept()s, calls getpeername() on the accepted socket and passes that to Lookup(). Records
// are removed when the client socket closes, so the agent must look up right after accept():
// a client that has already fully closed has no record (fail closed: reject the connection).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

struct intercept_bpf;  // generated skeleton (intercept.skel.h)
struct bpf_link;

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
  pid_t tid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t cgroup_id = 0;
  uint64_t cookie = 0;  // socket cookie of the client socket
};

// The managed process that last bound a TCP port. A hint: it may be stale (the process exited,
// the bind failed after the hook ran, or the entry was evicted); re-verify before trusting it.
struct ListenerOwner {
  pid_t tgid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t cgroup_id = 0;
};

struct InterceptCounters {
  uint64_t redirected = 0;
  uint64_t skipped_agent = 0;
  uint64_t skipped_loopback = 0;
  uint64_t update_failures = 0;  // map updates that failed (a failed connect record -> EPERM)
  uint64_t established = 0;
  uint64_t closed = 0;
  uint64_t skipped_inbound = 0;  // destination port == inbound_port
  uint64_t skipped_self = 0;     // destination == the redirect address itself
  uint64_t listeners = 0;        // TCP binds recorded
};

class Interceptor {
 public:
  // Loads the programs and maps, stores `config` and enables interception. Nothing is
  // intercepted until Attach().
  static Result<std::unique_ptr<Interceptor>> Load(const InterceptConfig& config);

  ~Interceptor();  // detaches everything it attached
  Interceptor(const Interceptor&) = delete;
  Interceptor& operator=(const Interceptor&) = delete;

  // Attaches all programs to the cgroup v2 directory (and so to its descendants). Attaching a
  // directory that is already attached is a no-op.
  Result<void> Attach(const std::string& cgroup_dir);
  // Detaches from a directory previously attached; NotFound if it was not.
  Result<void> Detach(const std::string& cgroup_dir);

  // Turns interception on or off without detaching (while off, connects pass untouched).
  Result<void> SetEnabled(bool enabled);

  // After accept(): `peer` is the accepted socket's getpeername() (the client's local address
  // and port). NotFound if no intercepted connection has that address.
  Result<OriginalConnection> Lookup(const sockaddr_storage& peer) const;

  // The managed process that bound TCP `port`. For AF_INET, an AF_INET6 entry is returned when
  // there is no AF_INET one (a dual-stack IPv6 socket also serves IPv4).
  std::optional<ListenerOwner> LookupListener(int family, uint16_t port) const;

  InterceptCounters Counters() const;  // summed over CPUs
  size_t TrackedConnections() const;   // entries in by_cookie (for leak tests)
  size_t TrackedTuples() const;        // entries in by_tuple (for leak tests)

 private:
  struct LinkDeleter {
    void operator()(bpf_link* link) const;
  };
  using LinkPtr = std::unique_ptr<bpf_link, LinkDeleter>;
  struct Attachment {
    std::string dir;
    std::vector<LinkPtr> links;
  };

  Interceptor() = default;
  Result<void> WriteConfig();

  intercept_bpf* skel_ = nullptr;
  uint32_t config_flags_ = 0;
  InterceptConfig config_;
  std::map<uint64_t, Attachment> attached_;  // by cgroup id, so path spellings do not matter
};

}  // namespace sigil::dataplane
