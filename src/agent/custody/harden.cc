#include "agent/custody/harden.h"

#include <openssl/crypto.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <mutex>
#include <string>

#include "agent/custody/proc_io.h"
#include "agent/custody/status.h"
#include "core/keys.h"

namespace sigil::agent::custody {
namespace {

using internal::ErrnoError;

constexpr size_t kMinHeapSize = 4096;
constexpr size_t kMinHeapMinSize = 16;
constexpr size_t kP256ScalarBytes = 32;

std::mutex g_mu;
size_t g_heap_size = 0;  // the size this module initialised the secure heap with; 0: not us

Result<void> Validate(const HardenOptions& o) {
  if ((o.coredump_filter & ~kCoredumpFilterMask) != 0) {
    return InvalidArgument("harden: coredump_filter has bits above 0x1ff");
  }
  if (!std::has_single_bit(o.secure_heap_size) || o.secure_heap_size < kMinHeapSize) {
    return InvalidArgument("harden: secure_heap_size must be a power of two >= 4096");
  }
  if (!std::has_single_bit(o.secure_heap_min_size) || o.secure_heap_min_size < kMinHeapMinSize ||
      o.secure_heap_min_size > o.secure_heap_size / 16) {
    return InvalidArgument(
        "harden: secure_heap_min_size must be a power of two in [16, secure_heap_size/16]");
  }
  return Ok();
}

std::string LimitText(rlim_t v) { return v == RLIM_INFINITY ? "unlimited" : std::to_string(v); }

// Makes room for `need` more locked bytes under RLIMIT_MEMLOCK when the process may: anyone may
// raise the soft limit up to the hard one, CAP_SYS_RESOURCE (root) the hard one as well. With
// CAP_IPC_LOCK the limit does not apply at all, so a refusal here is not yet an error:
// CRYPTO_secure_malloc_init's result decides.
void RaiseMemlockLimit(size_t need) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
  auto locked_kb = internal::ReadStatusKb("VmLck");
  rlim_t want = static_cast<rlim_t>(need) + (locked_kb.ok() ? *locked_kb * 1024 : 0);
  if (rl.rlim_cur >= want) return;
  rlimit raised = rl;
  raised.rlim_cur = want;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) raised.rlim_max = want;
  if (::setrlimit(RLIMIT_MEMLOCK, &raised) == 0) return;
  if (rl.rlim_max > rl.rlim_cur) {
    raised = {rl.rlim_max, rl.rlim_max};
    (void)::setrlimit(RLIMIT_MEMLOCK, &raised);
  }
}

Result<void> InitSecureHeap(const HardenOptions& o) {
  if (CRYPTO_secure_malloc_initialized() == 1) {
    if (g_heap_size == 0) {
      return FailedPrecondition(
          "harden: the OpenSSL secure heap was initialised outside HardenProcess");
    }
    if (g_heap_size != o.secure_heap_size) {
      return FailedPrecondition("harden: secure heap already initialised with " +
                                std::to_string(g_heap_size) + " bytes");
    }
    return Ok();
  }
  RaiseMemlockLimit(o.secure_heap_size);
  int rc = CRYPTO_secure_malloc_init(o.secure_heap_size, o.secure_heap_min_size);
  if (rc == 0) {
    return ResourceExhausted("harden: CRYPTO_secure_malloc_init(" +
                             std::to_string(o.secure_heap_size) +
                             ") failed (mmap refused, or OpenSSL built without secure memory)");
  }
  if (rc == 2) {
    // Initialised, but mlock() failed: undo (nothing is allocated yet) and say why.
    (void)CRYPTO_secure_malloc_done();
    rlimit rl{};
    (void)::getrlimit(RLIMIT_MEMLOCK, &rl);
    auto locked_kb = internal::ReadStatusKb("VmLck");
    return ResourceExhausted(
        "harden: cannot mlock the " + std::to_string(o.secure_heap_size) +
        "-byte secure heap: RLIMIT_MEMLOCK is " + LimitText(rl.rlim_cur) + " (hard " +
        LimitText(rl.rlim_max) + ") bytes with " +
        (locked_kb.ok() ? std::to_string(*locked_kb) : std::string("?")) +
        " KiB already locked; raise it (systemd LimitMEMLOCK=, ulimit -l), grant CAP_IPC_LOCK, "
        "or lower secure_heap_size");
  }
  g_heap_size = o.secure_heap_size;
  return Ok();
}

