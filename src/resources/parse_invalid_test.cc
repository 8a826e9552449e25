// Bad input: every case names the document index and field path of the problem.
#include <gtest/gtest.h>

#include "resources/parse.h"

namespace sigil::resources {
namespace {

std::string Doc(std::string_view kind, std::string_view name, std::string_view spec) {
  return "apiVersion: sigil.dev/v1alpha1\nkind: " + std::string(kind) +
         "\nmetadata:\n  name: " + std::string(name) + "\nspec:\n" + std::string(spec);
}
const std::string kGoodWi =
    Doc("WorkloadIdentity", "good", "  spiffeId: spiffe://e.org/good\n  selectors: [unix:uid:1]\n");
std::string Wi(std::string_view spec) { return Doc("WorkloadIdentity", "w", spec); }
std::string Svc(std::string_view spec) { return Doc("Service", "api", spec); }
std::string Src(std::string_view spec) { return Doc("CredentialSource", "src", spec); }
std::string Bind(std::string_view spec) { return Doc("CredentialBinding", "b", spec); }
std::string Pol(std::string_view spec) { return Doc("AccessPolicy", "p", spec); }
const std::string kIds = "  identities: [spiffe://e.org/a]\n";

// Line numbers count from the start of the input: kGoodWi is lines 1-7, "---" line 8.
struct BadCase {
  const char* label;
  std::string second_document;  // placed after kGoodWi, so it is document 2
  std::string expected;         // must appear in the error message
};

const std::vector<BadCase>& Cases() {
  static const auto* cases = new std::vector<BadCase>{
      {"malformed yaml", "kind: [unclosed\n",
       "document 2: line 10, column 1: end of sequence flow not found"},
      {"tab indentation garbage", "a:\n\t- b\n", "document 2: line"},
      {"duplicate key", "kind: Service\nkind: Service\n",
       "document 2: line 10, column 1: duplicate key \"kind\""},
      {"not a mapping", "- a\n- b\n", "document 2: expected a mapping, got a list"},
      {"unknown kind", Doc("Gadget", "x", "  a: 1\n"), "document 2: kind: unknown kind \"Gadget\""},
      {"wrong apiVersion", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {}\n",
       "document 2 (Service/a): apiVersion: unsupported apiVersion \"v1\""},
      {"missing apiVersion",
       "kind: Service\nmetadata: {name: a}\nspec: {mode: deny, addresses: ['a.b:1']}\n",
       "document 2 (Service/a): apiVersion: required"},
      {"missing metadata.name",
       "apiVersion: sigil.dev/v1alpha1\nkind: Service\nmetadata: {}\nspec: {}\n",
       "document 2 (Service): metadata.name: required"},
      {"bad name syntax", Doc("Service", "Api_1", "  mode: deny\n  addresses: ['a.b:1']\n"),
       "document 2 (Service): metadata.name: \"Api_1\" must consist of lowercase"},
      {"name too long",
       Doc("Service", std::string(64, 'a'), "  mode: deny\n  addresses: ['a.b:1']\n"),
       "metadata.name: \"aaaa"},
      {"unknown top-level field",
       kGoodWi.substr(0, kGoodWi.find("spec:")) +
           "status: {}\nspec: {spiffeId: 'spiffe://e.org/x', selectors: ['unix:uid:1']}\n",
       "document 2 (WorkloadIdentity/good): status: unknown field"},
      {"unknown metadata field",
       Doc("Service", "a\n  labels: {}", "  mode: deny\n  addresses: ['a.b:1']\n"),
       "document 2 (Service/a): metadata.labels: unknown field"},
      {"unknown spec field",
       Wi("  spiffeId: spiffe://e.org/w\n  selectors: [unix:uid:1]\n  foo: 1\n"),
       "document 2 (WorkloadIdentity/w): spec.foo: unknown field (allowed: "},
      {"spec is a list", Wi("  - a\n"),
       "document 2 (WorkloadIdentity/w): spec: expected a mapping, got a list"},
      {"ttl is a list",
       Wi("  spiffeId: spiffe://e.org/w\n  selectors: [unix:uid:1]\n  ttl: [1h]\n"),
       "document 2 (WorkloadIdentity/w): spec.ttl: expected a string like \"1h\", got a list"},
      {"ttl too long", Wi("  spiffeId: spiffe://e.org/w\n  selectors: [unix:uid:1]\n  ttl: 48h\n"),
       "spec.ttl: \"48h\" is out of range (10s to 24h)"},
      {"ttl bad unit", Wi("  spiffeId: spiffe://e.org/w\n  selectors: [unix:uid:1]\n  ttl: 5x\n"),
       "spec.ttl: duration \"5x\": unknown unit"},
      {"invalid spiffe id", Wi("  spiffeId: spiffe://E.org/w\n  selectors: [unix:uid:1]\n"),
       "document 2 (WorkloadIdentity/w): spec.spiffeId: spiffe id: trust domain: must be "
       "lowercase"},
      {"spiffe id without path", Wi("  spiffeId: spiffe://e.org\n  selectors: [unix:uid:1]\n"),
       "spec.spiffeId: spiffe id: a workload identity needs a path"},
      {"reserved node path",
       Wi("  spiffeId: spiffe://e.org/sigil/node/n1\n  selectors: [unix:uid:1]\n"),
       "spec.spiffeId: spiffe id: paths under /sigil are reserved"},
      {"bad template", Wi("  spiffeId: spiffe://e.org/{{pod}}\n  selectors: [unix:uid:1]\n"),
       "spec.spiffeId: spiffe id template: unexpected '{'"},
      {"template in trust domain",
       Wi("  spiffeId: spiffe://{{node}}.org/a\n  selectors: [unix:uid:1]\n"),
       "spec.spiffeId: spiffe id template: placeholders are allowed only in the path"},
      {"no selectors", Wi("  spiffeId: spiffe://e.org/w\n  selectors: []\n"),
       "spec.selectors: needs at least 1 item"},
      {"selector unknown type",
       Wi("  spiffeId: spiffe://e.org/w\n  selectors: [unix:uid:1, docker:image:x]\n"),
       "spec.selectors[1]: \"docker:image:x\": unknown selector type \"docker\""},
      {"selector bad uid", Wi("  spiffeId: spiffe://e.org/w\n  selectors: ['unix:uid:-1']\n"),
       "spec.selectors[0]: \"unix:uid:-1\": unix:uid value must be a decimal number"},
      {"selector bad sha256",
       Wi("  spiffeId: spiffe://e.org/w\n  selectors: ['unix:sha256:abc']\n"),
       "spec.selectors[0]: \"unix:sha256:abc\": unix:sha256 value must be 64 hex digits"},
      {"selector relative path",
       Wi("  spiffeId: spiffe://e.org/w\n  selectors: ['unix:path:bin/sh']\n"),
       "spec.selectors[0]: \"unix:path:bin/sh\": unix:path value \"bin/sh\" must be an absolute "
       "path"},
      {"selector not normalised cgroup",
       Wi("  spiffeId: spiffe://e.org/w\n  selectors: ['cgroup:/a/../b']\n"),
       "spec.selectors[0]: \"cgroup:/a/../b\": cgroup value"},
      {"selector no colon", Wi("  spiffeId: spiffe://e.org/w\n  selectors: [root]\n"),
       "spec.selectors[0]: \"root\" is not a selector"},
      {"duplicate selector",
       Wi("  spiffeId: spiffe://e.org/w\n  selectors: [unix:uid:1, unix:uid:1]\n"),
       "spec.selectors[1]: \"unix:uid:1\" repeats item [0]"},
      {"selector item wrong type",
       Wi("  spiffeId: spiffe://e.org/w\n  selectors: [unix:uid:1, {a: b}]\n"),
       "spec.selectors[1]: expected a selector string like \"unix:uid:1000\", got a mapping"},
      {"bad dns name",
       Wi("  spiffeId: spiffe://e.org/w\n  selectors: [unix:uid:1]\n  dnsNames: [a..b]\n"),
       "spec.dnsNames[0]: \"a..b\" has an empty label"},
      {"duplicate names in batch", kGoodWi,
       "document 2 (WorkloadIdentity/good): metadata.name: duplicate WorkloadIdentity \"good\" "
       "(also in document 1)"},
      {"service missing mode", Svc("  addresses: ['a.b:1']\n"),
       "document 2 (Service/api): spec.mode: required"},
      {"service bad mode", Svc("  mode: mtls\n  addresses: ['a.b:1']\n"),
       "spec.mode: \"mtls\" is not one of mutual"},
      {"address needs a port", Svc("  mode: deny\n  addresses: ['a.b:1', '10.0.0.1']\n"),
       "document 2 (Service/api): spec.addresses[1]: \"10.0.0.1\" needs a port"},
      {"port out of range", Svc("  mode: deny\n  addresses: ['a.b:70000']\n"),
       "spec.addresses[0]: \"a.b:70000\": port 70000 is out of range (1-65535)"},
      {"port zero", Svc("  mode: deny\n  addresses: ['a.b:0']\n"),
       "spec.addresses[0]: \"a.b:0\": port 0 is out of range"},
      {"bad cidr length", Svc("  mode: deny\n  addresses: ['10.0.0.0/33:80']\n"),
       "spec.addresses[0]: \"10.0.0.0/33:80\": prefix length \"33\" is out of range (0-32)"},
      {"cidr host bits", Svc("  mode: deny\n  addresses: ['10.0.0.1/8:80']\n"),
       "spec.addresses[0]: \"10.0.0.1/8:80\": \"10.0.0.1/8\" has host bits set (did you mean "
       "10.0.0.0/8?)"},
      {"bad ipv4", Svc("  mode: deny\n  addresses: ['10.0.0.300:80']\n"),
       "spec.addresses[0]: \"10.0.0.300:80\": \"10.0.0.300\" is not a valid IPv4"},
      {"ipv6 without brackets", Svc("  mode: deny\n  addresses: ['2001:db8::1:443']\n"),
       "spec.addresses[0]: \"2001:db8::1:443\": an IPv6 address needs brackets"},
      {"mutual without identity", Svc("  mode: mutual\n  addresses: ['a.b:1']\n"),
       "spec.identity: required"},
      {"identity not allowed for deny",
       Svc("  mode: deny\n  addresses: ['a.b:1']\n  identity: spiffe://e.org/a\n"),
       "spec.identity: not allowed when mode is \"deny\""},
      {"tls not allowed for mutual",
       Svc("  mode: mutual\n  addresses: ['a.b:1']\n  identity: spiffe://e.org/a\n  tls: {}\n"),
       "spec.tls: not allowed when mode is \"mutual\""},
      {"inbound port wrong type",
       Svc("  mode: mutual\n  addresses: ['a.b:1']\n  identity: spiffe://e.org/a\n  inboundPort: "
           "'15008'\n"),
       "spec.inboundPort: expected a whole number, got a string"},
      {"bad forwarding",
       Svc("  mode: mutual\n  addresses: ['a.b:1']\n  identity: spiffe://e.org/a\n  "
           "peerIdentityForwarding: xff\n"),
       "spec.peerIdentityForwarding: \"xff\" is not one of none, proxy-v2, xfcc"},
      {"bad ca bundle",
       Svc("  mode: simple\n  addresses: ['a.b:1']\n  tls: {caBundle: 'not pem'}\n"),
       "spec.tls.caBundle: "},
      {"unknown tls field",
       Svc("  mode: inject\n  addresses: ['a.b:1']\n  tls: {insecure: true}\n"),
       "spec.tls.insecure: unknown field"},
      {"terminate tls without a name",
       Svc("  mode: inject\n  addresses: ['192.0.2.1:443']\n  inject: {terminateTls: true}\n"),
       "spec.inject.terminateTls: needs a DNS name"},
      {"terminate tls wrong type",
       Svc("  mode: inject\n  addresses: ['a.b:443']\n  inject: {terminateTls: 'yes'}\n"),
       "spec.inject.terminateTls: expected true or false, got a string"},
      {"unknown inject field",
       Svc("  mode: inject\n  addresses: ['a.b:443']\n  inject: {mitm: true}\n"),
       "spec.inject.mitm: unknown field"},
      {"inject not allowed for simple",
       Svc("  mode: simple\n  addresses: ['a.b:443']\n  inject: {terminateTls: true}\n"),
       "spec.inject: not allowed when mode is \"simple\""},
      {"source bad type", Src("  type: vault\n"),
       "document 2 (CredentialSource/src): spec.type: \"vault\" is not one of"},
      {"static missing value", Src("  type: static\n"), "spec.value: required"},
      {"static with aws field", Src("  type: static\n  value: x\n  region: eu-west-1\n"),
       "spec.region: not allowed when type is \"static\""},
      {"secret is redaction marker", Src("  type: static\n  value: '[redacted]'\n"),
       "spec.value: holds the redaction marker"},
      {"aws missing secret",
       Src("  type: aws\n  accessKeyId: AKIA1234567890123456\n  region: us-east-1\n"),
       "spec.secretAccessKey: required"},
      {"oauth2 http token url",
       Src("  type: oauth2-client-credentials\n  tokenUrl: http://idp/token\n  clientId: a\n  "
           "clientSecret: b\n"),
       "spec.tokenUrl: \"http://idp/token\" must use https://"},
      {"jwt ttl wrong type", Src("  type: jwt\n  audience: a\n  ttl: 300\n"),
       "spec.ttl: expected a string like \"1h\", got a number"},
      {"header without secret",
       Bind("  source: k\n  service: s\n" + kIds +
            "  delivery: {header: {name: Authorization, template: 'Bearer xyz'}}\n"),
       "document 2 (CredentialBinding/b): spec.delivery.header.template: \"Bearer xyz\" must "
       "contain the placeholder {{secret}} exactly once"},
      {"header template twice",
       Bind("  source: k\n  service: s\n" + kIds +
            "  delivery: {header: {name: A, template: '{{secret}}{{secret}}'}}\n"),
       "spec.delivery.header.template: \"{{secret}}{{secret}}\" contains {{secret}} more than "
       "once"},
      {"header template CRLF",
       Bind("  source: k\n  service: s\n" + kIds +
            "  delivery: {header: {name: A, template: \"x {{secret}}\\r\\nHost: evil\"}}\n"),
       "spec.delivery.header.template: must not contain CR or LF"},
      {"header name not a token",
       Bind("  source: k\n  service: s\n" + kIds + "  delivery: {header: {name: 'X Api Key'}}\n"),
       "spec.delivery.header.name: \"X Api Key\" is not a valid HTTP header name"},
      {"header name framing",
       Bind("  source: k\n  service: s\n" + kIds +
            "  delivery: {header: {name: Content-Length}}\n"),
       "spec.delivery.header.name: \"Content-Length\" controls HTTP framing"},
      {"two delivery methods",
       Bind("  source: k\n  service: s\n" + kIds +
            "  delivery: {header: {name: A}, sigv4: {region: a, service: b}}\n"),
       "spec.delivery: needs exactly one of header, sigv4, file (found 2)"},
      {"header needs service", Bind("  source: k\n" + kIds + "  delivery: {header: {name: A}}\n"),
       "spec.service: required"},
      {"file with slash", Bind("  source: k\n" + kIds + "  delivery: {file: {fileName: ../x}}\n"),
       "spec.delivery.file.fileName: \"../x\" is not a plain file name"},
      {"file bad format",
       Bind("  source: k\n" + kIds + "  delivery: {file: {fileName: x, format: json}}\n"),
       "spec.delivery.file.format: \"json\" is not one of raw, env, aws-credentials, svid-pem"},
      {"bad identity pattern",
       Bind("  source: k\n  service: s\n  identities: ['spiffe://e.org/a*']\n  delivery: {header: "
            "{name: A}}\n"),
       "spec.identities[0]: \"spiffe://e.org/a*\": '*' is allowed only as the whole last segment"},
      {"policy bad source", Pol("  sources: ['https://e.org/a']\n  destinations: [api]\n"),
       "document 2 (AccessPolicy/p): spec.sources[0]: \"https://e.org/a\": spiffe id: scheme must "
       "be \"spiffe://\""},
      {"policy bad destination", Pol("  sources: ['spiffe://e.org/a']\n  destinations: [API]\n"),
       "spec.destinations[0]: \"API\" must consist of lowercase"},
      {"policy bad action",
       Pol("  sources: ['spiffe://e.org/a']\n  destinations: [api]\n  action: maybe\n"),
       "spec.action: \"maybe\" is not one of allow, deny"},
      {"unsupported tag", "apiVersion: !!binary aGVsbG8=\n",
       "document 2: line 9, column 13: unsupported tag \"tag:yaml.org,2002:binary\""},
      {"control character", "kind: \x01\n", "input: line 9, column 7: control character 0x01"},
      {"invalid utf-8", "kind: \xff\n", "input: line 9, column 7: invalid UTF-8"},
  };
  return *cases;
}

TEST(ParseInvalid, EachCaseNamesDocumentAndField) {
  ASSERT_GE(Cases().size(), 40u);
  for (const auto& c : Cases()) {
    SCOPED_TRACE(c.label);
    auto r = ParseDocuments(kGoodWi + "---\n" + c.second_document);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find(c.expected), std::string::npos)
        << "message: " << r.error().message() << "\nexpected: " << c.expected;
  }
}

TEST(ParseInvalid, AllErrorsAcrossDocumentsAreReported) {
  auto r = ParseDocumentsDetailed(Svc("  mode: deny\n  addresses: ['a.b']\n") + "---\n" +
                                  Wi("  spiffeId: x\n  selectors: [y]\n  z: 1\n"));
  ASSERT_EQ(r.diagnostics.size(), 4u);
  EXPECT_EQ(r.diagnostics[0].ToString(),
            "document 1 (Service/api): spec.addresses[0]: \"a.b\" needs a port");
  EXPECT_EQ(r.diagnostics[1].path, "spec.spiffeId");
  EXPECT_EQ(r.diagnostics[2].path, "spec.selectors[0]");
  EXPECT_EQ(r.diagnostics[3].ToString(),
            "document 2 (WorkloadIdentity/w): spec.z: unknown field (allowed: dnsNames, "
            "jwtAudiences, nodes, selectors, spiffeId, ttl)");
  EXPECT_TRUE(r.resources.empty());
}

TEST(ParseInvalid, ErrorCapAndLimits) {
  std::string many;
  for (int i = 0; i < 80; ++i) many += "---\n" + Wi("  x: 1\n");
  auto r = ParseDocumentsDetailed(many);
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(r.diagnostics.size(), 51u);
  EXPECT_EQ(r.diagnostics.back().message, "too many errors; stopped after 50");

  ParseOptions small;
  small.max_input_bytes = 10;
  auto big = ParseDocuments(kGoodWi, small);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code(), ErrorCode::kResourceExhausted);

