// Fuzzes ClassifyCgroupPath on raw paths (container id, pod UID, systemd unit from a cgroup
// path that other users, containers and delegated services may shape). Invariants: see
// attest_cgroup_check.h (container id "" or 64 lowercase hex at a root-owned position only,
// pod UID shapes, unit positions, children classified like their parent, nothing for a
// non-normalised path); plus, as the v2 line of a cgroup file, the path is kept verbatim
// and reported by UnifiedCgroupPath exactly when it is normalised and not " (deleted)".
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "agent/attest/cgroup_parse.h"
#include "attest_cgroup_check.h"

using sigil::agent::attest::ParseProcCgroup;
using sigil::agent::attest::UnifiedCgroupPath;

// The parsers are compiled with recoverable UBSan; make any report fatal so libFuzzer keeps it.
extern "C" const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view path(reinterpret_cast<const char*>(data), size);
  sigil_fuzz::CheckClassification(path);

  if (path.empty() || path.front() != '/' || path.find('\n') != std::string_view::npos) return 0;
  auto c = ParseProcCgroup("1:name=systemd:/\n0::" + std::string(path) + "\n");
  if (!c.ok() || !c->unified || *c->unified != path || c->v1.size() != 1) std::abort();
  bool usable = sigil_fuzz::IsNormalised(path) && !path.ends_with(" (deleted)");
  if (UnifiedCgroupPath(*c) != (usable ? path : std::string_view())) std::abort();
  return 0;
}
