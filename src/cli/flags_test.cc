#include "cli/flags.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

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

// --config: YAML values for flags the command line did not give.
class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sigil-flags-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& text) {
    const std::string path = dir_ + "/c.yaml";
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(ConfigFileTest, FillsFlagsTheCommandLineLeftOut) {
  std::string server, name;
  std::vector<std::string> cgroups;
  bool dataplane = false, no_pool = false;
  Seconds ttl{60};
  FlagSet f("x", "y");
  f.ConfigFile("c");
  f.String("server", &server, "s", true);
  f.String("name", &name, "n");
  f.StringList("manage-cgroup", &cgroups, "m");
  f.Bool("dataplane", &dataplane, "d");
  f.Bool("no-pool", &no_pool, "p");
  f.Duration("ttl", &ttl, "t");
  const std::string path = Write(
      "server: 10.0.0.1:8081\nname: from-file\nmanage-cgroup: [/a, /b]\ndataplane: true\n"
      "no-pool: false\nttl: 2m\n");
  // The required --server comes from the file; --name on the command line wins.
  ASSERT_TRUE(f.Parse(Args({"--config", path.c_str(), "--name", "cli"})).ok());
  EXPECT_EQ(server, "10.0.0.1:8081");
  EXPECT_EQ(name, "cli");
  EXPECT_EQ(cgroups, (std::vector<std::string>{"/a", "/b"}));
  EXPECT_TRUE(dataplane);
  EXPECT_FALSE(no_pool);
  EXPECT_EQ(ttl, Seconds(120));
}

TEST_F(ConfigFileTest, ErrorsNameTheKey) {
  auto parse = [&](const std::string& text) {
    std::string name;
    std::vector<std::string> list;
    bool b = false;
    FlagSet f("x", "y");
    f.ConfigFile("c");
    f.String("name", &name, "n");
    f.StringList("list", &list, "l");
    f.Bool("flag", &b, "b");
    const std::string path = Write(text);
    auto r = f.Parse(Args({"--config", path.c_str()}));
    return r.ok() ? std::string() : r.error().message();
  };
  EXPECT_NE(parse("nmae: x\n").find("unknown key \"nmae\""), std::string::npos);
  EXPECT_NE(parse("name: [a, b]\n").find("name: takes one value, not a list"), std::string::npos);
  EXPECT_NE(parse("flag: maybe\n").find("flag: must be true or false"), std::string::npos);
  EXPECT_NE(parse("list: {a: 1}\n").find("list: must be a value or a list"), std::string::npos);
  EXPECT_NE(parse("- a\n").find("must be a mapping"), std::string::npos);
  EXPECT_NE(parse("name: [\n").find("not YAML"), std::string::npos);
  EXPECT_EQ(parse(""), "");
}

}  // namespace
}  // namespace sigil::cli
