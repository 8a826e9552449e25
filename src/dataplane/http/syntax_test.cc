#include "dataplane/http/syntax.h"

#include <gtest/gtest.h>

namespace sigil::dataplane::http {
namespace {

TEST(Syntax, Tokens) {
  EXPECT_TRUE(IsToken("GET"));
  EXPECT_TRUE(IsToken("x-api-key"));
  EXPECT_TRUE(IsToken("!#$%&'*+-.^_`|~09azAZ"));
  for (const char* bad : {"", "a b", "a:b", "a\tb", "a\"b", "a(b", "a,b", "a/b", "\x80"}) {
    EXPECT_FALSE(IsToken(bad)) << bad;
  }
}

TEST(Syntax, FieldValues) {
  EXPECT_TRUE(IsValidFieldValue(""));
  EXPECT_TRUE(IsValidFieldValue("Bearer abc def\tx"));
  EXPECT_TRUE(IsValidFieldValue("caf\xc3\xa9"));  // obs-text is allowed
  for (std::string bad : {std::string("a\rb"), std::string("a\nb"), std::string("a\0b", 3),
                          std::string("a\x01"), std::string("\x7f"), std::string("\x1b[0m")}) {
    EXPECT_FALSE(IsValidFieldValue(bad));
  }
}

TEST(Syntax, CaseAndLists) {
  EXPECT_TRUE(EqualsIgnoreCase("Content-Length", "content-LENGTH"));
  EXPECT_FALSE(EqualsIgnoreCase("Content-Length", "Content-Lengt"));
  EXPECT_EQ(AsciiLower("X-Amz-Date"), "x-amz-date");
  EXPECT_EQ(TrimOws(" \t a b \t"), "a b");
  const auto list = SplitList(" keep-alive , ,Upgrade,, close ");
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0], "keep-alive");
  EXPECT_EQ(list[1], "Upgrade");
  EXPECT_EQ(list[2], "close");
  EXPECT_TRUE(ListContains("keep-alive, Upgrade", "upgrade"));
  EXPECT_FALSE(ListContains("keep-alive, Upgraded", "upgrade"));
}

TEST(Syntax, FieldLines) {
  auto f = ParseFieldLine("X-Api-Key: \t secret value \t");
  ASSERT_TRUE(f.ok()) << f.error().ToString();
  EXPECT_EQ(f->name, "X-Api-Key");
  EXPECT_EQ(f->value, "secret value");
  auto empty = ParseFieldLine("Accept:");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->value, "");
  auto colon_in_value = ParseFieldLine("Host: example.org:8080");
  ASSERT_TRUE(colon_in_value.ok());
  EXPECT_EQ(colon_in_value->value, "example.org:8080");
}

TEST(Syntax, FieldLineRejections) {
  const std::pair<std::string, std::string> cases[] = {
      {"Host : example.org", "whitespace between field name and colon"},
      {"Host\t: example.org", "whitespace between field name and colon"},
      {" folded continuation", "obsolete line folding"},
      {"\tfolded", "obsolete line folding"},
      {"no colon here", "without a colon"},
      {": value", "empty field name"},
      {"Bad Name: v", "not a token"},
      {"X: a\x01"
       "b",
       "control character"},
      {std::string("X: a\0b", 6), "control character"},
      {"X: a\rb", "control character"},
  };
  for (const auto& [line, want] : cases) {
    auto f = ParseFieldLine(line);
    ASSERT_FALSE(f.ok()) << line;
    EXPECT_NE(f.error().message().find(want), std::string::npos) << f.error().message();
  }
}

}  // namespace
}  // namespace sigil::dataplane::http
