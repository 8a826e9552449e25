#include "agent/core/server_connection.h"

#include <openssl/crypto.h>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

namespace sigil::agent {
namespace {

// Largest message the agent accepts from the server. A Sync snapshot carries every synced
// resource in one message (about 220 bytes per WorkloadIdentity), so gRPC's default of 4 MiB
// refused snapshots of ~20,000 identities and more, on every reconnect (bench/scale). The
// server is authenticated; this bound only stops a runaway message.
constexpr int kMaxServerMessageBytes = 512 * 1024 * 1024;

// Accepts the server only as spiffe://TD/sigil/server (path validation to the roots is done by
// grpc before this runs).
class ServerIdVerifier final : public grpc::experimental::ExternalCertificateVerifier {
 public:
  explicit ServerIdVerifier(std::string expected) : expected_(std::move(expected)) {}
  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/, grpc::Status* sync_status) override {
    auto uris = request->uri_names();
    if (uris.size() == 1 && std::string(uris[0].data(), uris[0].size()) == expected_) {
      *sync_status = grpc::Status::OK;
    } else {
      *sync_status =
          grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "server certificate is not " + expected_);
    }
    return true;
  }
  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest* /*request*/) override {}

 private:
  const std::string expected_;
};

}  // namespace

Error FromGrpcStatus(const grpc::Status& status, std::string_view what) {
  ErrorCode code = ErrorCode::kInternal;
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      code = ErrorCode::kInvalidArgument;
      break;
    case grpc::StatusCode::NOT_FOUND:
      code = ErrorCode::kNotFound;
      break;
    case grpc::StatusCode::ALREADY_EXISTS:
      code = ErrorCode::kAlreadyExists;
      break;
    case grpc::StatusCode::PERMISSION_DENIED:
      code = ErrorCode::kPermissionDenied;
      break;
    case grpc::StatusCode::UNAUTHENTICATED:
      code = ErrorCode::kUnauthenticated;
      break;
    case grpc::StatusCode::FAILED_PRECONDITION:
      code = ErrorCode::kFailedPrecondition;
      break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      code = ErrorCode::kResourceExhausted;
      break;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
      code = ErrorCode::kUnavailable;
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      code = ErrorCode::kDeadlineExceeded;
      break;
    case grpc::StatusCode::ABORTED:
      code = ErrorCode::kAborted;
      break;
    case grpc::StatusCode::UNIMPLEMENTED:
      code = ErrorCode::kUnimplemented;
      break;
    default:
      break;
  }
  return Error(code, std::string(what) + ": " + status.error_message());
}

std::unique_ptr<grpc::ClientContext> ServerConnection::Context(std::chrono::seconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

Result<std::unique_ptr<ServerConnection>> ServerConnection::Open(
    const std::string& address, const core::TrustDomain& trust_domain, const std::string& roots_pem,
    const std::string& chain_pem, const SecretBytes& key_pem) {
  if (roots_pem.empty()) return InvalidArgument("server connection: no trust roots");
  std::vector<grpc::experimental::IdentityKeyCertPair> identity;
  if (!chain_pem.empty()) identity.push_back({std::string(key_pem.view()), chain_pem});
  auto provider =
      std::make_shared<grpc::experimental::StaticDataCertificateProvider>(roots_pem, identity);
  for (auto& pair : identity) OPENSSL_cleanse(pair.private_key.data(), pair.private_key.size());
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider);
  options.watch_root_certs();
  if (!chain_pem.empty()) options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  options.set_check_call_host(false);
  options.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<ServerIdVerifier>(
          "spiffe://" + trust_domain.name() + "/sigil/server"));
  auto credentials = grpc::experimental::TlsCredentials(options);
  if (!credentials) return Internal("server connection: TLS credentials could not be built");
  grpc::ChannelArguments args;
  // Keepalive pings every 30 s (10 s to answer), also on an idle Sync stream: after the host
  // slept, a connection that died meanwhile fails within ~40 s and Sync resumes. gRPC sends at
  // most 2 pings without data by default, which would end keepalive after a minute of quiet;
  // the server allows a ping every 10 s (StartAgentApi).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 10000);
  args.SetMaxReceiveMessageSize(kMaxServerMessageBytes);
  auto channel = grpc::CreateCustomChannel(address, credentials, args);
  return std::unique_ptr<ServerConnection>(new ServerConnection(address, std::move(channel)));
}

}  // namespace sigil::agent
