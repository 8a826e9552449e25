// Client side of the WorkloadIdentityInfo extension (identity_info.h), for `sigil whoami`:
// asks the agent on `socket_path` what it attests about THIS process and which identities it
// holds. Sends the Workload API security header; no credentials (the agent identifies the
// caller by its connection).
//
// `socket_path` is a filesystem path ("/run/sigil/agent.sock") or a gRPC target starting with
// "unix:". Errors: the gRPC status mapped back to an ErrorCode (UNAVAILABLE when nothing
// listens there, PERMISSION_DENIED when attestation fails, DEADLINE_EXCEEDED after `timeout`),
// with "explain via <socket_path>: " prefixed to the agent's message.
// Thread-safe (each call opens its own channel).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/workloadapi/workload_source.h"
#include "common/result.h"

namespace sigil::agent::workloadapi {

struct ExplainResult {
  pid_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string user;
  std::string group;
  std::string exe_path;
  bool exe_deleted = false;
  std::string exe_sha256;
  std::string cgroup;
  std::string container_id;
  std::string pod_uid;
  std::string systemd_unit;
  std::string pidfd_source;
  std::vector<std::string> selectors;
  std::vector<IdentityExplanation> identities;  // empty: this process holds no identity
};

Result<ExplainResult> ExplainViaSocket(
    const std::string& socket_path, std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace sigil::agent::workloadapi
