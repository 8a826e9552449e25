// Result errors -> gRPC status for the Workload API endpoint.
//
// The mapping is one to one except DeadlineExceeded, which becomes UNAVAILABLE: an internal
// deadline (an issuance round trip to the server) is transient for the workload and must not be
// confused with the client's own call deadline. Messages are the Error's message, optionally
// prefixed; callers guarantee they never contain key bytes or tokens (the core and source
// libraries never put secrets into error messages).
#pragma once

#include <grpcpp/grpcpp.h>

#include <string_view>

#include "common/result.h"

namespace sigil::agent::workloadapi {

grpc::StatusCode ToGrpcCode(ErrorCode code);
// "context: message" (or just the message when `context` is empty).
grpc::Status ToGrpcStatus(const Error& error, std::string_view context = {});

}  // namespace sigil::agent::workloadapi
