#include "agent/workloadapi/identity_info.h"

#include <string>
#include <utility>
#include <vector>

#include "agent/workloadapi/status_map.h"

namespace sigil::agent::workloadapi {

WorkloadIdentityInfoService::WorkloadIdentityInfoService(WorkloadSource& source,
                                                         PeerLookup peer_lookup,
                                                         attest::Attestor& attestor,
                                                         CallerOptions options)
    : source_(source), caller_(std::move(peer_lookup), attestor, options) {}

grpc::Status WorkloadIdentityInfoService::Explain(
    grpc::ServerContext* context, const sigil::workload::v1::ExplainRequest* /*request*/,
    sigil::workload::v1::ExplainResponse* response) {
  if (grpc::Status status = CheckSecurityHeader(*context); !status.ok()) return status;
  if (stopping_.load() || source_.ShuttingDown()) {
    return {grpc::StatusCode::UNAVAILABLE, "agent shutting down"};
  }
  attest::AttestedProcess process;
  if (grpc::Status status = caller_.Identify(*context, &process); !status.ok()) return status;

  std::vector<IdentityExplanation> identities;
  Result<std::vector<IdentityExplanation>> explained = source_.Explain(process);
  if (explained.ok()) {
    identities = std::move(explained).value();
  } else if (explained.error().code() != ErrorCode::kPermissionDenied) {
    return ToGrpcStatus(explained.error());
  }

  response->set_pid(process.pid);
  response->set_uid(process.uid);
  response->set_gid(process.gid);
  response->set_user(process.user);
  response->set_group(process.group);
  response->set_exe_path(process.exe_path);
  response->set_exe_deleted(process.exe_deleted);
  response->set_exe_sha256(process.exe_sha256);
  response->set_cgroup(process.cgroup);
  response->set_container_id(process.container_id);
  response->set_pod_uid(process.pod_uid);
  response->set_systemd_unit(process.systemd_unit);
  response->set_pidfd_source(std::string(attest::PidfdSourceName(process.pidfd_source)));
  for (const std::string& selector : process.Selectors()) response->add_selectors(selector);
  for (const IdentityExplanation& identity : identities) {
    sigil::workload::v1::ExplainedIdentity* out = response->add_identities();
    out->set_spiffe_id(identity.spiffe_id);
    out->set_workload_identity(identity.workload_identity);
    for (const std::string& selector : identity.selectors) out->add_selectors(selector);
  }
  return grpc::Status::OK;
}

}  // namespace sigil::agent::workloadapi
