// Pure parsing of /proc/PID/cgroup and classification of a cgroup path (container id,
// Kubernetes pod UID, systemd unit). No system access, so a libFuzzer target can drive it.
//
// Trust: a cgroup path is only as trustworthy as whoever may create directories along it.
// systemd delegates subtrees to users (user@UID.service/...), to containers and to
// Delegate=yes services, and container ids are not secret (any user can read every
// process's /proc/PID/cgroup). So a container id is recognised only at the positions the
// runtimes use directly under root-owned parents (the table below); the same segment
// anywhere else, e.g. a "docker-<id>.scope" made by a user under their own user@.service,
// yields no container id. Layouts we do not know yield none either (fail closed).
//
//   /docker/<id>                                          docker, cgroupfs driver
//   /system.slice/docker-<id>.scope                       docker, systemd driver
//   /machine.slice/libpod-<id>.scope                      podman (root), systemd manager
//   /libpod_parent/libpod-<id>                            podman (root), cgroupfs manager
//   /kubepods[/burstable|/besteffort]/pod<uid>/<id>       kubelet cgroupfs driver (any CRI)
//   /kubepods[/burstable|/besteffort]/pod<uid>/crio-<id>  kubelet cgroupfs driver, CRI-O
//   /kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_>.slice/
//       cri-containerd-<id>.scope | crio-<id>.scope | docker-<id>.scope   systemd driver
//
// <id> is 64 lowercase hex digits; anything may follow the container segment (cgroups the
// container made inside its own delegated subtree). conmon scopes (libpod-conmon-<id>,
// crio-conmon-<id>) are the runtime's monitor, not the container, and are not matched.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sigil::agent::attest {

// One cgroup v1 line: "hierarchy-id:controller,list:path".
struct CgroupV1Entry {
  uint32_t hierarchy_id = 0;
  std::string controllers;  // "memory", "cpu,cpuacct", "name=systemd"
  std::string path;
};

struct ProcCgroups {
  std::optional<std::string> unified;  // path of the cgroup v2 line "0::PATH", verbatim
  std::vector<CgroupV1Entry> v1;       // every other line, in file order
};

// Parses /proc/PID/cgroup. The path is everything after the second ':' (cgroup names may
// contain ':'; the kernel refuses '\n' in them, so lines cannot be forged). A second "0::"
// line, a line without two ':', a bad hierarchy id or a path not starting with '/' is
// InvalidArgument.
Result<ProcCgroups> ParseProcCgroup(std::string_view text);

// The cgroup v2 path to report and select on, or "" when there is none usable:
//  - no "0::" line (kernel without cgroup v2);
//  - it ends in " (deleted)": the kernel appends that to a removed cgroup but a live
//    cgroup may also be named so, and the two cannot be told apart;
//  - not absolute and normalised, e.g. "/../x" when the reader is in a cgroup namespace
//    that does not contain the process.
std::string UnifiedCgroupPath(const ProcCgroups& cgroups);

// The path to classify for container / pod / unit. On cgroup v2 (and hybrid) hosts that is
// UnifiedCgroupPath. On legacy v1 hosts the v2 line exists but is always "/", so use the
// "name=systemd" hierarchy's path if it is not "/", else the one path all non-root v1
// hierarchies agree on (docker's cgroupfs driver puts every controller at /docker/<id>),
// else "" (hierarchies disagree: nothing trustworthy to classify). Whatever comes from v1
// is used for classification only, never as a cgroup selector (those are v2 paths).
std::string ClassificationCgroupPath(const ProcCgroups& cgroups);

struct CgroupPathInfo {
  std::string container_id;       // 64 lowercase hex digits, or ""
  std::string container_runtime;  // "docker", "containerd", "cri-o", "podman", or "cri"
                                  // (kubelet cgroupfs layout: runtime not visible); "" if none
  std::string pod_uid;            // kubelet's pod UID ('_' turned back into '-'), or ""
  // The unit of the system manager that owns the cgroup: the first segment after the
  // leading *.slice segments, if it is a *.service or *.scope ("foo.service",
  // "session-3.scope", "docker-<id>.scope", "user@1000.service"). Deeper cgroups belong to
  // whoever the unit delegated them to.
  std::string systemd_unit;
  // Inside user@UID.service: the user manager's unit, found the same way, or "".
  std::string systemd_user_unit;
};

// Classifies an absolute cgroup path (see the table above). Never fails: unknown shapes
// simply leave fields empty.
CgroupPathInfo ClassifyCgroupPath(std::string_view path);

}  // namespace sigil::agent::attest
