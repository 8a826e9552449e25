// Canonical storage form, `get -o yaml|json` output, redaction and round trips.
#include <gtest/gtest.h>

#include "resources/parse.h"

namespace sigil::resources {
namespace {

constexpr std::string_view kBatch = R"(apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: "123", resourceVersion: "7"}
spec:
  mode: simple
  addresses: ["api.example.com:443"]
  tls:
    sni: api.example.com
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {name: web}
spec:
  spiffeId: spiffe://e.org/web
  selectors: ["unix:uid:1000"]
  jwtAudiences: ["true", "null", "1.5", "0x1F", "~x"]
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {name: bind}
spec:
  identities: ["spiffe://e.org/a"]
  source: key
  service: "123"
  delivery: {header: {name: x-api-key}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {name: key}
spec: {type: static, value: "sk-live-SECRET"}
)";

TEST(Output, CanonicalJsonIsSortedFilledAndRedacted) {
  auto r = ParseDocuments(kBatch);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(ToCanonicalJson((*r)[0]),
            R"({"apiVersion":"sigil.dev/v1alpha1","kind":"Service","metadata":{"name":"123"},)"
            R"("spec":{"addresses":["api.example.com:443"],"mode":"simple",)"
            R"("tls":{"sni":"api.example.com","verifyHostname":true}}})");
  EXPECT_EQ(ToCanonicalJson((*r)[3]),
            R"({"apiVersion":"sigil.dev/v1alpha1","kind":"CredentialSource",)"
            R"("metadata":{"name":"key"},"spec":{"type":"static","value":"[redacted]"}})");
}

TEST(Output, YamlAndJsonRoundTrip) {
  auto r = ParseDocuments(kBatch);
  ASSERT_TRUE(r.ok()) << r.error().message();
  std::span<const Resource> plain(r->data(), 3);  // the secret-free ones
  for (const std::string& text : {ToYaml(plain), ToJson(plain)}) {
    SCOPED_TRACE(text);
    auto again = ParseDocuments(text);
    ASSERT_TRUE(again.ok()) << again.error().message();
    ASSERT_EQ(again->size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(ToCanonicalJson((*again)[i]), ToCanonicalJson((*r)[i]));
      EXPECT_EQ((*again)[i].resource_version, (*r)[i].resource_version);
    }
  }
  EXPECT_NE(ToYaml((*r)[0]).find("name: \"123\""), std::string::npos) << ToYaml((*r)[0]);
  EXPECT_NE(ToYaml((*r)[0]).find("resourceVersion: \"7\""), std::string::npos);
  EXPECT_NE(ToYaml((*r)[1]).find("nodes: []"), std::string::npos) << ToYaml((*r)[1]);
}

TEST(Output, SecretsAreRedactedEverywhere) {
  auto r = ParseDocuments(kBatch);
  ASSERT_TRUE(r.ok());
  for (const std::string& text : {ToYaml(*r), ToJson(*r), ToCanonicalJson((*r)[3])}) {
    EXPECT_EQ(text.find("SECRET"), std::string::npos) << text;
    EXPECT_NE(text.find("[redacted]"), std::string::npos) << text;
  }
  EXPECT_EQ((*r)[3].secrets.at("spec.value").view(), "sk-live-SECRET");
  // Applying `get -o yaml` output back is refused rather than storing the marker.
  auto again = ParseDocuments(ToYaml((*r)[3]));
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("spec.value: holds the redaction marker"),
            std::string::npos);
}

TEST(Output, StoredFormRoundTrip) {
  auto r = ParseDocuments(kBatch);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].resource_version, 7u);
  EXPECT_FALSE((*r)[1].resource_version.has_value());
  std::string spec = CanonicalSpecJson((*r)[3]);
  EXPECT_EQ(spec, R"({"type":"static","value":"[redacted]"})");
  auto back = ResourceFromStored("CredentialSource", "key", spec, 9);
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(ToCanonicalJson(*back), ToCanonicalJson((*r)[3]));
  EXPECT_NE(ToYaml(*back).find("resourceVersion: \"9\""), std::string::npos);
  EXPECT_FALSE(ResourceFromStored("Nope", "x", "{}", 1).ok());
  EXPECT_FALSE(ResourceFromStored("Service", "x", "[1", 1).ok());

  auto bad = ParseDocuments(
      "apiVersion: sigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p, "
      "resourceVersion: v1}\nspec: {sources: ['spiffe://e.org/a'], destinations: [x]}\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(),
            "document 1 (AccessPolicy/p): metadata.resourceVersion: expected a decimal revision "
            "like \"42\", got \"v1\"");
}

TEST(Output, ExtractSecretsIsIdempotentAndDefendsHandBuiltResources) {
  nlohmann::json spec = {
      {"type", "oauth2-client-credentials"}, {"clientSecret", "cs"}, {"clientId", "id"}};
  auto first = ExtractSecrets(Kind::kCredentialSource, spec);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first.at("spec.clientSecret").view(), "cs");
  EXPECT_EQ(spec["clientSecret"], "[redacted]");
  EXPECT_TRUE(ExtractSecrets(Kind::kCredentialSource, spec).empty());
  EXPECT_TRUE(ExtractSecrets(Kind::kService, spec).empty());

  Resource hand;
  hand.kind = Kind::kCredentialSource;
  hand.name = "h";
  hand.spec = {{"type", "static"}, {"value", "oops"}};
  EXPECT_EQ(ToJson(hand).find("oops"), std::string::npos);
  EXPECT_EQ(ToYaml(hand).find("oops"), std::string::npos);
}

}  // namespace
}  // namespace sigil::resources
