// Fuzzes ParseProcCgroup (/proc/PID/cgroup; the path text is chosen by whoever may create
// cgroups, e.g. a delegated user or container) and what the attestor derives from it:
// UnifiedCgroupPath, ClassificationCgroupPath and ClassifyCgroupPath. Invariants: a failure
// is InvalidArgument; on success every non-empty line is one entry, the entries re-render
// to a file that parses back equal, the derived paths are "" or normalised absolute paths
// taken verbatim from the file, and their classification satisfies attest_cgroup_check.h.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "agent/attest/cgroup_parse.h"
#include "attest_cgroup_check.h"

using sigil::agent::attest::ClassificationCgroupPath;
using sigil::agent::attest::ParseProcCgroup;
using sigil::agent::attest::ProcCgroups;
using sigil::agent::attest::UnifiedCgroupPath;

// The parsers are compiled with recoverable UBSan; make any report fatal so libFuzzer keeps it.
extern "C" const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }

namespace {

std::string Render(const ProcCgroups& c) {
  std::string out;
  for (const auto& e : c.v1) {
    out += std::to_string(e.hierarchy_id) + ":" + e.controllers + ":" + e.path + "\n";
  }
  if (c.unified) out += "0::" + *c.unified + "\n";
  return out;
}

bool Equal(const ProcCgroups& a, const ProcCgroups& b) {
  if (a.unified != b.unified || a.v1.size() != b.v1.size()) return false;
  for (size_t i = 0; i < a.v1.size(); ++i) {
    if (a.v1[i].hierarchy_id != b.v1[i].hierarchy_id ||
        a.v1[i].controllers != b.v1[i].controllers || a.v1[i].path != b.v1[i].path) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = ParseProcCgroup(text);
  if (!parsed.ok()) {
    if (parsed.error().code() != sigil::ErrorCode::kInvalidArgument) std::abort();
    return 0;
  }
  const ProcCgroups& c = *parsed;

  size_t lines = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    if (nl > pos) ++lines;
    pos = nl + 1;
  }
  if (lines != c.v1.size() + (c.unified ? 1 : 0)) std::abort();
  for (const auto& e : c.v1) {
    if (e.hierarchy_id == 0 && e.controllers.empty()) std::abort();  // that is the v2 line
    if (e.controllers.find_first_of(":\n") != std::string::npos) std::abort();
    if (!e.path.starts_with('/') || e.path.find('\n') != std::string::npos) std::abort();
  }
  if (c.unified && (!c.unified->starts_with('/') || c.unified->find('\n') != std::string::npos)) {
    std::abort();
  }

  auto again = ParseProcCgroup(Render(c));
  if (!again.ok() || !Equal(*again, c)) std::abort();

  const std::string unified = UnifiedCgroupPath(c);
  if (!unified.empty()) {
    if (!unified.starts_with('/') || !c.unified || unified != *c.unified) std::abort();
    if (!sigil_fuzz::IsNormalised(unified) || unified.ends_with(" (deleted)")) std::abort();
  } else if (c.unified && sigil_fuzz::IsNormalised(*c.unified) &&
             !c.unified->ends_with(" (deleted)")) {
    std::abort();  // a usable v2 path was dropped
  }

  const std::string classify = ClassificationCgroupPath(c);
  if (!classify.empty()) {
    if (!sigil_fuzz::IsNormalised(classify)) std::abort();
    bool from_file = classify == unified;
    for (const auto& e : c.v1) from_file = from_file || classify == e.path;
    if (!from_file) std::abort();
  }
  if (!unified.empty() && unified != "/" && classify != unified) std::abort();

  sigil_fuzz::CheckClassification(unified);
  sigil_fuzz::CheckClassification(classify);
  return 0;
}
