// Invariants of ClassifyCgroupPath shared by the attest_proc_cgroup and attest_cgroup_path
// fuzz targets. The oracles here are written independently of src/agent/attest: they check
// shapes and positions (what the trust model in cgroup_parse.h promises), not the table.
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "agent/attest/cgroup_parse.h"

namespace sigil_fuzz {

inline bool IsLowerHexN(std::string_view s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

inline bool IsLowerUuidShape(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !IsLowerHexN(s.substr(i, 1), 1)) return false;
  }
  return true;
}

// Split on '/', keeping empty segments (a normalised path has none).
inline std::vector<std::string_view> SplitSlash(std::string_view path) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (true) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) {
      out.push_back(path.substr(pos));
      return out;
    }
    out.push_back(path.substr(pos, end - pos));
    pos = end + 1;
  }
}

// Starts with '/', at most 4096 bytes, no control bytes, no empty / "." / ".." segment; "/"
// itself counts.
inline bool IsNormalised(std::string_view path) {
  if (path.empty() || path.front() != '/' || path.size() > 4096) return false;
  for (char c : path) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return false;
  }
  if (path == "/") return true;
  auto segs = SplitSlash(path.substr(1));
  for (auto s : segs) {
    if (s.empty() || s == "." || s == "..") return false;
  }
  return true;
}

inline bool Empty(const sigil::agent::attest::CgroupPathInfo& i) {
  return i.container_id.empty() && i.container_runtime.empty() && i.pod_uid.empty() &&
         i.systemd_unit.empty() && i.systemd_user_unit.empty();
}

inline bool Same(const sigil::agent::attest::CgroupPathInfo& a,
                 const sigil::agent::attest::CgroupPathInfo& b) {
  return a.container_id == b.container_id && a.container_runtime == b.container_runtime &&
         a.pod_uid == b.pod_uid && a.systemd_unit == b.systemd_unit &&
         a.systemd_user_unit == b.systemd_user_unit;
}

inline bool IsLeafUnitName(std::string_view s) {
  return s.ends_with(".service") || s.ends_with(".scope");
}

inline bool IsUserManagerName(std::string_view s) {
  if (!s.starts_with("user@") || !s.ends_with(".service")) return false;
  std::string_view uid = s.substr(5, s.size() - 5 - 8);
  if (uid.empty()) return false;
  for (char c : uid) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Classifies `path` and aborts on any broken invariant. `depth` bounds the recursion used for
// the "a child cgroup inherits the classification" check.
inline void CheckClassification(std::string_view path, int depth = 0) {
  using sigil::agent::attest::ClassifyCgroupPath;
  const auto info = ClassifyCgroupPath(path);
  if (!IsNormalised(path)) {
    if (!Empty(info)) std::abort();
    return;
  }
  const auto segs = path == "/" ? std::vector<std::string_view>() : SplitSlash(path.substr(1));

  // Container: 64 lowercase hex, with a runtime, only in a segment directly below one of the
  // root-owned parents the runtimes use (never below a user's or a service's delegation).
  if (info.container_id.empty() != info.container_runtime.empty()) std::abort();
  if (!info.container_id.empty()) {
    if (!IsLowerHexN(info.container_id, 64)) std::abort();
    const std::string_view root = segs.front();
    const std::string_view rt = info.container_runtime;
    bool ok_root =
        (root == "docker" && rt == "docker") || (root == "system.slice" && rt == "docker") ||
        (root == "machine.slice" && rt == "podman") ||
        (root == "libpod_parent" && rt == "podman") ||
        (root == "kubepods" && (rt == "cri" || rt == "cri-o")) ||
        (root == "kubepods.slice" && (rt == "containerd" || rt == "cri-o" || rt == "docker"));
    if (!ok_root) std::abort();
    // The id is inside one of segments 1..3 (kubepods: [qos], pod, container), and that
    // segment is not a runtime monitor's (conmon) scope.
    size_t id_at = 0;
    for (size_t i = 1; i < segs.size() && i <= 3 && id_at == 0; ++i) {
      if (segs[i].find(info.container_id) != std::string_view::npos) id_at = i;
    }
    if (id_at == 0) std::abort();
    if (segs[id_at].find("conmon") != std::string_view::npos) std::abort();
  }

  // Pod: only under kubepods / kubepods.slice, a lowercase UUID or 32 hex digits, present in
  // segment 1 or 2 (with '_' for '-' under the systemd driver).
  if (!info.pod_uid.empty()) {
    if (!IsLowerUuidShape(info.pod_uid) && !IsLowerHexN(info.pod_uid, 32)) std::abort();
    if (segs.front() != "kubepods" && segs.front() != "kubepods.slice") std::abort();
    std::string spelled = info.pod_uid;
    if (segs.front() == "kubepods.slice") {
      for (char& c : spelled) {
        if (c == '-') c = '_';
      }
    }
    bool seen = false;
    for (size_t i = 1; i < segs.size() && i <= 2; ++i) {
      if (segs[i].find(spelled) != std::string_view::npos) seen = true;
    }
    if (!seen) std::abort();
  } else if (!info.container_id.empty() &&
             (segs.front() == "kubepods" || segs.front() == "kubepods.slice")) {
    std::abort();  // a Kubernetes container always comes with its pod
  }

  // systemd unit: the first non-slice segment, a *.service / *.scope, after only *.slice.
  size_t unit_at = segs.size();
  if (!info.systemd_unit.empty()) {
    if (!IsLeafUnitName(info.systemd_unit) || info.systemd_unit.size() > 255) std::abort();
    for (size_t i = 0; i < segs.size(); ++i) {
      if (segs[i] == info.systemd_unit) {
        unit_at = i;
        break;
      }
      if (!segs[i].ends_with(".slice")) std::abort();
    }
    if (unit_at == segs.size()) std::abort();
  }
  if (!info.systemd_user_unit.empty()) {
    if (!IsUserManagerName(info.systemd_unit)) std::abort();
    if (!IsLeafUnitName(info.systemd_user_unit)) std::abort();
    bool seen = false;
    for (size_t i = unit_at + 1; i < segs.size(); ++i) {
      if (segs[i] == info.systemd_user_unit) {
        seen = true;
        break;
      }
      if (!segs[i].ends_with(".slice")) std::abort();
    }
    if (!seen) std::abort();
  }

  // A child cgroup ("x" is no slice, unit or id) is classified exactly like its parent, and
  // the result depends on the path alone.
  if (depth == 0 && path.size() + 2 <= 4096) {
    std::string child(path == "/" ? "" : path);
    child += "/x";
    if (!Same(ClassifyCgroupPath(child), info)) std::abort();
    CheckClassification(child, depth + 1);
  }
}

}  // namespace sigil_fuzz
