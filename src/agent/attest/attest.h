// Process attestation for the node agent: which process is this, exactly?
//
// Attestor turns a pid (optionally with a pidfd the caller already holds, or a connected
// Unix socket) into an AttestedProcess: effective uid/gid and their names, the executable
// (path and SHA-256 of its bytes), cgroup, container / pod / systemd unit, parent.
//
// Why the result describes ONE process (pid reuse, exit and exec races):
//  1. Get a pidfd P for the process X (pidfd_open, SO_PEERPIDFD or the caller's, checked to
//     refer to `pid` via /proc/self/fdinfo). P refers to X forever, whatever happens to the
//     number `pid` later.
//  2. Open D = /proc/PID as a directory fd. D is bound to the process that had PID at that
//     instant (procfs pins the struct pid, not the number): every later read through D
//     (openat/readlinkat/fstatat) sees that process or fails with ESRCH/ENOENT once it is
//     reaped; it never silently switches to a newcomer that reuses PID.
//  3. Read everything relative to D: status, exe (opened, then hashed through the fd; the
//     path comes from that same fd, so path and hash describe the same file), cgroup.
//  4. Re-read status through D and re-stat D/exe: unchanged credentials, unchanged PPid
//     and the same executable inode (else Aborted: the process called setuid()/execve()
//     mid-attestation, retry), then require that P has not exited (poll(P) not readable,
//     pidfd_send_signal(P, 0) not ESRCH).
//  If P is still alive in step 4, X was alive during steps 1-4, so X held PID throughout
//  (a live process keeps its pid), so D, opened in between, is X's directory and all reads
//  were of X. If X died before step 2 and PID was reused, D is the newcomer's, but then P
//  reports X exited in step 4 and we fail. If X dies at any point, a read fails or step 4
//  fails, and the result is NotFound "process exited during attestation": never a partial
//  or mixed attestation. The parent's executable is read through /proc/PPID opened
//  between the two status reads; an unchanged PPid proves that the parent was the same
//  process in between (a reparented child gets a pre-existing ancestor, never a process
//  that reused the old parent's pid), so no pidfd is needed for it.
//
// Not covered (inherent to pid-based attestation, as in SPIRE): attributes are a snapshot,
// a process can change them right after we return; a socket passed to another process
// still attests the process that connected; a process may change its euid and back
// between our two status reads. Reads of a FUSE-backed executable can block for as long
// as the FUSE server wants: run Attest on a worker with a deadline if that matters.
//
// Errors name the pid and the file ("attest pid 42: /proc/42/exe: open: ..."):
//   NotFound            the process does not exist or exited during attestation
//   InvalidArgument     pid <= 0, a thread id, a pidfd for another pid, not a socket...
//   Aborted             it exec'd / changed credentials / was reparented meanwhile (retry)
//   FailedPrecondition  no executable (kernel thread), socket without a peer process
//   PermissionDenied    /proc refused us (the agent needs CAP_SYS_PTRACE for other uids)
//   ResourceExhausted   a /proc file > 64 KiB or an executable > max_exe_bytes
//   Unimplemented       kernel without pidfd_open (Linux < 5.3): no racy fallback on purpose
//
// Thread-safety: Attest* may be called concurrently (the hash cache is shared and locked).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "agent/attest/attested_process.h"
#include "agent/attest/exe_hash_cache.h"
#include "common/result.h"

namespace sigil::agent::attest {

// Points between the reads of one attestation, in order (for Options::TEST_between_reads).
enum class AttestStage {
  kPidfdReady,        // the pidfd is held; /proc/PID not yet opened
  kProcDirOpened,     // /proc/PID directory fd open
  kStatusRead,        // status parsed
  kExeOpened,         // /proc/PID/exe opened, its path read
  kExeHashed,         // SHA-256 computed (or found in the cache)
  kCgroupRead,        // cgroup parsed
  kParentRead,        // parent's exe read
  kBeforeFinalCheck,  // names looked up; the re-checks and the liveness check come next
};
inline constexpr AttestStage kAllAttestStages[] = {
    AttestStage::kPidfdReady, AttestStage::kProcDirOpened,   AttestStage::kStatusRead,
    AttestStage::kExeOpened,  AttestStage::kExeHashed,       AttestStage::kCgroupRead,
    AttestStage::kParentRead, AttestStage::kBeforeFinalCheck};
std::string_view AttestStageName(AttestStage stage);

class Attestor {
 public:
  struct Options {
    size_t hash_cache_entries = 1024;            // bound of the SHA-256 cache
    uint64_t max_exe_bytes = uint64_t{1} << 30;  // larger executables: ResourceExhausted
    // Only files whose ctime is at least this old are cached (see ExeHashCache).
    std::chrono::nanoseconds hash_cache_min_ctime_age = std::chrono::seconds(2);
    // Test only: called at each stage (e.g. to kill the process at a precise point).
    std::function<void(AttestStage)> TEST_between_reads;
    // Test only: AttestPeer behaves as on a kernel without SO_PEERPIDFD (ENOPROTOOPT).
    bool TEST_peer_pidfd_unsupported = false;
  };

  Attestor();
  explicit Attestor(Options options);

  // Attests `pid` (a process id in the pid namespace of /proc; not a thread id).
  Result<AttestedProcess> Attest(pid_t pid);
  // Same, with a pidfd the caller holds (borrowed, not closed). It must refer to `pid`.
  Result<AttestedProcess> AttestPidfd(pid_t pid, int pidfd);
  // Attests the peer of a connected Unix socket (borrowed): SO_PEERPIDFD, or on kernels
  // without it (ENOPROTOOPT) SO_PEERCRED + pidfd_open, reported as kPeerCredFallback.
  Result<AttestedProcess> AttestPeer(int unix_socket);

  ExeHashCache::Stats hash_cache_stats() const { return cache_.stats(); }

 private:
  Result<AttestedProcess> Run(pid_t pid, int pidfd, PidfdSource source);

  const Options options_;
  ExeHashCache cache_;
};

}  // namespace sigil::agent::attest
