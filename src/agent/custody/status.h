// Read-back of the process state that key custody relies on: everything here is read from
// the kernel or OpenSSL at call time, never from what HardenProcess() believes it set.
//
// Cost: parses /proc/self/smaps up to the secure-heap arena (a few hundred microseconds in a
// small process, milliseconds under ASan); meant for startup checks, health endpoints and
// tests, not per request. Thread-safe.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>
#include <cstddef>
#include <cstdint>

#include "common/result.h"

namespace sigil::agent::custody {

struct CustodyStatus {
  bool dumpable = true;              // prctl(PR_GET_DUMPABLE) != 0
  uint32_t coredump_filter = 0;      // /proc/self/coredump_filter
  rlim_t core_limit = 0;             // RLIMIT_CORE soft limit (RLIM_INFINITY when unlimited)
  pid_t tracer_pid = 0;              // /proc/self/status TracerPid: 0 unless ptrace-attached
  bool secure_heap_enabled = false;  // CRYPTO_secure_malloc_initialized()
  // Size of the arena mapping that holds secure allocations (from /proc/self/smaps, without
  // the guard pages); 0 when the heap is disabled.
  size_t secure_heap_size = 0;
  size_t secure_heap_used = 0;        // CRYPTO_secure_used(): bytes allocated, rounded up
  bool secure_heap_locked = false;    // arena VmFlags has "lo" (mlocked)
  bool secure_heap_dontdump = false;  // arena VmFlags has "dd" (MADV_DONTDUMP)
};

Result<CustodyStatus> ReadCustodyStatus();

}  // namespace sigil::agent::custody