  auto empty = ParseDocuments("# just a comment\n");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().message(), "input: no documents");

  auto deep = ParseDocuments(std::string(5000, '[') + std::string(5000, ']'));
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.error().message().find("nested deeper than 32"), std::string::npos)
      << deep.error().message();

  // Billion laughs: aliases may not expand past the node budget.
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'h'; ++c) {
    bomb += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) bomb += std::string(i ? ", *" : "*") + static_cast<char>(c - 1);
    bomb += "]\n";
  }
  auto laughs = ParseDocuments(bomb);
  ASSERT_FALSE(laughs.ok());
  EXPECT_NE(laughs.error().message().find("more than 10000 nodes"), std::string::npos)
      << laughs.error().message();
}

TEST(ParseInvalid, SecretsNeverAppearInMessages) {
  auto r =
      ParseDocuments(Src("  type: aws\n  accessKeyId: AKIA1234567890123456\n"
                         "  secretAccessKey: [TOPSECRET]\n  sessionToken: ''\n"
                         "  region: us-east-1\n  bogus: 1\n"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message().find("TOPSECRET"), std::string::npos) << r.error().message();
  EXPECT_NE(
      r.error().message().find("spec.secretAccessKey: expected a string (the secret), got a list"),
      std::string::npos);
  EXPECT_NE(r.error().message().find("spec.sessionToken: must not be empty"), std::string::npos);
}

}  // namespace
}  // namespace sigil::resources
