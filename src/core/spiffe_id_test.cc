#include "core/spiffe_id.h"

#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <vector>

namespace sigil::core {
namespace {

struct IdCase {
  std::string name;
  std::string input;
  // Valid: the expected trust domain and path. Invalid: a phrase the error must contain.
  bool valid;
  std::string td_or_error;
  std::string path;
};

IdCase Ok(std::string name, std::string input, std::string td, std::string path = "") {
  return {std::move(name), std::move(input), true, std::move(td), std::move(path)};
}
IdCase Bad(std::string name, std::string input, std::string error) {
  return {std::move(name), std::move(input), false, std::move(error), ""};
}

std::string Repeat(std::string_view s, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

std::vector<IdCase> IdCases() {
  const std::string td255 = std::string(255, 'a');
  // "spiffe://a" is 10 bytes; pad the path so the whole ID is exactly 2048 bytes.
  const std::string path2038 = "/" + std::string(2037, 'p');
  return {
      // Valid IDs.
      Ok("trust domain only", "spiffe://example.org", "example.org"),
      Ok("simple path", "spiffe://example.org/workload", "example.org", "/workload"),
      Ok("nested path", "spiffe://example.org/ns/prod/sa/api", "example.org", "/ns/prod/sa/api"),
      Ok("td charset", "spiffe://a-b_c.d0-9", "a-b_c.d0-9"),
      Ok("path charset", "spiffe://td/aZ09.-_", "td", "/aZ09.-_"),
      Ok("uppercase path kept", "spiffe://td/Upper/CASE", "td", "/Upper/CASE"),
      Ok("dots inside a segment", "spiffe://td/a..b/.c/d.", "td", "/a..b/.c/d."),
      Ok("triple dot segment", "spiffe://td/...", "td", "/..."),
      Ok("ipv4 trust domain", "spiffe://192.168.0.1/x", "192.168.0.1", "/x"),
      Ok("255-byte trust domain", "spiffe://" + td255, td255),
      Ok("2048-byte id", "spiffe://a" + path2038, "a", path2038),
      Ok("single char td", "spiffe://x", "x"),
      Ok("td starting with dot", "spiffe://.example", ".example"),
      // Scheme.
      Bad("empty", "", "empty"),
      Bad("no scheme", "example.org/workload", "scheme"),
      Bad("https scheme", "https://example.org/workload", "scheme"),
      Bad("uppercase scheme", "SPIFFE://example.org", "scheme"),
      Bad("mixed-case scheme", "Spiffe://example.org", "scheme"),
      Bad("scheme without slashes", "spiffe:example.org", "scheme"),
      Bad("scheme with one slash", "spiffe:/example.org", "scheme"),
      Bad("leading space", " spiffe://example.org", "scheme"),
      // Trust domain.
      Bad("empty trust domain", "spiffe://", "trust domain is missing"),
      Bad("empty trust domain with path", "spiffe:///path", "trust domain is missing"),
      Bad("uppercase trust domain", "spiffe://Example.org", "lowercase"),
      Bad("all-caps trust domain", "spiffe://EXAMPLE.ORG/x", "lowercase"),
      Bad("port", "spiffe://example.org:8080/w", "port"),
      Bad("empty port", "spiffe://example.org:/w", "port"),
      Bad("port only", "spiffe://:443", "port"),
      Bad("userinfo", "spiffe://user@example.org/w", "userinfo"),
      Bad("userinfo with password", "spiffe://user:pw@example.org", "port"),
      Bad("query on trust domain", "spiffe://example.org?a=b", "query"),
      Bad("fragment on trust domain", "spiffe://example.org#frag", "fragment"),
      Bad("percent-encoded td", "spiffe://ex%61mple.org", "percent-encoding"),
      Bad("ipv6 trust domain", "spiffe://[::1]/w", "character '['"),
      Bad("ipv6 with port", "spiffe://[2001:db8::1]:8443", "'['"),
      Bad("space in td", "spiffe://exa mple.org", "byte 32"),
      Bad("non-ascii td", "spiffe://ex\xc3\xa4mple.org", "byte 195"),
      Bad("plus in td", "spiffe://a+b.org", "character '+'"),
      Bad("256-byte trust domain", "spiffe://" + std::string(256, 'a'), "255"),
      Bad("backslash td", "spiffe://example.org\\w", "character '\\'"),
      // Path.
      Bad("trailing slash", "spiffe://example.org/", "trailing '/'"),
      Bad("trailing slash after segment", "spiffe://example.org/a/", "trailing '/'"),
      Bad("empty segment", "spiffe://example.org//a", "empty segment"),
      Bad("empty segment in middle", "spiffe://example.org/a//b", "empty segment"),
      Bad("dot segment", "spiffe://example.org/./a", "'.' and '..'"),
      Bad("dot-dot segment", "spiffe://example.org/a/..", "'.' and '..'"),
      Bad("dot-dot traversal", "spiffe://example.org/../etc", "'.' and '..'"),
      Bad("lone dot", "spiffe://example.org/.", "'.' and '..'"),
      Bad("query on path", "spiffe://example.org/w?x=1", "query"),
      Bad("fragment on path", "spiffe://example.org/w#f", "fragment"),
      Bad("percent-encoded path", "spiffe://example.org/w%2Fx", "percent-encoding"),
      Bad("percent-encoded dot", "spiffe://example.org/%2e", "percent-encoding"),
      Bad("colon in path", "spiffe://example.org/a:b", "port"),
      Bad("at in path", "spiffe://example.org/a@b", "userinfo"),
      Bad("space in path", "spiffe://example.org/a b", "byte 32"),
      Bad("tab in path", "spiffe://example.org/a\tb", "byte 9"),
      Bad("nul in path", std::string("spiffe://example.org/a\0b", 24), "byte 0"),
      Bad("non-ascii path", "spiffe://example.org/caf\xc3\xa9", "byte 195"),
      Bad("plus in path", "spiffe://example.org/a+b", "character '+'"),
      Bad("tilde in path", "spiffe://example.org/~a", "character '~'"),
      Bad("2049-byte id", "spiffe://a" + path2038 + "p", "2048"),
      Bad("long id with many segments", "spiffe://a" + Repeat("/abcdefgh", 228), "2048"),
  };
}

class SpiffeIdParseTest : public ::testing::TestWithParam<IdCase> {};

TEST_P(SpiffeIdParseTest, Parse) {
  const IdCase& c = GetParam();
  auto id = SpiffeId::Parse(c.input);
  if (c.valid) {
    ASSERT_TRUE(id.ok()) << id.error().ToString();
    EXPECT_EQ(id->trust_domain().name(), c.td_or_error);
    EXPECT_EQ(id->path(), c.path);
    EXPECT_EQ(id->str(), c.input);
    EXPECT_EQ(id->IsTrustDomainId(), c.path.empty());
    // Re-parsing the canonical form is stable.
    auto again = SpiffeId::Parse(id->str());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *id);
  } else {
    ASSERT_FALSE(id.ok()) << c.input << " was accepted";
    EXPECT_EQ(id.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(id.error().message().find(c.td_or_error), std::string::npos)
        << "error \"" << id.error().message() << "\" does not mention \"" << c.td_or_error << "\"";
  }
}

INSTANTIATE_TEST_SUITE_P(SpiffeIdTable, SpiffeIdParseTest, ::testing::ValuesIn(IdCases()),
                         [](const ::testing::TestParamInfo<IdCase>& param_info) {
                           std::string name;
                           for (char ch : param_info.param.name) {
                             name += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           }
                           return name;
                         });

TEST(SpiffeIdTest, TableIsLargeEnough) { EXPECT_GE(IdCases().size(), 50u); }

TEST(SpiffeIdTest, PathIsCaseSensitive) {
  auto lower = SpiffeId::Parse("spiffe://example.org/workload").value();
  auto upper = SpiffeId::Parse("spiffe://example.org/Workload").value();
  EXPECT_NE(lower, upper);
  EXPECT_TRUE(lower.IsMemberOf(upper.trust_domain()));
}

TEST(SpiffeIdTest, FromPath) {
  auto td = TrustDomain::Parse("example.org").value();
  auto id = SpiffeId::FromPath(td, "/ns/prod");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->str(), "spiffe://example.org/ns/prod");
  EXPECT_TRUE(id->IsMemberOf(td));

  auto root = SpiffeId::FromPath(td, "");
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(root->IsTrustDomainId());
  EXPECT_EQ(root->str(), "spiffe://example.org");

  struct Case {
    std::string path;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{{"ns", "must start with '/'"},
                                         {"/", "trailing '/'"},
                                         {"/a/", "trailing '/'"},
                                         {"//a", "empty segment"},
                                         {"/a/../b", "'.' and '..'"},
                                         {"/%41", "percent-encoding"},
                                         {"/a?b", "query"},
                                         {"/a#b", "fragment"},
                                         {"/" + std::string(2048, 'x'), "2048"}}) {
    SCOPED_TRACE(c.path.substr(0, 20));
    auto bad = SpiffeId::FromPath(td, c.path);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find(c.error), std::string::npos) << bad.error().message();
  }
  // Exactly at the limit: "spiffe://example.org" is 20 bytes.
  EXPECT_TRUE(SpiffeId::FromPath(td, "/" + std::string(2027, 'x')).ok());
  EXPECT_FALSE(SpiffeId::FromPath(td, "/" + std::string(2028, 'x')).ok());
}

TEST(TrustDomainTest, ParseBothForms) {
  auto bare = TrustDomain::Parse("example.org");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->name(), "example.org");
  EXPECT_EQ(bare->IdString(), "spiffe://example.org");
  auto as_id = TrustDomain::Parse("spiffe://example.org");
  ASSERT_TRUE(as_id.ok());
  EXPECT_EQ(*as_id, *bare);
}

