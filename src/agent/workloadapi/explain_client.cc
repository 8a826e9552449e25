#include "agent/workloadapi/explain_client.h"

#include <grpcpp/grpcpp.h>

#include <string>

#include "agent/workloadapi/caller.h"
#include "proto/sigil_workload_ext.grpc.pb.h"

namespace sigil::agent::workloadapi {
namespace {

ErrorCode FromGrpcCode(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return ErrorCode::kInvalidArgument;
    case grpc::StatusCode::NOT_FOUND:
      return ErrorCode::kNotFound;
    case grpc::StatusCode::ALREADY_EXISTS:
      return ErrorCode::kAlreadyExists;
    case grpc::StatusCode::PERMISSION_DENIED:
      return ErrorCode::kPermissionDenied;
    case grpc::StatusCode::UNAUTHENTICATED:
      return ErrorCode::kUnauthenticated;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return ErrorCode::kFailedPrecondition;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return ErrorCode::kResourceExhausted;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
      return ErrorCode::kUnavailable;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return ErrorCode::kDeadlineExceeded;
    case grpc::StatusCode::ABORTED:
      return ErrorCode::kAborted;
    case grpc::StatusCode::UNIMPLEMENTED:
      return ErrorCode::kUnimplemented;
    default:
      return ErrorCode::kInternal;
  }
}

}  // namespace

Result<ExplainResult> ExplainViaSocket(const std::string& socket_path,
                                       std::chrono::milliseconds timeout) {
  if (socket_path.empty()) return InvalidArgument("explain: socket path is empty");
  const std::string target = socket_path.starts_with("unix:") ? socket_path : "unix:" + socket_path;
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // our own connection, closed with us
  auto stub = sigil::workload::v1::WorkloadIdentityInfo::NewStub(
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext context;
  context.AddMetadata(std::string(kSecurityHeaderKey), std::string(kSecurityHeaderValue));
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  sigil::workload::v1::ExplainRequest request;
  sigil::workload::v1::ExplainResponse response;
  grpc::Status status = stub->Explain(&context, request, &response);
  if (!status.ok()) {
    return Error(FromGrpcCode(status.error_code()),
                 "explain via " + socket_path + ": " + status.error_message());
  }
  ExplainResult out;
  out.pid = static_cast<pid_t>(response.pid());
  out.uid = response.uid();
  out.gid = response.gid();
  out.user = response.user();
  out.group = response.group();
  out.exe_path = response.exe_path();
  out.exe_deleted = response.exe_deleted();
  out.exe_sha256 = response.exe_sha256();
  out.cgroup = response.cgroup();
  out.container_id = response.container_id();
  out.pod_uid = response.pod_uid();
  out.systemd_unit = response.systemd_unit();
  out.pidfd_source = response.pidfd_source();
  out.selectors.assign(response.selectors().begin(), response.selectors().end());
  for (const auto& identity : response.identities()) {
    out.identities.push_back(IdentityExplanation{
        identity.spiffe_id(), identity.workload_identity(),
        std::vector<std::string>(identity.selectors().begin(), identity.selectors().end())});
  }
  return out;
}

}  // namespace sigil::agent::workloadapi
