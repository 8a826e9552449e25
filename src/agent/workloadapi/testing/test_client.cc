// workloadapi_test_client: a Workload API client run as a separate (exec'd) process by
// workload_api_test.cc, so that calls come from another pid / uid than the test. gRPC must not
// be used in a forked copy of the (multi-threaded) test process, hence a real executable.
//
//   workloadapi_test_client SOCKET x509                 first FetchX509SVID message
//   workloadapi_test_client SOCKET x509bundles          first FetchX509Bundles message
//   workloadapi_test_client SOCKET jwtbundles           first FetchJWTBundles message
//   workloadapi_test_client SOCKET jwt AUD [SPIFFE_ID]  FetchJWTSVID
//   workloadapi_test_client SOCKET validate AUD TOKEN   ValidateJWTSVID
//   workloadapi_test_client SOCKET explain              ExplainViaSocket (the library helper)
// Prints one line "self=<pid> uid=<euid> code=<grpc code> [n=.. id=.. hint=.. token=.. tds=..]
// msg=<message with spaces as _>" and exits 0 (2 on bad usage).
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "agent/workloadapi/explain_client.h"
#include "proto/workload.grpc.pb.h"

namespace {

std::string NoSpaces(std::string s) {
  for (char& c : s) {
    if (c == ' ' || c == '\n') c = '_';
  }
  return s.empty() ? "-" : s;
}

void Print(int code, const std::string& fields, const std::string& message) {
  std::printf("self=%d uid=%d code=%d %s msg=%s\n", static_cast<int>(::getpid()),
              static_cast<int>(::geteuid()), code, fields.c_str(), NoSpaces(message).c_str());
  std::fflush(stdout);
}

void Prepare(grpc::ClientContext& ctx) {
  ctx.AddMetadata("workload.spiffe.io", "true");
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
}

template <class Map>
std::string Keys(const Map& map) {
  std::string out;
  for (const auto& [k, v] : map) out += (out.empty() ? "" : ",") + k;
  return out.empty() ? "-" : out;
}

template <class Request, class Response, class Call>
void FirstOfStream(Call call, std::string (*fields)(const Response&)) {
  grpc::ClientContext ctx;
  Prepare(ctx);
  Request request;
  auto reader = call(&ctx, request);
  Response response;
  if (reader->Read(&response)) {
    ctx.TryCancel();
    reader->Finish();
    Print(0, fields(response), "");
    return;
  }
  grpc::Status status = reader->Finish();
  Print(status.error_code(), "", status.error_message());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string socket = argv[1];
  const std::string mode = argv[2];
  if (mode == "explain") {
    auto r = sigil::agent::workloadapi::ExplainViaSocket(socket);
    if (!r.ok()) {
      Print(-1, "err=" + std::string(sigil::ErrorCodeName(r.error().code())), r.error().message());
      return 0;
    }
    std::string fields = "pid=" + std::to_string(r->pid) + " xuid=" + std::to_string(r->uid) +
                         " n=" + std::to_string(r->identities.size());
    if (!r->identities.empty()) {
      fields += " id=" + r->identities[0].spiffe_id + " name=" + r->identities[0].workload_identity;
    }
    Print(0, fields, "");
    return 0;
  }
  auto stub = SpiffeWorkloadAPI::NewStub(
      grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  if (mode == "x509") {
    FirstOfStream<X509SVIDRequest, X509SVIDResponse>(
        [&](grpc::ClientContext* c, const X509SVIDRequest& r) { return stub->FetchX509SVID(c, r); },
        +[](const X509SVIDResponse& r) {
          return "n=" + std::to_string(r.svids_size()) +
                 (r.svids_size() > 0
                      ? " id=" + r.svids(0).spiffe_id() + " hint=" + NoSpaces(r.svids(0).hint())
                      : std::string());
        });
    return 0;
  }
  if (mode == "x509bundles") {
    FirstOfStream<X509BundlesRequest, X509BundlesResponse>(
        [&](grpc::ClientContext* c, const X509BundlesRequest& r) {
          return stub->FetchX509Bundles(c, r);
        },
        +[](const X509BundlesResponse& r) { return "tds=" + Keys(r.bundles()); });
    return 0;
  }
  if (mode == "jwtbundles") {
    FirstOfStream<JWTBundlesRequest, JWTBundlesResponse>(
        [&](grpc::ClientContext* c, const JWTBundlesRequest& r) {
          return stub->FetchJWTBundles(c, r);
        },
        +[](const JWTBundlesResponse& r) { return "tds=" + Keys(r.bundles()); });
    return 0;
  }
  if (mode == "jwt" && argc >= 4) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    JWTSVIDRequest request;
    request.add_audience(argv[3]);
    if (argc >= 5) request.set_spiffe_id(argv[4]);
    JWTSVIDResponse response;
    grpc::Status status = stub->FetchJWTSVID(&ctx, request, &response);
    std::string fields = "n=" + std::to_string(response.svids_size());
    if (response.svids_size() > 0) {
      fields += " id=" + response.svids(0).spiffe_id() + " token=" + response.svids(0).svid();
    }
    Print(status.error_code(), fields, status.error_message());
    return 0;
  }
  if (mode == "validate" && argc >= 5) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    ValidateJWTSVIDRequest request;
    request.set_audience(argv[3]);
    request.set_svid(argv[4]);
    ValidateJWTSVIDResponse response;
    grpc::Status status = stub->ValidateJWTSVID(&ctx, request, &response);
    Print(status.error_code(), "id=" + NoSpaces(response.spiffe_id()), status.error_message());
    return 0;
  }
  return 2;
}
