// BpfInterceptor: loads the eBPF connection-interception programs (src/dataplane/bpf/),
// attaches them to managed cgroup v2 directories, and answers Lookup()/LookupListener() from
// their maps.
//
// Flow: a managed process connect()s to D; cgroup/connect4|6 records (D, pid, uid, gid,
// cgroup) and rewrites the destination to the agent's listener; when the connection is
// established the record is indexed by the client's local (address, port); the agent
// accept()s, calls getpeername() on the accepted socket and passes that to Lookup(). Records
// are removed when the client socket closes, so the agent must look up right after accept():
// a client that has already fully closed has no record (fail closed: reject the connection).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/intercept/interceptor.h"

struct intercept_bpf;  // generated skeleton (intercept.skel.h)
struct bpf_link;

namespace sigil::dataplane {

class BpfInterceptor final : public Interceptor {
 public:
  // Loads the programs and maps, stores `config` and enables interception. Nothing is
  // intercepted until Attach(). PermissionDenied without CAP_BPF/CAP_SYS_ADMIN, Unavailable
  // when the kernel refuses the programs.
  static Result<std::unique_ptr<BpfInterceptor>> Load(const InterceptConfig& config);

  ~BpfInterceptor() override;  // detaches everything it attached

  const char* method() const override { return "bpf"; }

  // Attaches all programs to the cgroup v2 directory (and so to its descendants).
  Result<void> Attach(const std::string& cgroup_dir) override;
  Result<void> Detach(const std::string& cgroup_dir) override;

  // Turns interception on or off without detaching (while off, connects pass untouched).
  Result<void> SetEnabled(bool enabled);

  // The accepted fd is not needed: the record is keyed by the peer address.
  Result<OriginalConnection> Lookup(int accepted_fd, const sockaddr_storage& peer) const override;
  // NotFound if no intercepted connection has that address.
  Result<OriginalConnection> Lookup(const sockaddr_storage& peer) const;

  std::optional<ListenerOwner> LookupListener(int family, uint16_t port) const override;

  InterceptCounters Counters() const override;  // summed over CPUs
  size_t TrackedConnections() const;            // entries in by_cookie (for leak tests)
  size_t TrackedTuples() const;                 // entries in by_tuple (for leak tests)

 private:
  struct LinkDeleter {
    void operator()(bpf_link* link) const;
  };
  using LinkPtr = std::unique_ptr<bpf_link, LinkDeleter>;
  struct Attachment {
    std::string dir;
    std::vector<LinkPtr> links;
  };

  BpfInterceptor() = default;
  Result<void> WriteConfig();

  intercept_bpf* skel_ = nullptr;
  uint32_t config_flags_ = 0;
  InterceptConfig config_;
  std::map<uint64_t, Attachment> attached_;  // by cgroup id, so path spellings do not matter
};

}  // namespace sigil::dataplane
