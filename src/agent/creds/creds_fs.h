// CredsFs: just-in-time credential files (`delivery: file` bindings) on a read-only FUSE mount
// (`sigil agent --creds-mount DIR`, default /run/sigil/creds; docs/agent.md).
//
//   DIR/                     bindings with `delivery: file` the *calling process* may read
//   DIR/<binding>/           the binding's one file, if the caller may read it
//   DIR/<binding>/<file>     rendered per the binding's format (file_content.h)
//
// Every open and every read attests the calling process (caller.h: the FUSE request's
// thread -> its process, pidfd-pinned). open fetches the credential just in time through
// Agent::FetchCredential: the server audits the grant (credential.grant) or the refusal
// (credential.denied, with pid, exe and identity); a grant served from the agent's cache is
// reported as credential.use. The content is rendered once per open into the secure heap and
// served with direct_io (no page cache copy); it is wiped at release. A read is served only to
// the process that opened the file, and only while it still holds the identity the grant was
// made for (a descriptor passed to another process, or kept across an exec that changed the
// identity, reads EACCES, reported as credential.refused). Anything refused is EACCES.
// Listing (readdir) uses the agent's synced view of bindings and identities, so it shows only
// what the caller may read; lookups and stat of an existing binding work for everyone (a
// binding name is not a secret; its content is).
//
// Attributes are never cached by the kernel (timeouts 0), since they differ per caller: files
// are reported 0400 and directories 0500, owned by the caller's uid and gid; `stat` by path
// reports size 0, `fstat` on an open file the real size.
//
// Mount: allow_other (every uid may ask; we decide per process), ro, nosuid, nodev, noexec,
// type fuse.sigil-creds. No default_permissions: the kernel's mode checks are not the policy.
// Stale mounts on DIR from a previous agent are lazily detached first (mount_util.h).
//
// Threads: `threads` workers poll the FUSE device and an eventfd; Stop() wakes them, joins
// them, then unmounts (the device fd is closed first, so a process blocked on the mount gets
// ENOTCONN rather than a hang) and destroys the session. Stop() is idempotent.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/attest/attest.h"
#include "agent/core/agent.h"
#include "agent/creds/fusermount.h"
#include "common/log.h"
#include "common/owned_fd.h"
#include "common/result.h"

struct fuse;
struct stat;
struct fuse_file_info;

namespace sigil::agent::creds {

inline constexpr std::string_view kDefaultCredsMount = "/run/sigil/creds";

struct CredsFsOptions {
  std::string mount_dir{kDefaultCredsMount};  // created (0755) if missing
  size_t threads = 4;
};

class CredsFs {
 public:
  static Result<std::unique_ptr<CredsFs>> Start(CredsFsOptions options, Agent& agent,
                                                attest::Attestor& attestor, Logger& log);
  ~CredsFs();
  CredsFs(const CredsFs&) = delete;
  CredsFs& operator=(const CredsFs&) = delete;

  void Stop();
  const std::string& mount_dir() const { return options_.mount_dir; }

  // FUSE operations (called from the worker threads through C trampolines). Return 0 or a
  // negative errno, as libfuse expects.
  int GetAttr(const char* path, struct stat* st, struct fuse_file_info* fi);
  int ReadDir(const char* path, const std::function<void(const char*)>& add);
  int Open(const char* path, struct fuse_file_info* fi);
  int Read(const char* path, char* buf, size_t size, off_t offset, struct fuse_file_info* fi);
  int Release(struct fuse_file_info* fi);

 private:
  CredsFs(CredsFsOptions options, Agent& agent, attest::Attestor& attestor, Logger& log);
  void Loop();
  // EACCES, logged (creds.denied) and, when `report`, audited through the agent
  // (credential.refused); the server audits refusals of FetchCredential itself.
  int Refuse(const std::string& binding, const attest::AttestedProcess* process,
             std::string_view reason, bool report);
  void ReportUse(const std::string& binding, const attest::AttestedProcess& process,
                 const std::string& identity, std::string_view detail_type,
                 std::string_view reason);

  const CredsFsOptions options_;
  Agent& agent_;
  attest::Attestor& attestor_;
  Logger& log_;
  struct fuse* fuse_ = nullptr;
  FusermountMount fusermount_;  // when mounted through fusermount3 (auto_unmount)
  OwnedFd stop_fd_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> unmounted_externally_{false};
  const std::time_t started_ = std::time(nullptr);  // every node's times
};

}  // namespace sigil::agent::creds
