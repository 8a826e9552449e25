#include "agent/workloadapi/workload_api.h"

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent/workloadapi/responses.h"
#include "agent/workloadapi/status_map.h"
#include "core/jwt_svid.h"
#include "core/spiffe_id.h"

namespace sigil::agent::workloadapi {
namespace {

constexpr std::chrono::milliseconds kMinStreamPoll{10};

void Scrub(X509SVIDResponse& response) { WipeKeys(response); }
template <class Response>
void Scrub(Response& /*response*/) {}

// The stream loop shared by the three streaming RPCs: compute a snapshot, send it if its
// signature differs from the last one sent (always the first), wait for the next generation.
// `compute(Snapshot*)` and `wait(uint64_t*)` return a non-OK status to end the stream.
template <class Response, class Compute, class Wait>
grpc::Status ServeStream(grpc::ServerWriter<Response>& writer, uint64_t generation, Compute compute,
                         Wait wait) {
  std::optional<std::string> last_sent;
  for (;;) {
    Snapshot<Response> snapshot;
    if (grpc::Status status = compute(&snapshot); !status.ok()) return status;
    if (!last_sent || *last_sent != snapshot.signature) {
      const bool written = writer.Write(snapshot.response);
      Scrub(snapshot.response);
      if (!written) return {grpc::StatusCode::CANCELLED, "stream closed by the client"};
      last_sent = std::move(snapshot.signature);
    } else {
      Scrub(snapshot.response);
    }
    if (grpc::Status status = wait(&generation); !status.ok()) return status;
  }
}

grpc::Status NoIdentity() { return {grpc::StatusCode::PERMISSION_DENIED, "no identity issued"}; }

grpc::Status Invalid(const std::string& message) {
  return {grpc::StatusCode::INVALID_ARGUMENT, message};
}

}  // namespace

WorkloadApiService::WorkloadApiService(WorkloadSource& source, const peer::PeerListener* listener,
                                       attest::Attestor& attestor, ServiceOptions options)
    : WorkloadApiService(source, PeerLookupFor(listener), attestor, std::move(options)) {}

WorkloadApiService::WorkloadApiService(WorkloadSource& source, PeerLookup peer_lookup,
                                       attest::Attestor& attestor, ServiceOptions options)
    : source_(source),
      caller_(std::move(peer_lookup), attestor, options.caller),
      options_(std::move(options)) {}

grpc::Status WorkloadApiService::Begin(const grpc::ServerContext& context,
                                       attest::AttestedProcess* process, bool check_header) const {
  if (check_header) {
    if (grpc::Status status = CheckSecurityHeader(context); !status.ok()) return status;
  }
  if (stopping_.load() || source_.ShuttingDown()) {
    return {grpc::StatusCode::UNAVAILABLE, "agent shutting down"};
  }
  return caller_.Identify(context, process);
}

grpc::Status WorkloadApiService::StopStatus(grpc::ServerContext& context) const {
  if (context.IsCancelled()) return {grpc::StatusCode::CANCELLED, "cancelled by the client"};
  if (stopping_.load() || source_.ShuttingDown()) {
    return {grpc::StatusCode::UNAVAILABLE, "agent shutting down"};
  }
  return grpc::Status::OK;
}

grpc::Status WorkloadApiService::WaitForChange(grpc::ServerContext& context,
                                               uint64_t* generation) const {
  const auto poll = std::max(options_.stream_poll, kMinStreamPoll);
  for (;;) {
    if (grpc::Status status = StopStatus(context); !status.ok()) return status;
    const uint64_t now = source_.WaitForChange(*generation, poll);
    if (now != *generation) {
      *generation = now;
      return StopStatus(context);
    }
  }
}

grpc::Status WorkloadApiService::CheckBundleEntitlement(
    const attest::AttestedProcess& process) const {
  if (options_.allow_unauthenticated_verifiers) return grpc::Status::OK;
  Result<std::vector<IdentityExplanation>> identities = source_.Explain(process);
  if (!identities.ok()) {
    if (identities.error().code() == ErrorCode::kPermissionDenied) return NoIdentity();
    return ToGrpcStatus(identities.error());
  }
  if (identities->empty()) return NoIdentity();
  return grpc::Status::OK;
}

grpc::Status WorkloadApiService::FetchX509SVID(grpc::ServerContext* context,
                                               const X509SVIDRequest* /*request*/,
                                               grpc::ServerWriter<X509SVIDResponse>* writer) {
  attest::AttestedProcess process;
  if (grpc::Status status = Begin(*context, &process); !status.ok()) return status;
  return ServeStream(
      *writer, source_.Generation(),
      [&](Snapshot<X509SVIDResponse>* snapshot) -> grpc::Status {
        Result<std::vector<X509SvidGrant>> grants = source_.X509Svids(process);
        if (!grants.ok()) return ToGrpcStatus(grants.error());
        auto built = BuildX509SvidResponse(*grants, source_.Bundles());
        if (!built.ok()) return ToGrpcStatus(built.error());
        *snapshot = std::move(built).value();
        return grpc::Status::OK;
      },
      [&](uint64_t* generation) { return WaitForChange(*context, generation); });
}

grpc::Status WorkloadApiService::FetchX509Bundles(grpc::ServerContext* context,
                                                  const X509BundlesRequest* /*request*/,
                                                  grpc::ServerWriter<X509BundlesResponse>* writer) {
  attest::AttestedProcess process;
  if (grpc::Status status = Begin(*context, &process); !status.ok()) return status;
  return ServeStream(
      *writer, source_.Generation(),
      [&](Snapshot<X509BundlesResponse>* snapshot) -> grpc::Status {
        if (grpc::Status status = CheckBundleEntitlement(process); !status.ok()) return status;
        auto built = BuildX509BundlesResponse(source_.Bundles());
        if (!built.ok()) return ToGrpcStatus(built.error());
        *snapshot = std::move(built).value();
        return grpc::Status::OK;
      },
      [&](uint64_t* generation) { return WaitForChange(*context, generation); });
}

grpc::Status WorkloadApiService::FetchJWTBundles(grpc::ServerContext* context,
                                                 const JWTBundlesRequest* /*request*/,
                                                 grpc::ServerWriter<JWTBundlesResponse>* writer) {
  attest::AttestedProcess process;
  if (grpc::Status status = Begin(*context, &process); !status.ok()) return status;
  return ServeStream(
      *writer, source_.Generation(),
      [&](Snapshot<JWTBundlesResponse>* snapshot) -> grpc::Status {
        if (grpc::Status status = CheckBundleEntitlement(process); !status.ok()) return status;
        auto built = BuildJwtBundlesResponse(source_.Bundles());
        if (!built.ok()) return ToGrpcStatus(built.error());
        *snapshot = std::move(built).value();
        return grpc::Status::OK;
      },
      [&](uint64_t* generation) { return WaitForChange(*context, generation); });
}

grpc::Status WorkloadApiService::FetchJWTSVID(grpc::ServerContext* context,
                                              const JWTSVIDRequest* request,
                                              JWTSVIDResponse* response) {
  if (grpc::Status status = CheckSecurityHeader(*context); !status.ok()) return status;
  if (request->audience().empty()) return Invalid("audience must be specified");
  if (static_cast<size_t>(request->audience_size()) > options_.max_jwt_audiences) {
    return Invalid("too many audiences (at most " + std::to_string(options_.max_jwt_audiences) +
                   ")");
  }
  std::vector<std::string> audience;
  for (const std::string& aud : request->audience()) {
    if (aud.empty()) return Invalid("audience must not contain an empty string");
    if (aud.size() > options_.max_audience_bytes) {
      return Invalid("audience longer than " + std::to_string(options_.max_audience_bytes) +
                     " bytes");
    }
    audience.push_back(aud);
  }
  if (!request->spiffe_id().empty()) {
    auto id = core::SpiffeId::Parse(request->spiffe_id());
    if (!id.ok()) return Invalid("invalid requested SPIFFE ID: " + id.error().message());
  }
  attest::AttestedProcess process;
  if (grpc::Status status = Begin(*context, &process, /*check_header=*/false); !status.ok()) {
    return status;
  }
  Result<std::vector<JwtSvidGrant>> grants =
      source_.JwtSvids(process, audience, request->spiffe_id());
  if (!grants.ok()) return ToGrpcStatus(grants.error());
  std::set<std::string> hints;
  for (const JwtSvidGrant& grant : *grants) {
    if (!request->spiffe_id().empty() && grant.spiffe_id != request->spiffe_id()) continue;
    if (!grant.hint.empty() && !hints.insert(grant.hint).second) continue;
    JWTSVID* svid = response->add_svids();
    svid->set_spiffe_id(grant.spiffe_id);
    svid->set_svid(grant.token);
    svid->set_hint(grant.hint);
  }
  if (response->svids().empty()) return NoIdentity();
  return grpc::Status::OK;
}

grpc::Status WorkloadApiService::ValidateJWTSVID(grpc::ServerContext* context,
                                                 const ValidateJWTSVIDRequest* request,
                                                 ValidateJWTSVIDResponse* response) {
  if (grpc::Status status = CheckSecurityHeader(*context); !status.ok()) return status;
  if (request->audience().empty()) return Invalid("audience must be specified");
  if (request->svid().empty()) return Invalid("svid must be specified");
  if (request->audience().size() > options_.max_audience_bytes) {
    return Invalid("audience longer than " + std::to_string(options_.max_audience_bytes) +
                   " bytes");
  }
  attest::AttestedProcess process;
  if (grpc::Status status = Begin(*context, &process, /*check_header=*/false); !status.ok()) {
    return status;
  }
  const std::vector<std::string> audience = {request->audience()};
  Result<core::JwtSvid> svid =
      core::ValidateJwtSvid(request->svid(), source_.Bundles(), audience, options_.clock->Now());
  if (!svid.ok()) return Invalid("invalid JWT-SVID: " + svid.error().message());
  response->set_spiffe_id(svid->id.str());
  ClaimsToStruct(svid->claims, *response->mutable_claims());
  return grpc::Status::OK;
}

}  // namespace sigil::agent::workloadapi
