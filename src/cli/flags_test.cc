#include "cli/flags.h"

#include <gtest/gtest.h>

namespace sigil::cli {
namespace {

std::vector<std::string> Args(std::initializer_list<const char*> a) { return {a.begin(), a.end()}; }

TEST(FlagSet, ParsesAllForms) {
  std::string dir, name;
  std::vector<std::string> dns;
  bool force = false;
  Seconds ttl{3600};
  FlagSet f("x", "y");
  f.String("dir", &dir, "d", true);
  f.String("name", &name, "n");
  f.StringList("dns", &dns, "dns");
  f.Bool("force", &force, "f");
  f.Duration("ttl", &ttl, "t");
  ASSERT_TRUE(
      f.Parse(Args({"--dir", "/a", "--name=b", "--dns", "x", "--dns=y", "--force", "--ttl", "5m"}))
          .ok());
  EXPECT_EQ(dir, "/a");
  EXPECT_EQ(name, "b");
  EXPECT_EQ(dns, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(force);
  EXPECT_EQ(ttl, Seconds(300));
}

TEST(FlagSet, ErrorsNameTheFlag) {
  std::string dir;
  Seconds ttl{1};
  auto run = [&](std::vector<std::string> a) {
    FlagSet f("x", "y");
    f.String("dir", &dir, "d", true);
    f.Duration("ttl", &ttl, "t");
    return f.Parse(a);
  };
  auto missing = run(Args({}));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(), "missing required flag --dir");
  auto unknown = run(Args({"--dir", "a", "--bogus"}));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().message(), "unknown flag --bogus");
  auto novalue = run(Args({"--dir"}));
  ASSERT_FALSE(novalue.ok());
  EXPECT_EQ(novalue.error().message(), "flag --dir needs a value");
  auto twice = run(Args({"--dir", "a", "--dir", "b"}));
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.error().message().find("more than once"), std::string::npos);
  auto bad_ttl = run(Args({"--dir", "a", "--ttl", "5"}));
  ASSERT_FALSE(bad_ttl.ok());
  EXPECT_NE(bad_ttl.error().message().find("flag --ttl"), std::string::npos);
  auto positional = run(Args({"--dir", "a", "extra"}));
  ASSERT_FALSE(positional.ok());
}

TEST(FlagSet, HelpStopsParsingAndListsFlags) {
  std::string dir;
  FlagSet f("pki thing --dir DIR", "Does a thing.");
  f.String("dir", &dir, "the directory", true);
  ASSERT_TRUE(f.Parse(Args({"--help"})).ok());
  EXPECT_TRUE(f.help_requested());
  std::string help = f.Help();
  EXPECT_NE(help.find("Usage: sigil pki thing --dir DIR"), std::string::npos);
  EXPECT_NE(help.find("--dir VALUE"), std::string::npos);
  EXPECT_NE(help.find("(required)"), std::string::npos);
}

TEST(FlagSet, SingleLetterFlags) {
  std::string file, out;
  FlagSet f("apply -f FILE", "y");
  f.String("f", &file, "file", true);
  f.String("o", &out, "output");
  ASSERT_TRUE(f.Parse(Args({"-f", "a.yaml", "-o=json"})).ok());
  EXPECT_EQ(file, "a.yaml");
  EXPECT_EQ(out, "json");
  EXPECT_NE(f.Help().find("  -f VALUE"), std::string::npos);
  FlagSet g("x", "y");
  std::string v;
  g.String("f", &v, "file");
  EXPECT_FALSE(g.Parse(Args({"-x"})).ok());        // unknown short flag
  EXPECT_FALSE(g.Parse(Args({"-fa.yaml"})).ok());  // no glued values
}

TEST(FlagSet, DoubleDashEndsFlags) {
  std::vector<std::string> rest;
  FlagSet f("x", "y");
  f.Positional("CMD", &rest, "command");
  ASSERT_TRUE(f.Parse(Args({"--", "--not-a-flag", "b"})).ok());
  EXPECT_EQ(rest, (std::vector<std::string>{"--not-a-flag", "b"}));
}

}  // namespace
}  // namespace sigil::cli
