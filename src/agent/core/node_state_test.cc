#include "agent/core/node_state.h"

#include <gtest/gtest.h>
#include <cstdlib>

#include <filesystem>

#include "common/file_util.h"

namespace sigil::agent {
namespace {

class NodeStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/sigil-node-state-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/node.crt", "CHAIN", 0644).ok());
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/node.key", "KEY", 0600).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void WriteMeta(const std::string& json) {
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/node.json", json, 0644).ok());
  }
  std::string dir_;
};

constexpr char kRest[] =
    R"("node_name": "n1", "spiffe_id": "spiffe://td/sigil/node/n1", "trust_domain": "td")";

TEST_F(NodeStateTest, ReadsAFileWithOneServerAddress) {
  WriteMeta(std::string(R"({"server": "10.0.0.1:8081", )") + kRest + "}");
  auto loaded = LoadNodeState(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->servers, std::vector<std::string>{"10.0.0.1:8081"});
  EXPECT_EQ((*loaded)->node_name, "n1");
}

TEST_F(NodeStateTest, KeepsTheListAndTheFirstAddressForOlderAgents) {
  WriteMeta(std::string(R"({"server": "a:1", )") + kRest + "}");
  auto loaded = LoadNodeState(dir_);
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  NodeState state = std::move(**loaded);
  state.servers = {"a:1", "b:2", "[::1]:3"};
  ASSERT_TRUE(SaveNodeMeta(dir_, state).ok());
  auto text = ReadFile(dir_ + "/node.json", 1 << 20);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text->find(R"("server": "a:1")"), std::string::npos) << *text;
  auto again = LoadNodeState(dir_);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ((*again)->servers, (std::vector<std::string>{"a:1", "b:2", "[::1]:3"}));
  EXPECT_EQ((*again)->chain_pem, "CHAIN");  // SaveNodeMeta left the credential alone
}

TEST_F(NodeStateTest, RefusesABadStoredAddressNamingFileAndEntry) {
  WriteMeta(std::string(R"({"servers": ["a:1", "b"], "server": "a:1", )") + kRest + "}");
  auto bad = LoadNodeState(dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), dir_ + "/node.json: servers entry 2: \"b\" is not HOST:PORT");
  WriteMeta(std::string(R"({"servers": "a:1", )") + kRest + "}");
  bad = LoadNodeState(dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("\"servers\" is not a list"), std::string::npos);
  WriteMeta(std::string(R"({"servers": [], )") + kRest + "}");
  EXPECT_FALSE(LoadNodeState(dir_).ok());
  WriteMeta(std::string(R"({"servers": [7], )") + kRest + "}");
  EXPECT_FALSE(LoadNodeState(dir_).ok());
  WriteMeta(std::string(R"({"server": "a:0", )") + kRest + "}");
  bad = LoadNodeState(dir_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("port 0"), std::string::npos);
}

}  // namespace
}  // namespace sigil::agent
