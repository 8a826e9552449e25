// ServerConnection: the agent's gRPC channel to the control plane's agent API.
//
// TLS through grpc's TLS credentials: the server certificate must validate to the trust
// bundle roots, and the server is identified by its SPIFFE ID (spiffe://TD/sigil/server, checked
// by a custom verifier) rather than by a DNS name, so agents can dial the server by IP address
// or any name (the call host check is off). With node credentials the node SVID is the client
// certificate. A connection is immutable: after a node SVID renewal or a bundle change the
// caller builds a new one (open streams keep the old channel until they end).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "common/result.h"
#include "common/secret_bytes.h"
#include "core/spiffe_id.h"
#include "proto/agent.grpc.pb.h"

namespace sigil::agent {

inline constexpr std::chrono::seconds kServerCallTimeout{15};
// The deadline of one attempt of a repeatable call (signing, credential fetch) when the agent
// knows several server replicas: a replica that stopped answering costs this much before the
// call moves to the next one, instead of kServerCallTimeout. Signing takes milliseconds; five
// seconds is a replica in trouble.
inline constexpr std::chrono::seconds kReplicaAttemptTimeout{5};

class ServerConnection {
 public:
  // `roots_pem`: the CA certificates to trust; `chain_pem`/`key_pem` empty before joining.
  static Result<std::unique_ptr<ServerConnection>> Open(const std::string& address,
                                                        const core::TrustDomain& trust_domain,
                                                        const std::string& roots_pem,
                                                        const std::string& chain_pem,
                                                        const SecretBytes& key_pem);

  sigil::agent::v1::AgentService::Stub& stub() { return *stub_; }
  // The channel itself, for a generic stub (bench/scale reads Sync messages as raw bytes).
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const std::string& address() const { return address_; }

  // A context with the default deadline.
  static std::unique_ptr<grpc::ClientContext> Context(
      std::chrono::seconds timeout = kServerCallTimeout);

 private:
  ServerConnection(std::string address, std::shared_ptr<grpc::Channel> channel)
      : address_(std::move(address)),
        channel_(std::move(channel)),
        stub_(sigil::agent::v1::AgentService::NewStub(channel_)) {}
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<sigil::agent::v1::AgentService::Stub> stub_;
};

// Our errors from a gRPC status (code mapped, message kept).
Error FromGrpcStatus(const grpc::Status& status, std::string_view what);

}  // namespace sigil::agent
