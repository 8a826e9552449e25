#include "agent/custody/status.h"

#include <openssl/crypto.h>
#include <sys/prctl.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <string>

#include "agent/custody/proc_io.h"

namespace sigil::agent::custody {
namespace {

using internal::ErrnoError;

struct Mapping {
  uintptr_t start = 0;
  uintptr_t end = 0;
  std::string vm_flags;  // "rd wr mr mw me lo ac dd"
};

// Parses "start-end perms ..." headers of /proc/self/smaps; stops at the mapping that holds
// `addr` and returns it with its VmFlags line.
Result<Mapping> FindMapping(uintptr_t addr) {
  std::ifstream smaps("/proc/self/smaps");
  if (!smaps) return Internal("cannot open /proc/self/smaps");
  std::string line;
  bool inside = false;
  Mapping found;
  while (std::getline(smaps, line)) {
    unsigned long start = 0;
    unsigned long end = 0;
    int consumed = 0;
    // Header lines start with a lowercase hex range; field lines with a capitalised name.
    if (!line.empty() && line[0] >= '0' && (line[0] <= '9' || (line[0] >= 'a' && line[0] <= 'f')) &&
        std::sscanf(line.c_str(), "%lx-%lx%n", &start, &end, &consumed) == 2 &&
        static_cast<size_t>(consumed) < line.size() && line[static_cast<size_t>(consumed)] == ' ') {
      if (inside) break;  // the previous mapping had no VmFlags line: give up
      inside = addr >= start && addr < end;
      if (inside) {
        found.start = start;
        found.end = end;
      }
      continue;
    }
    if (inside && line.starts_with("VmFlags:")) {
      found.vm_flags = line.substr(8);
      return found;
    }
  }
  return NotFound("secure heap: arena mapping not found in /proc/self/smaps");
}

bool HasFlag(const std::string& flags, std::string_view flag) {
  size_t pos = 0;
  while ((pos = flags.find(flag, pos)) != std::string::npos) {
    bool start_ok = pos == 0 || flags[pos - 1] == ' ';
    bool end_ok = pos + flag.size() == flags.size() || flags[pos + flag.size()] == ' ';
    if (start_ok && end_ok) return true;
    pos += flag.size();
  }
  return false;
}

Result<uint32_t> ReadCoredumpFilter() {
  SIGIL_ASSIGN_OR_RETURN(std::string text, internal::ReadProcFile("/proc/self/coredump_filter"));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  uint32_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return Internal("/proc/self/coredump_filter: unexpected content \"" + text + "\"");
  }
  return value;
}

}  // namespace

Result<CustodyStatus> ReadCustodyStatus() {
  CustodyStatus status;
  int dumpable = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  if (dumpable < 0) return ErrnoError("prctl(PR_GET_DUMPABLE)", errno);
  status.dumpable = dumpable != 0;
  SIGIL_ASSIGN_OR_RETURN(status.coredump_filter, ReadCoredumpFilter());
  rlimit core{};
  if (::getrlimit(RLIMIT_CORE, &core) != 0) return ErrnoError("getrlimit(RLIMIT_CORE)", errno);
  status.core_limit = core.rlim_cur;
  // "TracerPid:\t0": a plain number, read with the kB helper's parser.
  SIGIL_ASSIGN_OR_RETURN(uint64_t tracer, internal::ReadStatusKb("TracerPid"));
  status.tracer_pid = static_cast<pid_t>(tracer);

  status.secure_heap_enabled = CRYPTO_secure_malloc_initialized() == 1;
  if (!status.secure_heap_enabled) return status;
  status.secure_heap_used = CRYPTO_secure_used();
  // The arena is found through a probe allocation: OpenSSL exposes no arena address or size.
  void* probe = OPENSSL_secure_malloc(1);
  if (probe == nullptr) {
    return ResourceExhausted("secure heap: exhausted (" + std::to_string(status.secure_heap_used) +
                             " bytes in use)");
  }
  bool in_arena = CRYPTO_secure_allocated(probe) == 1;
  auto mapping = FindMapping(reinterpret_cast<uintptr_t>(probe));
  OPENSSL_secure_free(probe);
  if (!in_arena) return Internal("secure heap: initialised but allocations bypass it");
  if (!mapping.ok()) return std::move(mapping).error();
  status.secure_heap_size = mapping->end - mapping->start;
  status.secure_heap_locked = HasFlag(mapping->vm_flags, "lo");
  status.secure_heap_dontdump = HasFlag(mapping->vm_flags, "dd");
  return status;
}

}  // namespace sigil::agent::custody
