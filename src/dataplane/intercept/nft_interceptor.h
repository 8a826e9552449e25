// NftInterceptor: connection interception without BPF, for hosts where the programs cannot be
// loaded or attached. Weaker than BpfInterceptor; docs/dataplane.md, "nftables fallback".
//
// Redirect: a table of its own (`inet sigil_intercept`) with a `nat` chain in the output hook.
// A TCP connection whose socket was created in a managed cgroup (`socket cgroupv2 level N
// "<dir>"`, one rule per attached directory) is DNATed to the agent's outbound listener; the
// inbound port, loopback destinations (unless configured) and the listener itself are left
// alone. The agent is never in a managed cgroup (Attach refuses a directory that contains the
// agent's own cgroup), which is what keeps its own upstream connections from looping back.
//
// Attribution, after accept(): the original destination is the conntrack entry's
// (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST); the client socket is found with sock_diag by its
// 4-tuple (client address, original destination), which gives its owner uid, inode and cgroup
// id; the cgroup must be an attached directory or below one; the process is the one in that
// cgroup whose descriptor table holds the socket inode (/proc/PID/fd). Anything that does not
// resolve to exactly one process is an error, and the proxy refuses the connection.
//
// The workload's getpeername() already shows the original destination (NAT is invisible to
// the socket), so nothing has to be restored. If the agent dies, its table stays and managed
// processes' connections are refused (fail closed) until it starts again and replaces it.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dataplane/intercept/interceptor.h"

namespace sigil::dataplane {

struct NftInterceptOptions {
  std::string nft_binary = "/usr/sbin/nft";
  std::string table = "sigil_intercept";  // in family inet; one per network namespace
  // nft(8) turns a `socket cgroupv2` path into a cgroup id by stat()ing it relative to this
  // directory (nftables 1.0.6 takes no numeric id). Paths are given as "../../../<absolute>"
  // so any cgroup2 mount works, as long as this directory exists.
  std::string nft_cgroup_base = "/sys/fs/cgroup";
};

// One managed directory as the rule sees it.
struct NftCgroupMatch {
  std::string nft_path;  // relative to NftInterceptOptions::nft_cgroup_base
  uint32_t level = 0;    // depth below the cgroup2 root (the kernel compares that ancestor)
};

class NftInterceptor final : public Interceptor {
 public:
  // Checks `config`, reads the agent's own cgroup and installs the table (without cgroup
  // rules: nothing is intercepted until Attach()). Unavailable when nft is missing or the
  // kernel refuses the table (no nf_tables nat).
  static Result<std::unique_ptr<NftInterceptor>> Load(const InterceptConfig& config,
                                                      NftInterceptOptions options = {});
  ~NftInterceptor() override;  // deletes the table

  const char* method() const override { return "nftables"; }

  // Adds the rule for `cgroup_dir` (replacing the chain's rules in one nft transaction).
  // FailedPrecondition if the directory contains the agent's own cgroup.
  Result<void> Attach(const std::string& cgroup_dir) override;
  Result<void> Detach(const std::string& cgroup_dir) override;

  Result<OriginalConnection> Lookup(int accepted_fd, const sockaddr_storage& peer) const override;
  // The lowest pid in the listener's cgroup holding the listening socket.
  std::optional<ListenerOwner> LookupListener(int family, uint16_t port) const override;
  // `redirected` is read from the table's named counter (runs nft).
  InterceptCounters Counters() const override;

  // The nft script that (re)creates the whole table, and the one that replaces only the
  // output chain's rules (keeps the counter). Pure; for tests and logs.
  static std::string TableScript(const InterceptConfig& config, const std::string& table,
                                 const std::vector<NftCgroupMatch>& cgroups);
  static std::string ChainScript(const InterceptConfig& config, const std::string& table,
                                 const std::vector<NftCgroupMatch>& cgroups);

  // How `cgroup_dir` is spelled in a rule: canonical path, level, nft path (checked to resolve
  // to the same directory from `nft_cgroup_base`). Exposed for tests.
  struct Resolved {
    std::string dir;         // canonical absolute path
    std::string mount_root;  // the cgroup2 root directory above it
    uint64_t id = 0;
    NftCgroupMatch match;
  };
  static Result<Resolved> ResolveCgroup(const std::string& cgroup_dir,
                                        const std::string& nft_cgroup_base);

 private:
  NftInterceptor(InterceptConfig config, NftInterceptOptions options)
      : config_(config), options_(std::move(options)) {}
  Result<void> InstallLocked();  // the chain rules for attached_
  Result<OriginalConnection> Attribute(int accepted_fd, const sockaddr_storage& peer) const;
  // The directory of a managed cgroup (an attached one or below it) by id.
  Result<std::string> ManagedDir(uint64_t cgroup_id) const;

  const InterceptConfig config_;
  const NftInterceptOptions options_;
  std::string agent_cgroup_;  // the agent's cgroup v2 path ("/..." from /proc/PID/cgroup)
  bool installed_ = false;

  mutable std::mutex mu_;
  std::map<uint64_t, Resolved> attached_;              // by cgroup id
  mutable std::map<uint64_t, std::string> dir_by_id_;  // cache for ManagedDir
  mutable std::atomic<uint64_t> lookups_{0};
  mutable std::atomic<uint64_t> lookup_failures_{0};
  mutable std::atomic<uint64_t> lookup_micros_{0};
};

}  // namespace sigil::dataplane