TEST(TrustDomainTest, RejectsInvalid) {
  struct Case {
    std::string input;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {"", "must not be empty"},
           {"Example.org", "lowercase"},
           {"example.org:80", "port"},
           {"user@example.org", "userinfo"},
           {"example.org/path", "character '/'"},
           {"spiffe://example.org/path", "has a path"},
           {"https://example.org", "scheme"},
           {"spiffe://", "trust domain is missing"},
           {"spiffe://EXAMPLE.org", "lowercase"},
           {"ex%41mple.org", "percent-encoding"},
           {"[::1]", "character '['"},
           {std::string(256, 'a'), "255"},
       }) {
    SCOPED_TRACE(c.input.substr(0, 40));
    auto td = TrustDomain::Parse(c.input);
    ASSERT_FALSE(td.ok());
    EXPECT_EQ(td.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(td.error().message().find(c.error), std::string::npos) << td.error().message();
  }
  EXPECT_TRUE(TrustDomain::Parse(std::string(255, 'a')).ok());
  EXPECT_TRUE(TrustDomain::Parse("10.0.0.1").ok());
}

TEST(TrustDomainTest, Ordering) {
  auto a = TrustDomain::Parse("a.org").value();
  auto b = TrustDomain::Parse("b.org").value();
  EXPECT_LT(a, b);
  EXPECT_EQ(a, TrustDomain::Parse("spiffe://a.org").value());
}

}  // namespace
}  // namespace sigil::core
