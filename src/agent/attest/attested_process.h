// What the node agent knows about a process after attesting it, and the selectors that
// facts turn into. Produced only by Attestor (attest.h); a value is a consistent snapshot
// of one process (see the race argument there), never a mix of two.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/attest/cgroup_parse.h"

namespace sigil::agent::attest {

// How the attestor came to hold the pidfd that pins the process.
enum class PidfdSource {
  kPidfdOpen,         // Attest(pid): pidfd_open(pid)
  kCaller,            // AttestPidfd(pid, pidfd): the caller's pidfd (checked to be `pid`)
  kPeerPidfd,         // AttestPeer(sock): SO_PEERPIDFD, race-free from connect() on
  kPeerCredFallback,  // AttestPeer(sock): kernel < 6.5 (ENOPROTOOPT), SO_PEERCRED's pid then
                      // pidfd_open: the peer could have exited and its pid been reused in
                      // between, so this binds a process *with the peer's pid*, not
                      // necessarily the peer. Policy may refuse it.
};
std::string_view PidfdSourceName(PidfdSource source);

struct AttestedProcess {
  pid_t pid = 0;
  PidfdSource pidfd_source = PidfdSource::kPidfdOpen;

  // Identity = the EFFECTIVE ids, as SPIRE's unix attestor reports (it takes gopsutil's
  // Uids()[1]) and as SO_PEERCRED and file-permission checks use: a setuid-root program
  // run by alice acts as root and is attested as uid 0; a daemon that dropped privileges
  // with seteuid() is attested as the uid it acts as. The real ids are kept for audit.
  uint32_t uid = 0;  // effective uid
  uint32_t gid = 0;  // effective gid
  uint32_t real_uid = 0;
  uint32_t real_gid = 0;
  std::vector<uint32_t> supplementary_gids;
  // Names from the agent's own NSS (getpwuid_r/getgrgid_r), as SPIRE does; "" when the id
  // has no name there (common for container uids).
  std::string user;
  std::string group;
  std::string comm;  // /proc/PID/status Name: set by the process itself; audit only

  // The executable, from the file the kernel maps for the process (/proc/PID/exe), never
  // from argv[0] or comm. exe_path is the kernel's name for it relative to the agent's
  // root (for a process in another mount namespace, usually its path inside that
  // namespace) without the " (deleted)" marker; exe_deleted is set when the name was
  // unlinked (or replaced) since exec: the path then no longer names this file, so it
  // yields no unix:path selector. A file literally named "x (deleted)" is reported the
  // same way (the kernel's text cannot tell them apart) and loses its path selector.
  std::string exe_path;
  bool exe_deleted = false;
  // Lowercase hex SHA-256 of the executed file's bytes, read through the opened
  // /proc/PID/exe (replacing the path on disk cannot change it).
  std::string exe_sha256;
  // On FUSE the file server decides what each read returns, so the bytes we hashed need
  // not be the bytes that run: no unix:sha256 selector (and no caching) for such files.
  bool exe_on_fuse = false;

  // cgroup v2 path ("" if none usable, see UnifiedCgroupPath), the raw v1 lines, and what
  // ClassificationCgroupPath's path says about containers and units.
  std::string cgroup;
  std::vector<CgroupV1Entry> cgroup_v1;
  std::string container_id;       // 64 lowercase hex or ""
  std::string container_runtime;  // see CgroupPathInfo
  std::string pod_uid;
  std::string systemd_unit;
  std::string systemd_user_unit;

  // Parent: PPid from status (0 if outside our pid namespace) and its executable path as
  // the kernel prints it (may end in " (deleted)"; "" for kernel threads or when
  // unreadable). Audit only: the resource validator has no parent selector.
  pid_t ppid = 0;
  std::string parent_exe;

  // The selectors this process satisfies, in the grammar of docs/resources.md
  // (resources::CanonicalSelector accepts each, already canonical), in this order:
  //   unix:uid:N  unix:gid:N  unix:user:NAME  unix:group:NAME   (names only if valid there)
  //   unix:path:/p          unless exe_deleted or the path is not normalised
  //   unix:sha256:HEX       unless exe_on_fuse
  //   cgroup:/p             when cgroup is set (v2 only; v1 paths are not cgroup selectors)
  //   container:ID          when container_id is set (the validator's form, not container:id:)
  //   k8s:pod-uid:UUID      when pod_uid is a UUID (static pods' 32-hex UIDs do not validate)
  // Supplementary groups, ppid, parent path and systemd units have no selector type yet.
  std::vector<std::string> Selectors() const;
};

}  // namespace sigil::agent::attest
