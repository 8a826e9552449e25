// The Workload API must be served at the standard's paths, which depend on the proto having no
// package and on the exact message/field numbering. These checks read the compiled descriptors.
#include <gtest/gtest.h>

#include "proto/agent.grpc.pb.h"
#include "proto/workload.grpc.pb.h"

namespace {

TEST(WorkloadProto, ServiceAndMethodPathsMatchTheStandard) {
  const auto* svc = X509SVIDRequest::descriptor()->file()->FindServiceByName("SpiffeWorkloadAPI");
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ(svc->full_name(), "SpiffeWorkloadAPI");
  // gRPC path = "/" + service full name + "/" + method.
  EXPECT_EQ("/" + svc->full_name() + "/" + svc->method(0)->name(),
            "/SpiffeWorkloadAPI/FetchX509SVID");
  EXPECT_EQ(svc->file()->package(), "");
  const char* methods[] = {"FetchX509SVID", "FetchX509Bundles", "FetchJWTSVID", "FetchJWTBundles",
                           "ValidateJWTSVID"};
  ASSERT_EQ(svc->method_count(), 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(svc->method(i)->name(), methods[i]);
  EXPECT_TRUE(svc->FindMethodByName("FetchX509SVID")->server_streaming());
  EXPECT_TRUE(svc->FindMethodByName("FetchX509Bundles")->server_streaming());
  EXPECT_FALSE(svc->FindMethodByName("FetchJWTSVID")->server_streaming());
  EXPECT_TRUE(svc->FindMethodByName("FetchJWTBundles")->server_streaming());
  EXPECT_FALSE(svc->FindMethodByName("ValidateJWTSVID")->server_streaming());
}

TEST(WorkloadProto, FieldNumbersMatchTheStandard) {
  struct Field {
    const google::protobuf::Descriptor* msg;
    const char* name;
    int number;
  } fields[] = {
      {X509SVIDResponse::descriptor(), "svids", 1},
      {X509SVIDResponse::descriptor(), "crl", 2},
      {X509SVIDResponse::descriptor(), "federated_bundles", 3},
      {X509SVID::descriptor(), "spiffe_id", 1},
      {X509SVID::descriptor(), "x509_svid", 2},
      {X509SVID::descriptor(), "x509_svid_key", 3},
      {X509SVID::descriptor(), "bundle", 4},
      {X509SVID::descriptor(), "hint", 5},
      {X509BundlesResponse::descriptor(), "crl", 1},
      {X509BundlesResponse::descriptor(), "bundles", 2},
      {JWTSVIDRequest::descriptor(), "audience", 1},
      {JWTSVIDRequest::descriptor(), "spiffe_id", 2},
      {JWTSVIDResponse::descriptor(), "svids", 1},
      {JWTSVID::descriptor(), "spiffe_id", 1},
      {JWTSVID::descriptor(), "svid", 2},
      {JWTSVID::descriptor(), "hint", 3},
      {JWTBundlesResponse::descriptor(), "bundles", 1},
      {ValidateJWTSVIDRequest::descriptor(), "audience", 1},
      {ValidateJWTSVIDRequest::descriptor(), "svid", 2},
      {ValidateJWTSVIDResponse::descriptor(), "spiffe_id", 1},
      {ValidateJWTSVIDResponse::descriptor(), "claims", 2},
  };
  for (const auto& f : fields) {
    const auto* field = f.msg->FindFieldByName(f.name);
    ASSERT_NE(field, nullptr) << f.msg->name() << "." << f.name;
    EXPECT_EQ(field->number(), f.number) << f.msg->name() << "." << f.name;
  }
  EXPECT_EQ(
      ValidateJWTSVIDResponse::descriptor()->FindFieldByName("claims")->message_type()->full_name(),
      "google.protobuf.Struct");
}

TEST(AgentProto, IsPackaged) {
  EXPECT_EQ(sigil::agent::v1::AgentService::service_full_name(),
            std::string("sigil.agent.v1.AgentService"));
}

}  // namespace
