// Process hardening for key custody: the agent's private keys must never reach a core dump,
// another user's ptrace/process_vm_readv, or swap.
//
// HardenProcess(), in this order (the order matters, see harden.cc):
//   1. /proc/self/coredump_filter := options.coredump_filter (default kCoredumpFilterSafe).
//   2. setrlimit(RLIMIT_CORE, {0, 0}) unless options.keep_core_limit.
//   3. prctl(PR_SET_DUMPABLE, 0): no core dump at all (fs.suid_dumpable permitting), and every
//      /proc/self/* file becomes root-owned, so processes of the agent's own uid can no longer
//      ptrace it or read /proc/<pid>/mem, environ, maps, ...
//   4. OpenSSL's secure heap: CRYPTO_secure_malloc_init(size, min_size) mmaps an arena with
//      guard pages, locks it with mlock2(MLOCK_ONFAULT) (a raw syscall in OpenSSL 3.0: pages are
//      locked as they are first touched; the whole range counts in VmLck and against
//      RLIMIT_MEMLOCK) and marks it MADV_DONTDUMP. With the heap on, OpenSSL 3 keeps
//      private-key BIGNUMs (EC scalars, RSA d/p/q/...) and its private DRBG state in the arena,
//      and SecretBytes allocates there. RLIMIT_MEMLOCK is raised when it is too low and the
//      process may raise it; an arena that could not be locked is an error (ResourceExhausted
//      naming the limit), never silently accepted.
//   5. Self-test: an EC P-256 key generated now must occupy secure-heap bytes that are given
//      back when it is freed (catches an OpenSSL built without secure memory or a changed
//      allocation policy).
//   6. Read-back: ReadCustodyStatus() must report exactly the state asked for, and no tracer
//      (TracerPid) may be attached: an attachment made before step 3 would survive it.
//
// A process that already changed credentials (root -> agent user) is non-dumpable from the
// kernel and cannot open its own coredump_filter; step 1 then sets dumpable for that write
// only. Calling HardenProcess before dropping privileges avoids that window altogether.
//
// Contract: call once, early in main(), before any key exists and before threads that use
// OpenSSL are started (steps 4-5 measure the process-wide secure heap). Calling it again with
// the same options is a no-op that re-verifies; different heap sizes are FailedPrecondition.
// PR_SET_DUMPABLE is reset by execve(2): hardening applies to this process image only.
// Thread-safe (serialised internally), but see the contract above.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/result.h"

namespace sigil::agent::custody {

// /proc/<pid>/coredump_filter bits (core(5)).
inline constexpr uint32_t kDumpAnonPrivate = 1u << 0;
inline constexpr uint32_t kDumpAnonShared = 1u << 1;
inline constexpr uint32_t kDumpFilePrivate = 1u << 2;
inline constexpr uint32_t kDumpFileShared = 1u << 3;
inline constexpr uint32_t kDumpElfHeaders = 1u << 4;
inline constexpr uint32_t kDumpHugetlbPrivate = 1u << 5;
inline constexpr uint32_t kDumpHugetlbShared = 1u << 6;
inline constexpr uint32_t kDumpDaxPrivate = 1u << 7;
inline constexpr uint32_t kDumpDaxShared = 1u << 8;
inline constexpr uint32_t kCoredumpFilterMask = (1u << 9) - 1;

// 0x10: only ELF headers (enough to identify the build IDs of a crash), nothing else. The
// kernel default is 0x33 (anonymous private+shared, ELF headers, hugetlb private). Secrets
// live in anonymous memory (heap, stacks, gRPC buffers holding a delivered PKCS#8 key,
// shared memory), in hugetlb pages if the allocator uses them, and, for COW-written file
// mappings, in file-backed private pages, so every memory class is excluded. This is defense
// in depth: with dumpable == 0 no core is written unless fs.suid_dumpable == 2, and the
// filter is inherited across fork/exec by the agent's helpers.
inline constexpr uint32_t kCoredumpFilterSafe = kDumpElfHeaders;

inline constexpr size_t kDefaultSecureHeapSize = size_t{1} << 20;  // 1 MiB
inline constexpr size_t kDefaultSecureHeapMinSize = 32;  // one P-256 scalar (4 x 64-bit words)

// Sizing (measured with OpenSSL 3.0.x, min_size 32): an EC P-256 key holds 32 bytes of the
// arena, an RSA-2048 key 1664, the private DRBG 512 once, a SecretBytes its size rounded up to
// a power of two (a P-256 PKCS#8 export: 256). The arena is a buddy allocator; when it is
// exhausted OpenSSL key generation fails and SecretBytes aborts (it never falls back to the
// normal heap). 1 MiB holds ~30 000 P-256 keys. Only touched pages become resident, but the
// whole arena counts against RLIMIT_MEMLOCK.
struct HardenOptions {
  uint32_t coredump_filter = kCoredumpFilterSafe;    // <= kCoredumpFilterMask
  bool keep_core_limit = false;                      // false: RLIMIT_CORE := 0 (soft and hard)
  size_t secure_heap_size = kDefaultSecureHeapSize;  // power of two, >= 4096
  size_t secure_heap_min_size = kDefaultSecureHeapMinSize;  // power of two, 16..size/16
};

Result<void> HardenProcess(const HardenOptions& options = {});

}  // namespace sigil::agent::custody
