// Selectors, identity patterns, SPIFFE ID templates and the WorkloadIdentity typed view.
#include <gtest/gtest.h>

#include "resources/identity_pattern.h"
#include "resources/parse.h"
#include "resources/selector.h"
#include "resources/workload_identity.h"

namespace sigil::resources {
namespace {

TEST(Selector, CanonicalForms) {
  EXPECT_EQ(*CanonicalSelector("unix:uid:0"), "unix:uid:0");
  EXPECT_EQ(*CanonicalSelector("unix:uid:4294967294"), "unix:uid:4294967294");
  EXPECT_FALSE(CanonicalSelector("unix:uid:4294967295").ok());
  EXPECT_FALSE(CanonicalSelector("unix:uid:007").ok());
  EXPECT_EQ(*CanonicalSelector("unix:sha256:" + std::string(64, 'A')),
            "unix:sha256:" + std::string(64, 'a'));
  EXPECT_EQ(*CanonicalSelector("cgroup:/"), "cgroup:/");
  EXPECT_FALSE(CanonicalSelector("cgroup:/a/").ok());
  EXPECT_FALSE(CanonicalSelector("unix:path:/").ok());
  EXPECT_FALSE(CanonicalSelector("unix:user:-x").ok());
  EXPECT_FALSE(CanonicalSelector("container:abc").ok());
  EXPECT_FALSE(CanonicalSelector("unix:uid").ok());
  EXPECT_FALSE(CanonicalSelector("k8s:pod-label:novalue").ok());
  EXPECT_TRUE(CanonicalSelector("k8s:pod-label:app.kubernetes.io/name:web").ok());
  EXPECT_TRUE(CanonicalSelector("k8s:node-name:ip-10-0-0-1.ec2.internal").ok());
  EXPECT_EQ(CanonicalSelector("unix:shoe:1").error().message().substr(0, 46),
            "\"unix:shoe:1\": unknown selector type \"unix:sho");
}

TEST(Selector, MatchingIsAllOfWithCgroupSegmentPrefix) {
  std::vector<std::string> attested = {"unix:uid:1000", "unix:gid:1000",
                                       "cgroup:/system.slice/app.service/worker"};
  std::vector<std::string> want = {"unix:uid:1000", "cgroup:/system.slice/app.service"};
  EXPECT_TRUE(SelectorsMatch(want, attested));
  want.push_back("unix:path:/usr/bin/x");
  EXPECT_FALSE(SelectorsMatch(want, attested));
  EXPECT_FALSE(SelectorsMatch({}, attested));
  EXPECT_TRUE(SelectorSatisfiedBy("cgroup:/a/b", "cgroup:/a/b"));
  EXPECT_FALSE(SelectorSatisfiedBy("cgroup:/a/b", "cgroup:/a/bc"));
  EXPECT_FALSE(SelectorSatisfiedBy("cgroup:/a/b", "cgroup:/a"));
  EXPECT_TRUE(SelectorSatisfiedBy("cgroup:/", "cgroup:/x"));
  EXPECT_FALSE(SelectorSatisfiedBy("unix:uid:1", "unix:uid:10"));
}

TEST(IdentityPattern, ExactAndPrefix) {
  auto id = [](std::string_view s) { return *core::SpiffeId::Parse(s); };
  auto exact = *IdentityPattern::Parse("spiffe://e.org/a");
  EXPECT_TRUE(exact.Matches(id("spiffe://e.org/a")));
  EXPECT_FALSE(exact.Matches(id("spiffe://e.org/a/b")));
  auto prefix = *IdentityPattern::Parse("spiffe://e.org/a/*");
  EXPECT_TRUE(prefix.Matches(id("spiffe://e.org/a/b")));
  EXPECT_TRUE(prefix.Matches(id("spiffe://e.org/a/b/c")));
  EXPECT_FALSE(prefix.Matches(id("spiffe://e.org/a")));
  EXPECT_FALSE(prefix.Matches(id("spiffe://e.org/ab")));
  EXPECT_FALSE(prefix.Matches(id("spiffe://f.org/a/b")));
  auto td = *IdentityPattern::Parse("spiffe://e.org/*");
  EXPECT_TRUE(td.Matches(id("spiffe://e.org/x")));
  EXPECT_FALSE(IdentityPattern::Parse("spiffe://e.org").ok());
  EXPECT_FALSE(IdentityPattern::Parse("spiffe://e.org/*/x").ok());
  EXPECT_FALSE(IdentityPattern::Parse("spiffe://*").ok());
}

TEST(Template, ValidateAndRender) {
  EXPECT_TRUE(ValidateSpiffeIdTemplate("spiffe://e.org/n/{{node}}/u{{uid}}").ok());
  EXPECT_FALSE(ValidateSpiffeIdTemplate("spiffe://e.org/{{ node }}").ok());
  EXPECT_FALSE(ValidateSpiffeIdTemplate("spiffe://e.org/{node}").ok());
  EXPECT_FALSE(ValidateSpiffeIdTemplate("spiffe://e.org/a}").ok());
  EXPECT_FALSE(ValidateSpiffeIdTemplate("spiffe://e.org/sigil").ok());
  EXPECT_TRUE(ValidateSpiffeIdTemplate("spiffe://e.org/sigilx").ok());
  auto r = RenderSpiffeId("spiffe://e.org/n/{{node}}/u{{uid}}", {"web-1", 1000});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->str(), "spiffe://e.org/n/web-1/u1000");
  EXPECT_FALSE(RenderSpiffeId("spiffe://e.org/u{{uid}}", {"web-1", std::nullopt}).ok());
  EXPECT_FALSE(RenderSpiffeId("spiffe://e.org/n/{{node}}", {"", 1}).ok());
  // A node name that is not a valid path segment cannot smuggle in extra segments.
  EXPECT_FALSE(RenderSpiffeId("spiffe://e.org/n/{{node}}", {"..", 1}).ok());
  EXPECT_FALSE(RenderSpiffeId("spiffe://e.org/n{{node}}", {"/../sigil/node/x", 1}).ok());
}

TEST(WorkloadIdentitySpec, FromParsedResource) {
  auto parsed = ParseDocuments(
      "apiVersion: sigil.dev/v1alpha1\nkind: WorkloadIdentity\nmetadata: {name: w}\n"
      "spec:\n  spiffeId: spiffe://e.org/w/{{node}}\n"
      "  selectors: [unix:uid:1000, 'cgroup:/sigil/run']\n  ttl: 10m\n  nodes: [db-1, 'web-*']\n");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  auto wi = WorkloadIdentitySpec::FromResource((*parsed)[0]);
  ASSERT_TRUE(wi.ok()) << wi.error().message();
  EXPECT_EQ(wi->ttl, Seconds(600));
  std::vector<std::string> attested = {"unix:uid:1000", "cgroup:/sigil/run/abc"};
  EXPECT_TRUE(wi->Matches(attested));
  EXPECT_TRUE(wi->AllowsNode("web-7"));
  EXPECT_TRUE(wi->AllowsNode("db-1"));
  EXPECT_FALSE(wi->AllowsNode("db-2"));
  EXPECT_EQ(wi->Render({"web-7", 1000})->str(), "spiffe://e.org/w/web-7");
}

}  // namespace
}  // namespace sigil::resources
