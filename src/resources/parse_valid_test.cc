#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "resources/parse.h"

namespace sigil::resources {
namespace {

constexpr std::string_view kHead = "apiVersion: sigil.dev/v1alpha1\n";

struct ValidCase {
  const char* label;
  std::string yaml;
  Kind kind;
  const char* expected_spec;  // canonical JSON of spec (secrets redacted)
};

std::string Doc(std::string_view kind, std::string_view name, std::string_view spec) {
  return std::string(kHead) + "kind: " + std::string(kind) +
         "\nmetadata:\n  name: " + std::string(name) + "\nspec:\n" + std::string(spec);
}

const std::vector<ValidCase>& Cases() {
  static const auto* cases = new std::vector<ValidCase>{
      {"workload minimal",
       Doc("WorkloadIdentity", "web",
           "  spiffeId: spiffe://example.org/web\n  selectors: [unix:uid:1000]\n"),
       Kind::kWorkloadIdentity,
       R"({"dnsNames":[],"jwtAudiences":[],"nodes":[],"selectors":["unix:uid:1000"],)"
       R"("spiffeId":"spiffe://example.org/web","ttl":"1h"})"},
      {"workload full with templates",
       Doc("WorkloadIdentity", "per-node",
           "  spiffeId: spiffe://example.org/host/{{node}}/uid-{{uid}}\n"
           "  selectors:\n"
           "    - unix:path:/usr/bin/python3\n"
           "    - unix:sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\n"
           "    - cgroup:/system.slice/app.service\n"
           "    - unix:gid:0\n    - unix:user:www-data\n    - unix:group:staff\n"
           "    - container:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
           "    - k8s:ns:default\n    - k8s:sa:api\n    - k8s:pod-label:app:web\n"
           "    - k8s:pod-uid:123E4567-e89b-12d3-a456-426614174000\n"
           "  ttl: 90m\n  dnsNames: [web.example.org, '*.web.example.org']\n"
           "  nodes: [node-1, 'web-*']\n  jwtAudiences: [vault, https://api.example.org]\n"),
       Kind::kWorkloadIdentity,
       R"({"dnsNames":["web.example.org","*.web.example.org"],)"
       R"("jwtAudiences":["https://api.example.org","vault"],"nodes":["node-1","web-*"],)"
       R"("selectors":["cgroup:/system.slice/app.service",)"
       R"("container:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",)"
       R"("k8s:ns:default","k8s:pod-label:app:web",)"
       R"("k8s:pod-uid:123e4567-e89b-12d3-a456-426614174000","k8s:sa:api","unix:gid:0",)"
       R"("unix:group:staff","unix:path:/usr/bin/python3",)"
       R"("unix:sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",)"
       R"("unix:user:www-data"],"spiffeId":"spiffe://example.org/host/{{node}}/uid-{{uid}}",)"
       R"("ttl":"1h30m"})"},
      {"service mutual defaults",
       Doc("Service", "api",
           "  mode: mutual\n  addresses: ['10.0.0.1:8080', 'api.internal:80']\n"
           "  identity: spiffe://example.org/api\n"),
       Kind::kService,
       R"({"addresses":["10.0.0.1:8080","api.internal:80"],)"
       R"("identity":"spiffe://example.org/api","inboundPort":15008,"mode":"mutual",)"
       R"("peerIdentityForwarding":"none"})"},
      {"service permissive",
       Doc("Service", "legacy",
           "  mode: permissive\n  addresses: ['10.1.0.0/16:5432']\n"
           "  identity: spiffe://example.org/db\n  inboundPort: 16000\n"
           "  peerIdentityForwarding: proxy-v2\n"),
       Kind::kService,
       R"({"addresses":["10.1.0.0/16:5432"],"identity":"spiffe://example.org/db",)"
       R"("inboundPort":16000,"mode":"permissive","peerIdentityForwarding":"proxy-v2"})"},
      {"service simple",
       Doc("Service", "ext",
           "  mode: simple\n  addresses: ['[2001:DB8::1]:443', '2001:db8::/32:8443']\n"
           "  tls:\n    sni: ext.example.com\n    verifyHostname: false\n    port: 443\n"),
       Kind::kService,
       R"({"addresses":["[2001:db8::/32]:8443","[2001:db8::1]:443"],"mode":"simple",)"
       R"("tls":{"port":443,"sni":"ext.example.com","verifyHostname":false}})"},
      {"service inject",
       Doc("Service", "openai", "  mode: inject\n  addresses: ['api.openai.com:80']\n"),
       Kind::kService,
       R"({"addresses":["api.openai.com:80"],"mode":"inject","tls":{"verifyHostname":true}})"},
      {"service passthrough",
       Doc("Service", "dns", "  mode: passthrough\n  addresses: ['0.0.0.0/0:53']\n"),
       Kind::kService, R"({"addresses":["0.0.0.0/0:53"],"mode":"passthrough"})"},
      {"service deny",
       Doc("Service", "meta",
           "  mode: deny\n  addresses: ['169.254.169.254:80', '*.evil.example:443']\n"),
       Kind::kService,
       R"({"addresses":["*.evil.example:443","169.254.169.254:80"],"mode":"deny"})"},
      {"source static", Doc("CredentialSource", "openai-key", "  type: static\n  value: sk-123\n"),
       Kind::kCredentialSource, R"({"type":"static","value":"[redacted]"})"},
      {"source aws",
       Doc("CredentialSource", "aws",
           "  type: aws\n  accessKeyId: AKIAIOSFODNN7EXAMPLE\n"
           "  secretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
           "  sessionToken: tok\n  region: eu-west-1\n"),
       Kind::kCredentialSource,
       R"({"accessKeyId":"AKIAIOSFODNN7EXAMPLE","region":"eu-west-1",)"
       R"("secretAccessKey":"[redacted]","sessionToken":"[redacted]","type":"aws"})"},
      {"source oauth2",
       Doc("CredentialSource", "idp",
           "  type: oauth2-client-credentials\n  tokenUrl: https://idp.example.com/oauth/token\n"
           "  clientId: sigil\n  clientSecret: s3cret\n  scopes: [write, read]\n"),
       Kind::kCredentialSource,
       R"({"clientAuthMethod":"client_secret_basic","clientId":"sigil",)"
       R"("clientSecret":"[redacted]","scopes":["read","write"],)"
       R"("tokenUrl":"https://idp.example.com/oauth/token","type":"oauth2-client-credentials"})"},
      {"source jwt", Doc("CredentialSource", "vault-jwt", "  type: jwt\n  audience: vault\n"),
       Kind::kCredentialSource, R"({"audience":"vault","ttl":"5m","type":"jwt"})"},
      {"binding header",
       Doc("CredentialBinding", "openai",
           "  source: openai-key\n  service: openai\n"
           "  identities: ['spiffe://example.org/ns/ml/*', spiffe://example.org/batch]\n"
           "  delivery:\n    header:\n      name: Authorization\n"
           "      template: 'Bearer {{secret}}'\n"),
       Kind::kCredentialBinding,
       R"({"delivery":{"header":{"name":"Authorization","template":"Bearer {{secret}}"}},)"
       R"("identities":["spiffe://example.org/batch","spiffe://example.org/ns/ml/*"],)"
       R"("service":"openai","source":"openai-key"})"},
      {"binding header default template",
       Doc("CredentialBinding", "key",
           "  source: k\n  service: s\n  identities: [spiffe://example.org/a]\n"
           "  delivery: {header: {name: x-api-key}}\n"),
       Kind::kCredentialBinding,
       R"({"delivery":{"header":{"name":"x-api-key","template":"{{secret}}"}},)"
       R"("identities":["spiffe://example.org/a"],"service":"s","source":"k"})"},
      {"binding sigv4",
       Doc("CredentialBinding", "s3",
           "  source: aws\n  service: s3\n  identities: ['spiffe://example.org/*']\n"
           "  delivery: {sigv4: {region: us-east-1, service: s3}}\n"),
       Kind::kCredentialBinding,
       R"({"delivery":{"sigv4":{"region":"us-east-1","service":"s3"}},)"
       R"("identities":["spiffe://example.org/*"],"service":"s3","source":"aws"})"},
      {"binding file env",
       Doc("CredentialBinding", "envfile",
           "  source: k\n  identities: [spiffe://example.org/a]\n"
           "  delivery: {file: {fileName: api.env, format: env, envName: API_KEY}}\n"),
       Kind::kCredentialBinding,
       R"({"delivery":{"file":{"envName":"API_KEY","fileName":"api.env","format":"env"}},)"
       R"("identities":["spiffe://example.org/a"],"source":"k"})"},
      {"binding file svid-pem without source",
       Doc("CredentialBinding", "pem",
           "  identities: [spiffe://example.org/a]\n"
           "  delivery: {file: {fileName: svid.pem, format: svid-pem}}\n"),
       Kind::kCredentialBinding,
       R"({"delivery":{"file":{"fileName":"svid.pem","format":"svid-pem"}},)"
       R"("identities":["spiffe://example.org/a"]})"},
      {"policy default allow",
       Doc("AccessPolicy", "web-to-api",
           "  sources: ['spiffe://example.org/web', 'spiffe://example.org/jobs/*']\n"
           "  destinations: [api, db]\n"),
       Kind::kAccessPolicy,
       R"({"action":"allow","destinations":["api","db"],)"
       R"("sources":["spiffe://example.org/jobs/*","spiffe://example.org/web"]})"},
      {"policy deny",
       Doc("AccessPolicy", "no-db",
           "  sources: ['spiffe://other.org/*']\n  destinations: [db]\n  action: deny\n"),
       Kind::kAccessPolicy,
       R"({"action":"deny","destinations":["db"],"sources":["spiffe://other.org/*"]})"},
      {"service inject terminating tls",
       Doc("Service", "openai-tls",
           "  mode: inject\n  addresses: ['192.0.2.1:443']\n  tls: {sni: api.openai.com}\n"
           "  inject: {terminateTls: true}\n"),
       Kind::kService,
       R"({"addresses":["192.0.2.1:443"],"inject":{"terminateTls":true},"mode":"inject",)"
       R"("tls":{"sni":"api.openai.com","verifyHostname":true}})"},
  };
  return *cases;
}

TEST(ParseValid, EveryKindAndMode) {
  for (const auto& c : Cases()) {
    SCOPED_TRACE(c.label);
    auto r = ParseDocuments(c.yaml);
    ASSERT_TRUE(r.ok()) << r.error().message();
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ((*r)[0].kind, c.kind);
    EXPECT_EQ((*r)[0].spec.dump(), c.expected_spec);
  }
}

TEST(ParseValid, AllCasesAsOneMultiDocumentBatch) {
  std::string all;
  for (const auto& c : Cases()) all += "---\n" + c.yaml;
  auto r = ParseDocuments(all);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->size(), Cases().size());
}

TEST(ParseValid, SecretsAreSplitOut) {
  auto r = ParseDocuments(Cases()[9].yaml);  // aws
  ASSERT_TRUE(r.ok());
  const Resource& res = (*r)[0];
  ASSERT_EQ(res.secrets.size(), 2u);
  EXPECT_EQ(res.secrets.at("spec.secretAccessKey").view(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
  EXPECT_EQ(res.secrets.at("spec.sessionToken").view(), "tok");
  EXPECT_EQ(res.spec.dump().find("EXAMPLEKEY"), std::string::npos);
}

TEST(ParseValid, JsonObjectAndList) {
  std::string obj =
      R"({"apiVersion":"sigil.dev/v1alpha1","kind":"AccessPolicy","metadata":{"name":"p"},)"
      R"("spec":{"sources":["spiffe://e.org/a"],"destinations":["api"]}})";
  auto one = ParseDocuments(obj);
  ASSERT_TRUE(one.ok()) << one.error().message();
  auto list = ParseDocuments("[" + obj + "," +
                             std::string(obj).replace(obj.find("\"p\""), 3, "\"q\"") + "]");
  ASSERT_TRUE(list.ok()) << list.error().message();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[1].name, "q");
}

TEST(ParseValid, EmptyDocumentsAreSkippedButCounted) {
  std::string text = "---\n# nothing\n---\n" + Cases()[0].yaml + "---\n";
  auto r = ParseDocuments(text);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->size(), 1u);
  // A leading "---" opens document 1, so the bad document is number 2.
  auto bad = ParseDocuments("---\n---\n" + Doc("Nope", "x", "  a: 1\n"));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.error().message().starts_with("document 2: kind:")) << bad.error().message();
}

TEST(ParseValid, AnchorsAndAliases) {
  std::string text = Doc("WorkloadIdentity", "a",
                         "  spiffeId: spiffe://e.org/a\n  selectors: &sel [unix:uid:1]\n"
                         "  jwtAudiences: *sel\n");
  auto r = ParseDocuments(text);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ((*r)[0].spec["jwtAudiences"].dump(), R"(["unix:uid:1"])");
}

TEST(ParseValid, ResourceVersionAndParseResource) {
  nlohmann::json doc = {{"apiVersion", "sigil.dev/v1alpha1"},
                        {"kind", "Service"},
                        {"metadata", {{"name", "x"}, {"resourceVersion", 42}}},
                        {"spec", {{"mode", "deny"}, {"addresses", {"1.2.3.4:1"}}}}};
  auto r = ParseResource(doc);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->resource_version, 42u);
  doc["spec"]["mode"] = "bogus";
  auto bad = ParseResource(doc);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(),
            "Service/x: spec.mode: \"bogus\" is not one of mutual, simple, permissive, inject, "
            "passthrough, deny");
}

}  // namespace
}  // namespace sigil::resources

namespace sigil::resources {
namespace {

// Every YAML example in docs/resources.md (except the envelope sketch) must be valid.
TEST(ParseValid, DocumentationExamples) {
  std::ifstream in(std::string(SIGIL_DOCS_DIR) + "/resources.md");
  ASSERT_TRUE(in) << "docs/resources.md not found";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string md = ss.str();
  std::string batch;
  size_t examples = 0;
  for (size_t pos = 0; (pos = md.find("```yaml\n", pos)) != std::string::npos;) {
    size_t start = pos + 8;
    size_t end = md.find("```", start);
    ASSERT_NE(end, std::string::npos);
    std::string block = md.substr(start, end - start);
    pos = end + 3;
    if (block.find("# required") != std::string::npos) continue;  // the envelope sketch
    batch += "---\n" + block;
    ++examples;
  }
  auto r = ParseDocuments(batch);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_GE(r->size(), examples);
  EXPECT_GE(r->size(), 16u);
}

TEST(ParseValid, JsonIrregularitiesGetPositionedErrors) {
  auto dup = ParseDocuments("{\"kind\": \"Service\",\n \"kind\": \"Service\"}");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().message(), "document 1: line 2, column 2: duplicate key \"kind\"");
  auto trailing = ParseDocuments("[{\"a\": 1},]");
  ASSERT_FALSE(trailing.ok());
  auto bom = ParseDocuments(
      "\xef\xbb\xbf"
      "apiVersion: sigil.dev/v1alpha1\nkind: AccessPolicy\n"
      "metadata: {name: p}\nspec: {sources: ['spiffe://e.org/a'], "
      "destinations: [x]}\n");
  EXPECT_TRUE(bom.ok()) << bom.error().message();
}

}  // namespace
}  // namespace sigil::resources
