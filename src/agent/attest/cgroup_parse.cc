#include "agent/attest/cgroup_parse.h"

#include <algorithm>
#include <charconv>

#include "agent/attest/selector_syntax.h"

namespace sigil::agent::attest {
namespace {

using internal::IsLowerHex;
using internal::IsNormalizedAbsolutePath;

constexpr size_t kIdLen = 64;
constexpr std::string_view kDeletedSuffix = " (deleted)";

std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    if (end > pos) out.push_back(path.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

// "<prefix><64 hex><suffix>" -> the id, else "".
std::string_view WrappedId(std::string_view seg, std::string_view prefix, std::string_view suffix) {
  if (seg.size() != prefix.size() + kIdLen + suffix.size() || !seg.starts_with(prefix) ||
      !seg.ends_with(suffix)) {
    return {};
  }
  std::string_view id = seg.substr(prefix.size(), kIdLen);
  return IsLowerHex(id, kIdLen) ? id : std::string_view();
}

// A pod UID as kubelet writes it into cgroup names: a UUID, or 32 hex digits for static
// pods; the systemd driver spells '-' as '_'. Returns the UID with '-' restored, or "".
std::string PodUid(std::string_view raw, char dash) {
  if (raw.size() != 32 && raw.size() != 36) return {};
  // Each driver has one spelling: a '-' where the systemd driver writes '_' is not kubelet's
  // name, and must not alias the UID of the canonically spelled one (fail closed).
  if (dash != '-' && raw.find('-') != std::string_view::npos) return {};
  std::string uid(raw);
  for (char& c : uid) {
    if (c == dash) c = '-';
  }
  if (uid.size() == 36 ? internal::IsLowerUuid(uid) : IsLowerHex(uid, 32)) return uid;
  return {};
}

void SetContainer(CgroupPathInfo& info, std::string_view id, std::string_view runtime) {
  if (id.empty()) return;
  info.container_id = std::string(id);
  info.container_runtime = std::string(runtime);
}

// /kubepods[/burstable|/besteffort]/pod<uid>/<container>
void ClassifyKubepodsCgroupfs(const std::vector<std::string_view>& s, CgroupPathInfo& info) {
  size_t i = 1;
  if (i < s.size() && (s[i] == "burstable" || s[i] == "besteffort")) ++i;
  if (i >= s.size() || !s[i].starts_with("pod")) return;
  std::string uid = PodUid(s[i].substr(3), '-');
  if (uid.empty()) return;
  info.pod_uid = uid;
  if (++i >= s.size()) return;
  if (IsLowerHex(s[i], kIdLen)) {
    SetContainer(info, s[i], "cri");
  } else {
    SetContainer(info, WrappedId(s[i], "crio-", ""), "cri-o");
  }
}

// /kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid>.slice/<runtime>-<id>.scope
void ClassifyKubepodsSystemd(const std::vector<std::string_view>& s, CgroupPathInfo& info) {
  size_t i = 1;
  std::string pod_prefix = "kubepods-pod";
  for (std::string_view qos : {"burstable", "besteffort"}) {
    if (i < s.size() && s[i] == "kubepods-" + std::string(qos) + ".slice") {
      pod_prefix = "kubepods-" + std::string(qos) + "-pod";
      ++i;
      break;
    }
  }
  if (i >= s.size() || !s[i].starts_with(pod_prefix) || !s[i].ends_with(".slice")) return;
  std::string_view raw = s[i].substr(pod_prefix.size());
  raw.remove_suffix(std::string_view(".slice").size());
  std::string uid = PodUid(raw, '_');
  if (uid.empty()) return;
  info.pod_uid = uid;
  if (++i >= s.size()) return;
  static constexpr std::pair<std::string_view, std::string_view> kScopes[] = {
      {"cri-containerd-", "containerd"}, {"crio-", "cri-o"}, {"docker-", "docker"}};
  for (const auto& [prefix, runtime] : kScopes) {
    std::string_view id = WrappedId(s[i], prefix, ".scope");
    if (!id.empty()) return SetContainer(info, id, runtime);
  }
}

void ClassifyContainer(const std::vector<std::string_view>& s, CgroupPathInfo& info) {
  if (s.empty()) return;
  if (s[0] == "kubepods") return ClassifyKubepodsCgroupfs(s, info);
  if (s[0] == "kubepods.slice") return ClassifyKubepodsSystemd(s, info);
  if (s.size() < 2) return;
  if (s[0] == "docker" && IsLowerHex(s[1], kIdLen)) return SetContainer(info, s[1], "docker");
  if (s[0] == "system.slice")
    return SetContainer(info, WrappedId(s[1], "docker-", ".scope"), "docker");
  if (s[0] == "machine.slice")
    return SetContainer(info, WrappedId(s[1], "libpod-", ".scope"), "podman");
  if (s[0] == "libpod_parent") return SetContainer(info, WrappedId(s[1], "libpod-", ""), "podman");
}

// systemd unit names: [A-Za-z0-9:_.\-@], at most 255 bytes, with a type suffix.
bool IsUnitName(std::string_view seg) {
  return !seg.empty() && seg.size() <= 255 && std::all_of(seg.begin(), seg.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
           c == '_' || c == '.' || c == '-' || c == '\\' || c == '@';
  });
}

bool IsSlice(std::string_view seg) { return seg.ends_with(".slice") && IsUnitName(seg); }
bool IsLeafUnit(std::string_view seg) {
  return (seg.ends_with(".service") || seg.ends_with(".scope")) && IsUnitName(seg);
}

// Skips *.slice segments from `i`; returns the index of a *.service / *.scope unit, or npos.
size_t FindUnit(const std::vector<std::string_view>& s, size_t i) {
  while (i < s.size() && IsSlice(s[i])) ++i;
  return i < s.size() && IsLeafUnit(s[i]) ? i : std::string_view::npos;
}

bool IsUserManager(std::string_view unit) {
  constexpr std::string_view kPrefix = "user@";
  constexpr std::string_view kSuffix = ".service";
  if (!unit.starts_with(kPrefix) || !unit.ends_with(kSuffix)) return false;
  std::string_view uid = unit.substr(kPrefix.size(), unit.size() - kPrefix.size() - kSuffix.size());
  return !uid.empty() &&
         std::all_of(uid.begin(), uid.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void ClassifySystemd(const std::vector<std::string_view>& s, CgroupPathInfo& info) {
  size_t unit = FindUnit(s, 0);
  if (unit == std::string_view::npos) return;
  info.systemd_unit = std::string(s[unit]);
  if (!IsUserManager(s[unit])) return;
  size_t user_unit = FindUnit(s, unit + 1);
  if (user_unit != std::string_view::npos) info.systemd_user_unit = std::string(s[user_unit]);
}

Result<CgroupV1Entry> ParseLine(std::string_view line, size_t line_no) {
  auto error = [&](std::string_view what) {
    return InvalidArgument("cgroup: line " + std::to_string(line_no) + ": " + std::string(what));
  };
  size_t c1 = line.find(':');
  size_t c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return error("expected \"id:controllers:path\"");
  std::string_view id = line.substr(0, c1);
  uint32_t hierarchy = 0;
  auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), hierarchy);
  if (id.empty() || ec != std::errc() || end != id.data() + id.size() ||
      (id.size() > 1 && id.front() == '0')) {
    return error("bad hierarchy id");
  }
  std::string_view path = line.substr(c2 + 1);
  if (path.empty() || path.front() != '/') return error("path does not start with '/'");
  return CgroupV1Entry{hierarchy, std::string(line.substr(c1 + 1, c2 - c1 - 1)), std::string(path)};
}

}  // namespace

Result<ProcCgroups> ParseProcCgroup(std::string_view text) {
  ProcCgroups out;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line.empty()) continue;
    SIGIL_ASSIGN_OR_RETURN(CgroupV1Entry entry, ParseLine(line, line_no));
    if (entry.hierarchy_id == 0 && entry.controllers.empty()) {
      if (out.unified) {
        return InvalidArgument("cgroup: line " + std::to_string(line_no) + ": second \"0::\" line");
      }
      out.unified = std::move(entry.path);
    } else {
      out.v1.push_back(std::move(entry));
    }
  }
  return out;
}

