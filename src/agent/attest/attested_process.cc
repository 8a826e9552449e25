#include "agent/attest/attested_process.h"

#include "agent/attest/selector_syntax.h"

namespace sigil::agent::attest {

using internal::IsLowerHex;
using internal::IsLowerUuid;
using internal::IsNormalizedAbsolutePath;
using internal::IsSelectorUnixName;

std::string_view PidfdSourceName(PidfdSource source) {
  switch (source) {
    case PidfdSource::kPidfdOpen:
      return "pidfd_open";
    case PidfdSource::kCaller:
      return "caller";
    case PidfdSource::kPeerPidfd:
      return "SO_PEERPIDFD";
    case PidfdSource::kPeerCredFallback:
      return "SO_PEERCRED+pidfd_open";
  }
  return "unknown";
}

std::vector<std::string> AttestedProcess::Selectors() const {
  constexpr uint32_t kNoId = 4294967295U;  // (uid_t)-1: not an id, and the validator agrees
  std::vector<std::string> out;
  if (uid != kNoId) out.push_back("unix:uid:" + std::to_string(uid));
  if (gid != kNoId) out.push_back("unix:gid:" + std::to_string(gid));
  if (IsSelectorUnixName(user)) out.push_back("unix:user:" + user);
  if (IsSelectorUnixName(group)) out.push_back("unix:group:" + group);
  if (!exe_deleted && IsNormalizedAbsolutePath(exe_path, /*allow_root=*/false)) {
    out.push_back("unix:path:" + exe_path);
  }
  if (!exe_on_fuse && IsLowerHex(exe_sha256, 64)) out.push_back("unix:sha256:" + exe_sha256);
  if (IsNormalizedAbsolutePath(cgroup, /*allow_root=*/true)) out.push_back("cgroup:" + cgroup);
  if (IsLowerHex(container_id, 64)) out.push_back("container:" + container_id);
  if (IsLowerUuid(pod_uid)) out.push_back("k8s:pod-uid:" + pod_uid);
  return out;
}

}  // namespace sigil::agent::attest
