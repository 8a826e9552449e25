// Unit tests of the pure response builders, the claims conversion and the status mapping, with
// real certificates and keys from an in-process CA.
#include "agent/workloadapi/responses.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "agent/workloadapi/status_map.h"
#include "core/ca.h"
#include "core/certificate.h"
#include "core/keys.h"
#include "core/spiffe_id.h"
#include "core/testing/pki_fixture.h"

namespace sigil::agent::workloadapi {
namespace {

using core::testing::Id;
using core::testing::MakeCa;
using core::testing::Td;
using core::testing::TestNow;

std::string Str(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

struct Fixture {
  core::X509Ca ca = MakeCa("example.org");
  core::X509Ca other = MakeCa("other.org");
  core::PrivateKey jwt_key = core::PrivateKey::Generate(core::KeyType::kEcP256).value();

  X509SvidGrant Grant(const std::string& id, const std::string& hint) const {
    auto key = core::PrivateKey::Generate(core::KeyType::kEcP256).value();
    auto issued = ca.IssueX509Svid({Id(id), key.Public(), {}, Seconds(3600)}, TestNow()).value();
    return X509SvidGrant{id, hint, issued.chain, std::move(key.ToPkcs8Der()).value(),
                         issued.leaf.NotAfter()};
  }
  core::BundleSet Bundles(bool with_other = true) const {
    auto own = std::make_shared<core::TrustBundle>(Td("example.org"));
    own->AddX509Authority(ca.root());
    EXPECT_TRUE(own->AddJwtAuthority("kid-1", jwt_key.Public()).ok());
    core::BundleSet set;
    set.Put(own);
    if (with_other) {
      auto fed = std::make_shared<core::TrustBundle>(Td("other.org"));
      fed->AddX509Authority(other.root());
      set.Put(fed);
    }
    return set;
  }
};

TEST(BuildX509SvidResponse, EncodesEverySvidWithItsBundleAndTheFederatedOnes) {
  Fixture f;
  std::vector<X509SvidGrant> grants;
  grants.push_back(f.Grant("spiffe://example.org/a", "a"));
  grants.push_back(f.Grant("spiffe://example.org/b", "b"));
  auto built = BuildX509SvidResponse(grants, f.Bundles());
  ASSERT_TRUE(built.ok()) << built.error().ToString();
  const X509SVIDResponse& r = built->response;
  ASSERT_EQ(r.svids_size(), 2);
  EXPECT_EQ(r.svids(0).spiffe_id(), "spiffe://example.org/a");
  EXPECT_EQ(r.svids(0).hint(), "a");
  EXPECT_EQ(r.svids(0).x509_svid(), Str(core::CertificatesToDer(grants[0].chain)));
  EXPECT_EQ(r.svids(0).x509_svid_key(), std::string(grants[0].key_pkcs8_der.view()));
  EXPECT_EQ(r.svids(0).bundle(), Str(f.ca.root().ToDer()));
  ASSERT_EQ(r.federated_bundles_size(), 1);
  EXPECT_EQ(r.federated_bundles().at("spiffe://other.org"), Str(f.other.root().ToDer()));
  // The signature is non-secret: it never contains the key bytes.
  EXPECT_EQ(built->signature.find(std::string(grants[0].key_pkcs8_der.view())), std::string::npos);
}

TEST(BuildX509SvidResponse, SignatureFollowsCertificatesNotKeys) {
  Fixture f;
  std::vector<X509SvidGrant> one;
  one.push_back(f.Grant("spiffe://example.org/a", "a"));
  auto first = BuildX509SvidResponse(one, f.Bundles());
  auto again = BuildX509SvidResponse(one, f.Bundles());
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_EQ(first->signature, again->signature);
  std::vector<X509SvidGrant> renewed;
  renewed.push_back(f.Grant("spiffe://example.org/a", "a"));
  auto next = BuildX509SvidResponse(renewed, f.Bundles());
  ASSERT_TRUE(next.ok());
  EXPECT_NE(first->signature, next->signature);
  auto fewer_bundles = BuildX509SvidResponse(one, f.Bundles(/*with_other=*/false));
  ASSERT_TRUE(fewer_bundles.ok());
  EXPECT_NE(first->signature, fewer_bundles->signature);
}

TEST(BuildX509SvidResponse, DuplicateHintKeepsTheFirst) {
  Fixture f;
  std::vector<X509SvidGrant> grants;
  grants.push_back(f.Grant("spiffe://example.org/a", "same"));
  grants.push_back(f.Grant("spiffe://example.org/b", "same"));
  grants.push_back(f.Grant("spiffe://example.org/c", ""));
  grants.push_back(f.Grant("spiffe://example.org/d", ""));
  auto built = BuildX509SvidResponse(grants, f.Bundles());
  ASSERT_TRUE(built.ok());
  ASSERT_EQ(built->response.svids_size(), 3);
  EXPECT_EQ(built->response.svids(0).spiffe_id(), "spiffe://example.org/a");
  EXPECT_EQ(built->response.svids(1).spiffe_id(), "spiffe://example.org/c");
  EXPECT_EQ(built->response.svids(2).spiffe_id(), "spiffe://example.org/d");
}

TEST(BuildX509SvidResponse, Errors) {
  Fixture f;
  auto none = BuildX509SvidResponse({}, f.Bundles());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(none.error().message(), "no identity issued");

  std::vector<X509SvidGrant> grants;
  grants.push_back(f.Grant("spiffe://example.org/a", "a"));
  auto no_bundle = BuildX509SvidResponse(grants, core::BundleSet{});
  ASSERT_FALSE(no_bundle.ok());
  EXPECT_EQ(no_bundle.error().code(), ErrorCode::kUnavailable);

  grants[0].key_pkcs8_der = SecretBytes();
  auto no_key = BuildX509SvidResponse(grants, f.Bundles());
  ASSERT_FALSE(no_key.ok());
  EXPECT_EQ(no_key.error().code(), ErrorCode::kInternal);
}

TEST(WipeKeys, ClearsEveryKey) {
  Fixture f;
  std::vector<X509SvidGrant> grants;
  grants.push_back(f.Grant("spiffe://example.org/a", "a"));
  auto built = BuildX509SvidResponse(grants, f.Bundles());
  ASSERT_TRUE(built.ok());
  WipeKeys(built->response);
  EXPECT_TRUE(built->response.svids(0).x509_svid_key().empty());
  EXPECT_FALSE(built->response.svids(0).x509_svid().empty());
}

TEST(BuildBundles, KeyedByTrustDomainIdWithDerAndJwtOnlyJwks) {
  Fixture f;
  auto x509 = BuildX509BundlesResponse(f.Bundles());
  ASSERT_TRUE(x509.ok());
  ASSERT_EQ(x509->response.bundles_size(), 2);
  EXPECT_EQ(x509->response.bundles().at("spiffe://example.org"), Str(f.ca.root().ToDer()));
  EXPECT_EQ(x509->response.bundles().at("spiffe://other.org"), Str(f.other.root().ToDer()));

  auto jwt = BuildJwtBundlesResponse(f.Bundles());
  ASSERT_TRUE(jwt.ok());
  ASSERT_EQ(jwt->response.bundles_size(), 2);
  auto jwks = nlohmann::json::parse(jwt->response.bundles().at("spiffe://example.org"));
  ASSERT_EQ(jwks["keys"].size(), 1u);
  EXPECT_EQ(jwks["keys"][0]["use"], "jwt-svid");
  EXPECT_EQ(jwks["keys"][0]["kid"], "kid-1");
  EXPECT_FALSE(jwks["keys"][0].contains("x5c"));
  auto other = nlohmann::json::parse(jwt->response.bundles().at("spiffe://other.org"));
  EXPECT_TRUE(other["keys"].empty());  // no JWT authority: an empty key set, no X.509 entry

  EXPECT_EQ(BuildX509BundlesResponse({}).error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(BuildJwtBundlesResponse({}).error().code(), ErrorCode::kUnavailable);
}

TEST(ClaimsToStruct, KeepsTypesAndMakesAudAList) {
  auto claims = nlohmann::json::parse(R"({
    "sub": "spiffe://example.org/a", "aud": "db", "exp": 1796398845, "iat": 1.5,
    "admin": true, "none": null, "list": [1, "x", {"aud": "nested"}],
    "obj": {"n": -3, "aud": "inner"}})");
  google::protobuf::Struct s;
  ClaimsToStruct(claims, s);
  const auto& f = s.fields();
  EXPECT_EQ(f.at("sub").string_value(), "spiffe://example.org/a");
  ASSERT_TRUE(f.at("aud").has_list_value());
  ASSERT_EQ(f.at("aud").list_value().values_size(), 1);
  EXPECT_EQ(f.at("aud").list_value().values(0).string_value(), "db");
  EXPECT_EQ(f.at("exp").kind_case(), google::protobuf::Value::kNumberValue);
  EXPECT_EQ(f.at("exp").number_value(), 1796398845.0);
  EXPECT_EQ(f.at("iat").number_value(), 1.5);
  EXPECT_TRUE(f.at("admin").bool_value());
  EXPECT_EQ(f.at("none").kind_case(), google::protobuf::Value::kNullValue);
  const auto& list = f.at("list").list_value();
  ASSERT_EQ(list.values_size(), 3);
  EXPECT_EQ(list.values(0).number_value(), 1.0);
  EXPECT_EQ(list.values(1).string_value(), "x");
  // Only the top-level aud is normalised.
  EXPECT_EQ(list.values(2).struct_value().fields().at("aud").string_value(), "nested");
  EXPECT_EQ(f.at("obj").struct_value().fields().at("n").number_value(), -3.0);
  EXPECT_EQ(f.at("obj").struct_value().fields().at("aud").string_value(), "inner");

  auto list_aud = nlohmann::json::parse(R"({"aud": ["a", "b"]})");
  google::protobuf::Struct s2;
  ClaimsToStruct(list_aud, s2);
  EXPECT_EQ(s2.fields().at("aud").list_value().values_size(), 2);
}

TEST(StatusMap, OneToOneExceptDeadline) {
  EXPECT_EQ(ToGrpcCode(ErrorCode::kPermissionDenied), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ToGrpcCode(ErrorCode::kUnavailable), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcCode(ErrorCode::kDeadlineExceeded), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcCode(ErrorCode::kInvalidArgument), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcCode(ErrorCode::kInternal), grpc::StatusCode::INTERNAL);
  grpc::Status s = ToGrpcStatus(PermissionDenied("no identity issued"), "fetch");
  EXPECT_EQ(s.error_message(), "fetch: no identity issued");
}

}  // namespace
}  // namespace sigil::agent::workloadapi