// Generates and frees one P-256 key: the key must have held secure-heap bytes. Measured as the
// bytes its free gives back, so the one-time DRBG allocation of the first generation does not
// count (see the contract about concurrent OpenSSL users in the header).
Result<void> CheckKeyPlacement() {
  size_t held = 0;
  {
    SIGIL_ASSIGN_OR_RETURN(core::PrivateKey key,
                           core::PrivateKey::Generate(core::KeyType::kEcP256));
    held = CRYPTO_secure_used();
  }
  size_t after = CRYPTO_secure_used();
  if (held < after || held - after < kP256ScalarBytes) {
    return FailedPrecondition(
        "harden: an EC private key generated with the secure heap on did not live in it; this "
        "OpenSSL build does not keep private keys in secure memory");
  }
  return Ok();
}

Result<void> CheckReadBack(const HardenOptions& o) {
  SIGIL_ASSIGN_OR_RETURN(CustodyStatus s, ReadCustodyStatus());
  if (s.dumpable) return Internal("harden: read-back: process is still dumpable");
  if (s.tracer_pid != 0) {
    return FailedPrecondition("harden: process is being traced by pid " +
                              std::to_string(s.tracer_pid));
  }
  if (s.coredump_filter != o.coredump_filter) {
    return Internal("harden: read-back: coredump_filter is " + std::to_string(s.coredump_filter));
  }
  if (!o.keep_core_limit && s.core_limit != 0) {
    return Internal("harden: read-back: RLIMIT_CORE is not 0");
  }
  if (!s.secure_heap_enabled || s.secure_heap_size != o.secure_heap_size) {
    return Internal("harden: read-back: secure heap is not the configured arena");
  }
  if (!s.secure_heap_dontdump) return Internal("harden: read-back: arena is not MADV_DONTDUMP");
  // OpenSSL locks with the mlock2 syscall; a fallback to mlock() that a sanitizer runtime
  // turned into a no-op would be caught here.
  if (!s.secure_heap_locked) return Internal("harden: read-back: arena is not mlocked");
  return Ok();
}

}  // namespace

Result<void> HardenProcess(const HardenOptions& options) {
  SIGIL_TRY(Validate(options));
  std::lock_guard lock(g_mu);
  // 1. The filter first: once the process is non-dumpable its /proc files belong to root, and
  //    an agent running as another uid could no longer open coredump_filter for writing.
  //    A process that changed credentials (e.g. root dropping to the agent user) is already
  //    non-dumpable; it is made dumpable for the one write and the read-back then checks that
  //    no tracer attached in that window (ptrace needs dumpable for a same-uid tracer, and an
  //    attachment would survive step 3).
  char filter[16];
  std::snprintf(filter, sizeof(filter), "0x%x", options.coredump_filter);
  auto written = internal::WriteProcFile("/proc/self/coredump_filter", filter);
  if (!written.ok() && written.error().code() == ErrorCode::kPermissionDenied &&
      ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0) {
    if (::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0)
      return ErrnoError("prctl(PR_SET_DUMPABLE, 1)", errno);
    written = internal::WriteProcFile("/proc/self/coredump_filter", filter);
    (void)::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  }
  SIGIL_TRY(written);
  // 2. No core file, even if something re-enables dumpable later (setrlimit is inherited by
  //    children; lowering the hard limit cannot be undone without CAP_SYS_RESOURCE).
  if (!options.keep_core_limit) {
    rlimit zero{0, 0};
    if (::setrlimit(RLIMIT_CORE, &zero) != 0) return ErrnoError("setrlimit(RLIMIT_CORE, 0)", errno);
  }
  // 3. Non-dumpable: no core dump, /proc/self/* owned by root, ptrace needs CAP_SYS_PTRACE.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return ErrnoError("prctl(PR_SET_DUMPABLE, 0)", errno);
  }
  // 4-6.
  SIGIL_TRY(InitSecureHeap(options));
  SIGIL_TRY(CheckKeyPlacement());
  return CheckReadBack(options);
}

}  // namespace sigil::agent::custody
