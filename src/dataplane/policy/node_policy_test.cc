// NodePolicy tests on canonical specs produced by the real resource parser (the same bytes the
// server syncs to agents).
#include "dataplane/policy/node_policy.h"

#include <gtest/gtest.h>

#include "resources/parse.h"

namespace sigil::dataplane {
namespace {

struct Compiled {
  NodePolicy::Objects services, policies;
};

Compiled FromYaml(const std::string& yaml) {
  auto parsed = resources::ParseDocuments(yaml);
  EXPECT_TRUE(parsed.ok()) << parsed.error().ToString();
  Compiled c;
  if (!parsed.ok()) return c;
  for (const auto& r : *parsed) {
    auto& into = r.kind == resources::Kind::kService ? c.services : c.policies;
    into.emplace_back(r.name, r.spec.dump());
  }
  return c;
}

Destination Dst(const char* text) {
  auto d = Destination::Parse(text);
  EXPECT_TRUE(d.ok()) << text;
  return d.ok() ? *d : Destination{};
}

core::SpiffeId Id(const char* text) { return *core::SpiffeId::Parse(text); }

constexpr const char* kYaml = R"(
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: payments}
spec:
  mode: mutual
  addresses: ["10.20.0.0/16:8443", "payments.internal:8443"]
  identity: spiffe://example.org/payments/api
  peerIdentityForwarding: xfcc
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: payments-canary}
spec:
  mode: mutual
  addresses: ["10.20.0.9:8443"]
  identity: spiffe://example.org/payments/canary
  inboundPort: 15009
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: metadata}
spec: {mode: deny, addresses: ["169.254.169.254:80"]}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: partner}
spec:
  mode: simple
  addresses: ["192.0.2.10:80"]
  tls: {sni: api.partner.example, port: 443}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: v6}
spec: {mode: passthrough, addresses: ["[2001:db8::/32]:53"]}
---
apiVersion: sigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web-to-payments}
spec:
  sources: ["spiffe://example.org/web/*"]
  destinations: [payments, payments-canary]
---
apiVersion: sigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: no-legacy-web}
spec:
  sources: [spiffe://example.org/web/legacy]
  destinations: [payments]
  action: deny
)";

TEST(NodePolicy, MatchesMostSpecificAddress) {
  auto c = FromYaml(kYaml);
  auto p = NodePolicy::Build(c.services, c.policies, {});
  EXPECT_TRUE(p->errors().empty()) << p->errors().front();
  EXPECT_EQ(p->service_count(), 5u);

  const CompiledService* s = p->Match(Dst("10.20.3.4:8443"));
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->name, "payments");
  EXPECT_EQ(s->mode, ServiceMode::kMutual);
  EXPECT_EQ(s->identity->str(), "spiffe://example.org/payments/api");
  EXPECT_EQ(s->forwarding, PeerForwarding::kXfcc);
  EXPECT_EQ(s->inbound_port, kDefaultInboundPort);

  s = p->Match(Dst("10.20.0.9:8443"));  // /32 beats /16
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->name, "payments-canary");
  EXPECT_EQ(s->inbound_port, 15009);

  EXPECT_EQ(p->Match(Dst("10.21.0.1:8443")), nullptr);  // outside the prefix
  EXPECT_EQ(p->Match(Dst("10.20.0.1:8444")), nullptr);  // other port
  EXPECT_EQ(p->Match(Dst("169.254.169.254:80"))->mode, ServiceMode::kDeny);

  const CompiledService* partner = p->Match(Dst("192.0.2.10:80"));
  ASSERT_NE(partner, nullptr);
  EXPECT_EQ(partner->tls.sni, "api.partner.example");
  EXPECT_EQ(partner->tls.port, 443);
  EXPECT_TRUE(partner->tls.verify_hostname);

  EXPECT_EQ(p->Match(Dst("[2001:db8:1::5]:53"))->name, "v6");
  EXPECT_EQ(p->Match(Dst("[2001:db9::5]:53")), nullptr);
  EXPECT_EQ(p->default_mode(), ServiceMode::kPassthrough);
}

