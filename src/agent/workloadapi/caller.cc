#include "agent/workloadapi/caller.h"

#include <string>
#include <utility>

#include "agent/workloadapi/status_map.h"

namespace sigil::agent::workloadapi {

PeerLookup PeerLookupFor(const peer::PeerListener* listener) {
  return [listener](const grpc::ServerContext& context) -> std::optional<peer::PeerInfo> {
    if (listener == nullptr) return std::nullopt;
    return listener->PeerOf(context);
  };
}

grpc::Status CheckSecurityHeader(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto [begin, end] =
      metadata.equal_range(grpc::string_ref(kSecurityHeaderKey.data(), kSecurityHeaderKey.size()));
  int count = 0;
  bool value_ok = false;
  for (auto it = begin; it != end; ++it) {
    ++count;
    value_ok = std::string_view(it->second.data(), it->second.size()) == kSecurityHeaderValue;
  }
  if (count == 1 && value_ok) return grpc::Status::OK;
  return {grpc::StatusCode::INVALID_ARGUMENT,
          "security header missing from request: send metadata \"workload.spiffe.io: true\""};
}

CallerIdentifier::CallerIdentifier(PeerLookup lookup, attest::Attestor& attestor,
                                   CallerOptions options)
    : lookup_(std::move(lookup)), attestor_(attestor), options_(options) {}

namespace {

grpc::Status AttestationFailure(const Error& error) {
  switch (error.code()) {
    case ErrorCode::kNotFound:
    case ErrorCode::kFailedPrecondition:
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kResourceExhausted:
    case ErrorCode::kPermissionDenied:
      return {grpc::StatusCode::PERMISSION_DENIED,
              "workload attestation failed: " + error.message()};
    default:
      return {grpc::StatusCode::UNAVAILABLE, "workload attestation failed: " + error.message()};
  }
}

}  // namespace

grpc::Status CallerIdentifier::Identify(const grpc::ServerContext& context,
                                        attest::AttestedProcess* out) const {
  std::optional<peer::PeerInfo> peer = lookup_ ? lookup_(context) : std::nullopt;
  if (!peer || peer->pidfd_raw() < 0) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            "caller not identified: no peer credentials for this connection (the Workload API "
            "is only served on the agent's Unix socket)"};
  }
  if (options_.require_socket_pidfd && !peer->pidfd_from_socket) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            "caller not identified: pid " + std::to_string(peer->pid) +
                ": the kernel gave no SO_PEERPIDFD and pid-based fallback is disabled"};
  }
  for (int attempt = 0;; ++attempt) {
    Result<attest::AttestedProcess> attested = attestor_.AttestPidfd(peer->pid, peer->pidfd_raw());
    if (attested.ok()) {
      *out = std::move(attested).value();
      return grpc::Status::OK;
    }
    if (attested.error().code() == ErrorCode::kAborted && attempt < options_.attest_retries) {
      continue;
    }
    return AttestationFailure(attested.error());
  }
}

}  // namespace sigil::agent::workloadapi
