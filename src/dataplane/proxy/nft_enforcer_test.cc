// NftEnforcer: the ruleset text (loaded for real by tests/dataplane/test_dataplane.py, which
// checks that plaintext from another namespace is dropped) and its input filtering.
#include "dataplane/proxy/nft_enforcer.h"

#include <gtest/gtest.h>

namespace sigil::dataplane {
namespace {

TEST(NftEnforcer, RulesetReplacesTheTableAtomically) {
  const std::string text =
      NftEnforcer::Ruleset({{"10.0.0.2", false, 8080, "web"}, {"2001:db8::/32", true, 443, "v6"}});
  EXPECT_EQ(text.find("table inet sigil_enforce\ndelete table inet sigil_enforce\n"), 0u);
  EXPECT_NE(text.find("type filter hook input priority filter; policy accept;"), std::string::npos);
  EXPECT_NE(text.find("iifname != \"lo\" ip daddr 10.0.0.2 tcp dport 8080 counter drop comment "
                      "\"web\""),
            std::string::npos);
  EXPECT_NE(text.find("ip6 daddr 2001:db8::/32 tcp dport 443"), std::string::npos);
}

TEST(NftEnforcer, RefusesTextThatCouldChangeTheProgram) {
  const std::string text = NftEnforcer::Ruleset(
      {{"10.0.0.2; flush ruleset", false, 80, "x"}, {"10.0.0.3", false, 81, "a\"b"}});
  EXPECT_EQ(text.find("flush"), std::string::npos);
  EXPECT_EQ(text.find("dport 81"), std::string::npos);
}

TEST(NftEnforcer, MissingBinaryIsANamedError) {
  NftEnforcer e("/nonexistent/nft");
  auto r = e.Apply({{"10.0.0.2", false, 80, "web"}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("/nonexistent/nft"), std::string::npos);
}

}  // namespace
}  // namespace sigil::dataplane
