// WorkloadIdentityInfoService: Sigil's extension service on the Workload API socket
// (src/proto/sigil_workload_ext.proto, package sigil.workload.v1), behind `sigil whoami`.
//
// Explain: same security header and caller identification as the Workload API (caller.h);
// returns what attestation found about the CALLER (pid, effective uid/gid and names, executable
// path and SHA-256, cgroup, container id, pod uid, systemd unit, how the pidfd was obtained, every
// selector) and WorkloadSource::Explain's identities with the selectors each one required.
// Issues nothing. A caller with no identity gets OK with an empty identity list (the point of
// `whoami` is to say why nothing matched); PermissionDenied from the source counts as "none".
// Other source errors map through status_map.h. Only the caller's own facts are revealed.
// Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "agent/attest/attest.h"
#include "agent/workloadapi/caller.h"
#include "agent/workloadapi/workload_source.h"
#include "proto/sigil_workload_ext.grpc.pb.h"

namespace sigil::agent::workloadapi {

class WorkloadIdentityInfoService final
    : public sigil::workload::v1::WorkloadIdentityInfo::Service {
 public:
  // `source` and `attestor` are borrowed and must outlive the service.
  WorkloadIdentityInfoService(WorkloadSource& source, PeerLookup peer_lookup,
                              attest::Attestor& attestor, CallerOptions options = {});

  void BeginShutdown() { stopping_.store(true); }

  grpc::Status Explain(grpc::ServerContext* context,
                       const sigil::workload::v1::ExplainRequest* request,
                       sigil::workload::v1::ExplainResponse* response) override;

 private:
  WorkloadSource& source_;
  CallerIdentifier caller_;
  std::atomic<bool> stopping_{false};
};

}  // namespace sigil::agent::workloadapi