TEST(NodePolicy, InboundMatchIgnoresOutboundOnlyModes) {
  auto c = FromYaml(kYaml);
  auto p = NodePolicy::Build(c.services, c.policies, {});
  EXPECT_EQ(p->MatchInbound(Dst("10.20.1.1:8443"))->name, "payments");
  EXPECT_EQ(p->MatchInbound(Dst("169.254.169.254:80")), nullptr);
  EXPECT_EQ(p->MatchInbound(Dst("192.0.2.10:80")), nullptr);
}

TEST(NodePolicy, InjectTlsTermination) {
  auto c = FromYaml(R"(
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: openai}
spec:
  mode: inject
  addresses: ["192.0.2.20:443", "api.openai.example:443", "*.files.example:443"]
  tls: {sni: api.openai.example}
  inject: {terminateTls: true}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: plain}
spec:
  mode: inject
  addresses: ["192.0.2.21:80", "plain.example:80"]
)");
  auto p = NodePolicy::Build(c.services, c.policies, {});
  ASSERT_TRUE(p->errors().empty()) << p->errors().front();
  const CompiledService* s = p->Match(Dst("192.0.2.20:443"));
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->terminate_tls);
  EXPECT_EQ(TlsServerNames(*s),
            (std::vector<std::string>{"*.files.example", "api.openai.example"}));
  const CompiledService* plain = p->Match(Dst("192.0.2.21:80"));
  ASSERT_NE(plain, nullptr);
  EXPECT_FALSE(plain->terminate_tls);
}

TEST(NodePolicy, AuthorizeDenyWinsThenAllowThenDefaultDeny) {
  auto c = FromYaml(kYaml);
  auto p = NodePolicy::Build(c.services, c.policies, {});
  const CompiledService& payments = *p->Find("payments");
  const CompiledService& canary = *p->Find("payments-canary");

  auto d = p->Authorize(Id("spiffe://example.org/web/frontend"), payments);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.policy, "web-to-payments");

  d = p->Authorize(Id("spiffe://example.org/web/legacy"), payments);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.policy, "no-legacy-web");
  EXPECT_TRUE(p->Authorize(Id("spiffe://example.org/web/legacy"), canary).allowed);

  d = p->Authorize(Id("spiffe://example.org/batch/job"), payments);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.policy, "");
  EXPECT_NE(d.reason.find("no AccessPolicy allows spiffe://example.org/batch/job"),
            std::string::npos);
  // Another trust domain never matches a pattern of this one.
  EXPECT_FALSE(p->Authorize(Id("spiffe://other.org/web/frontend"), payments).allowed);
}

TEST(NodePolicy, BadObjectsAreNamedAndSkipped) {
  NodePolicy::Objects services = {
      {"good", R"({"mode":"passthrough","addresses":["10.0.0.1:80"]})"},
      {"badmode", R"({"mode":"teleport","addresses":["10.0.0.2:80"]})"},
      {"badaddr", R"({"mode":"deny","addresses":["10.0.0.2"]})"},
      {"noid", R"({"mode":"mutual","addresses":["10.0.0.3:80"]})"},
      {"notjson", "{"},
  };
  NodePolicy::Objects policies = {
      {"p1", R"({"sources":["spiffe://x/*"],"destinations":["good"],"action":"maybe"})"},
      {"p2", R"({"sources":["not-an-id"],"destinations":["good"]})"},
  };
  auto p = NodePolicy::Build(services, policies, {.default_mode = ServiceMode::kDeny});
  EXPECT_EQ(p->service_count(), 1u);
  ASSERT_EQ(p->errors().size(), 6u);
  EXPECT_NE(p->errors()[0].find("Service/badmode: mode \"teleport\""), std::string::npos);
  EXPECT_NE(p->errors()[1].find("Service/badaddr: spec.addresses[0]"), std::string::npos);
  EXPECT_NE(p->errors()[2].find("Service/noid: spec.identity"), std::string::npos);
  EXPECT_NE(p->errors()[4].find("AccessPolicy/p1: spec.action"), std::string::npos);
  EXPECT_NE(p->errors()[5].find("AccessPolicy/p2: spec.sources"), std::string::npos);
  EXPECT_NE(p->Match(Dst("10.0.0.1:80")), nullptr);
  EXPECT_EQ(p->default_mode(), ServiceMode::kDeny);
}

}  // namespace
}  // namespace sigil::dataplane
