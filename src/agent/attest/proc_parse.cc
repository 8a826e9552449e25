#include "agent/attest/proc_parse.h"

#include <charconv>
#include <limits>
#include <optional>

namespace sigil::agent::attest {
namespace {

constexpr size_t kMaxGroups = 65536;  // NGROUPS_MAX

std::optional<uint64_t> ParseDecimal(std::string_view s, uint64_t max) {
  if (s.empty() || s.size() > 20 || (s.size() > 1 && s.front() == '0')) return std::nullopt;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v > max) return std::nullopt;
  return v;
}

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Splits on runs of spaces and tabs; at most `max_fields` + 1 fields are collected so a
// huge line cannot make us allocate without bound.
std::vector<std::string_view> Fields(std::string_view s, size_t max_fields) {
  std::vector<std::string_view> out;
  s = Trim(s);
  while (!s.empty() && out.size() <= max_fields) {
    size_t end = 0;
    while (end < s.size() && !IsSpace(s[end])) ++end;
    out.push_back(s.substr(0, end));
    s = Trim(s.substr(end));
  }
  return out;
}

Error LineError(size_t line, std::string_view key, std::string_view what) {
  return InvalidArgument("status: line " + std::to_string(line) + " (\"" + std::string(key) +
                         "\"): " + std::string(what));
}

Result<int32_t> ParsePidValue(std::string_view value, size_t line, std::string_view key,
                              uint64_t min) {
  auto v = ParseDecimal(Trim(value), std::numeric_limits<int32_t>::max());
  if (!v || *v < min) return LineError(line, key, "not a valid pid");
  return static_cast<int32_t>(*v);
}

Result<std::array<uint32_t, 4>> ParseIds(std::string_view value, size_t line,
                                         std::string_view key) {
  auto fields = Fields(value, 4);
  if (fields.size() != 4) return LineError(line, key, "expected 4 ids");
  std::array<uint32_t, 4> ids{};
  for (size_t i = 0; i < 4; ++i) {
    auto v = ParseDecimal(fields[i], std::numeric_limits<uint32_t>::max());
    if (!v) return LineError(line, key, "not a valid id");
    ids[i] = static_cast<uint32_t>(*v);
  }
  return ids;
}

Result<std::vector<uint32_t>> ParseGroups(std::string_view value, size_t line) {
  auto fields = Fields(value, kMaxGroups);
  if (fields.size() > kMaxGroups) return LineError(line, "Groups", "too many groups");
  std::vector<uint32_t> groups;
  groups.reserve(fields.size());
  for (auto f : fields) {
    auto v = ParseDecimal(f, std::numeric_limits<uint32_t>::max());
    if (!v) return LineError(line, "Groups", "not a valid gid");
    groups.push_back(static_cast<uint32_t>(*v));
  }
  return groups;
}

enum class Field { kName, kTgid, kPid, kPPid, kUid, kGid, kGroups };

struct KeyInfo {
  std::string_view key;
  Field field;
  bool required;
};
constexpr KeyInfo kKeys[] = {
    {"Name", Field::kName, true},      {"Tgid", Field::kTgid, true}, {"Pid", Field::kPid, true},
    {"PPid", Field::kPPid, true},      {"Uid", Field::kUid, true},   {"Gid", Field::kGid, true},
    {"Groups", Field::kGroups, false},
};
constexpr size_t kKeyCount = sizeof(kKeys) / sizeof(kKeys[0]);

Result<void> ParseField(const KeyInfo& k, std::string_view value, size_t line, ProcStatus& out) {
  switch (k.field) {
    case Field::kName:
      // The kernel prints "Name:\t" then the escaped comm, which may itself start with
      // spaces: drop only the separator tab.
      if (!value.empty() && value.front() == '\t') value.remove_prefix(1);
      out.name = std::string(value);
      return Ok();
    case Field::kTgid: {
      SIGIL_ASSIGN_OR_RETURN(out.tgid, ParsePidValue(value, line, k.key, 1));
      return Ok();
    }
    case Field::kPid: {
      SIGIL_ASSIGN_OR_RETURN(out.pid, ParsePidValue(value, line, k.key, 1));
      return Ok();
    }
    case Field::kPPid: {
      SIGIL_ASSIGN_OR_RETURN(out.ppid, ParsePidValue(value, line, k.key, 0));
      return Ok();
    }
    case Field::kUid: {
      SIGIL_ASSIGN_OR_RETURN(out.uids, ParseIds(value, line, k.key));
      return Ok();
    }
    case Field::kGid: {
      SIGIL_ASSIGN_OR_RETURN(out.gids, ParseIds(value, line, k.key));
      return Ok();
    }
    case Field::kGroups: {
      SIGIL_ASSIGN_OR_RETURN(out.groups, ParseGroups(value, line));
      return Ok();
    }
  }
  return Ok();
}

}  // namespace

Result<ProcStatus> ParseProcStatus(std::string_view text) {
  ProcStatus out;
  bool seen[kKeyCount] = {};
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      if (line.empty()) continue;
      return InvalidArgument("status: line " + std::to_string(line_no) + ": no ':'");
    }
    std::string_view key = line.substr(0, colon);
    for (size_t i = 0; i < kKeyCount; ++i) {
      if (kKeys[i].key != key) continue;
      if (seen[i]) return LineError(line_no, key, "appears twice");
      seen[i] = true;
      SIGIL_TRY(ParseField(kKeys[i], line.substr(colon + 1), line_no, out));
    }
  }
  for (size_t i = 0; i < kKeyCount; ++i) {
    if (kKeys[i].required && !seen[i]) {
      return InvalidArgument("status: missing \"" + std::string(kKeys[i].key) + ":\" line");
    }
  }
  return out;
}

Result<int32_t> ParsePidfdFdinfo(std::string_view text) {
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (!line.starts_with("Pid:")) continue;
    std::string_view value = Trim(line.substr(4));
    if (value == "-1") return -1;
    auto v = ParseDecimal(value, std::numeric_limits<int32_t>::max());
    if (!v) return InvalidArgument("pidfd fdinfo: malformed \"Pid:\" line");
    return static_cast<int32_t>(*v);
  }
  return InvalidArgument("fdinfo has no \"Pid:\" line (the fd is not a pidfd)");
}

}  // namespace sigil::agent::attest