std::string UnifiedCgroupPath(const ProcCgroups& cgroups) {
  if (!cgroups.unified) return {};
  const std::string& path = *cgroups.unified;
  if (path.ends_with(kDeletedSuffix) || !IsNormalizedAbsolutePath(path, /*allow_root=*/true)) {
    return {};
  }
  return path;
}

std::string ClassificationCgroupPath(const ProcCgroups& cgroups) {
  std::string unified = UnifiedCgroupPath(cgroups);
  if (!unified.empty() && unified != "/") return unified;
  std::string agreed;
  bool disagree = false;
  for (const auto& e : cgroups.v1) {
    if (e.path == "/" || !IsNormalizedAbsolutePath(e.path, /*allow_root=*/false)) continue;
    if (e.controllers == "name=systemd") return e.path;
    if (agreed.empty()) {
      agreed = e.path;
    } else if (agreed != e.path) {
      disagree = true;
    }
  }
  if (!agreed.empty()) return disagree ? std::string() : agreed;
  return unified;
}

CgroupPathInfo ClassifyCgroupPath(std::string_view path) {
  CgroupPathInfo info;
  if (!IsNormalizedAbsolutePath(path, /*allow_root=*/true)) return info;
  auto segments = Segments(path);
  ClassifyContainer(segments, info);
  ClassifySystemd(segments, info);
  return info;
}

}  // namespace sigil::agent::attest
