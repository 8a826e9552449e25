// Fuzzes ParseProcStatus (/proc/PID/status as the attestor reads it; the Name: line and the
// cgroup/uid layout are chosen by the hostile process). Invariants: a failure is
// InvalidArgument; on success the fields are in range, every id re-renders in decimal to
// exactly the token of the one line that carried it, the struct re-renders to a canonical
// status that parses back equal, and lines the parser ignores do not change the result.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "agent/attest/proc_parse.h"

using sigil::agent::attest::ParseProcStatus;
using sigil::agent::attest::ProcStatus;

// The parsers are compiled with recoverable UBSan; make any report fatal so libFuzzer keeps it.
extern "C" const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }

namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

std::vector<std::string_view> Tokens(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsBlank(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !IsBlank(s[i])) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

// The value after "KEY:" on the first line whose text before its first ':' is exactly KEY.
bool FindValue(std::string_view text, std::string_view key, std::string_view& value) {
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    size_t colon = line.find(':');
    if (colon != std::string_view::npos && line.substr(0, colon) == key) {
      value = line.substr(colon + 1);
      return true;
    }
  }
  return false;
}

void CheckToken(std::string_view text, std::string_view key, uint64_t v) {
  std::string_view value;
  if (!FindValue(text, key, value)) std::abort();
  auto tokens = Tokens(value);
  if (tokens.size() != 1 || tokens[0] != std::to_string(v)) std::abort();
}

template <class Ids>
void CheckTokens(std::string_view text, std::string_view key, const Ids& ids) {
  std::string_view value;
  if (!FindValue(text, key, value)) std::abort();
  auto tokens = Tokens(value);
  if (tokens.size() != ids.size()) std::abort();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (tokens[i] != std::to_string(ids[i])) std::abort();
  }
}

template <class Ids>
std::string Join(const Ids& ids) {
  std::string out;
  for (auto id : ids) out += "\t" + std::to_string(id);
  return out;
}

std::string Render(const ProcStatus& st) {
  return "Name:\t" + st.name + "\nTgid:\t" + std::to_string(st.tgid) + "\nPid:\t" +
         std::to_string(st.pid) + "\nPPid:\t" + std::to_string(st.ppid) + "\nUid:" + Join(st.uids) +
         "\nGid:" + Join(st.gids) + "\nGroups:" + Join(st.groups) + "\n";
}

bool Equal(const ProcStatus& a, const ProcStatus& b) {
  return a.name == b.name && a.tgid == b.tgid && a.pid == b.pid && a.ppid == b.ppid &&
         a.uids == b.uids && a.gids == b.gids && a.groups == b.groups;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto st = ParseProcStatus(text);
  if (!st.ok()) {
    if (st.error().code() != sigil::ErrorCode::kInvalidArgument) std::abort();
    if (st.error().message().empty()) std::abort();
    return 0;
  }

  if (st->tgid < 1 || st->pid < 1 || st->ppid < 0) std::abort();
  if (st->groups.size() > 65536) std::abort();
  if (st->name.find('\n') != std::string::npos) std::abort();

  // Each value is the decimal rendering of the single token on its (first) line.
  CheckToken(text, "Tgid", static_cast<uint64_t>(st->tgid));
  CheckToken(text, "Pid", static_cast<uint64_t>(st->pid));
  CheckToken(text, "PPid", static_cast<uint64_t>(st->ppid));
  CheckTokens(text, "Uid", st->uids);
  CheckTokens(text, "Gid", st->gids);
  std::string_view groups;
  if (FindValue(text, "Groups", groups)) {
    CheckTokens(text, "Groups", st->groups);
  } else if (!st->groups.empty()) {
    std::abort();
  }
  std::string_view name;
  if (!FindValue(text, "Name", name)) std::abort();
  if (name.starts_with('\t')) name.remove_prefix(1);
  if (name != st->name) std::abort();

  // Canonical re-rendering parses back to the same struct.
  auto again = ParseProcStatus(Render(*st));
  if (!again.ok() || !Equal(*again, *st)) std::abort();

  // Lines with other keys (the kernel prints ~50) are ignored, wherever they are.
  auto padded = ParseProcStatus("Umask:\t0022\n" + std::string(text) + "\nVmRSS:\t1 kB\n\n");
  if (!padded.ok() || !Equal(*padded, *st)) std::abort();
  return 0;
}
