#include "agent/core/server_addresses.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace sigil::agent {
namespace {

std::string ParseError(std::string_view text) {
  auto r = ParseServerAddresses("--server", text);
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? std::string() : r.error().message();
}

TEST(ServerAddresses, ParsesOneOrSeveral) {
  auto one = ParseServerAddresses("--server", "10.0.0.1:8081");
  ASSERT_TRUE(one.ok()) << one.error().message();
  EXPECT_EQ(*one, std::vector<std::string>{"10.0.0.1:8081"});

  auto several = ParseServerAddresses("--server", "a.example:8081, b.example:8082 ,[::1]:9000");
  ASSERT_TRUE(several.ok()) << several.error().message();
  EXPECT_EQ(*several, (std::vector<std::string>{"a.example:8081", "b.example:8082", "[::1]:9000"}));
  EXPECT_EQ(JoinServerAddresses(*several), "a.example:8081,b.example:8082,[::1]:9000");
}

TEST(ServerAddresses, ErrorsNameTheBadEntry) {
  EXPECT_EQ(ParseError("a:1,b,c:3"), "--server entry 2: \"b\" is not HOST:PORT");
  EXPECT_EQ(ParseError("a:1,,c:3"), "--server entry 2: empty (want HOST:PORT)");
  EXPECT_EQ(ParseError("a:1,b:2,"), "--server entry 3: empty (want HOST:PORT)");
  EXPECT_EQ(ParseError("a:1,b:0"), "--server entry 2: \"b:0\" has port 0");
  EXPECT_EQ(ParseError("a:1,b:99999"), "--server entry 2: \"b:99999\" has a bad port");
  EXPECT_EQ(ParseError("a:1,b:x1"), "--server entry 2: \"b:x1\" has a bad port");
  EXPECT_EQ(ParseError("a:1,a:1"), "--server entry 2: \"a:1\" is listed twice");
  EXPECT_EQ(ParseError("::1:80"),
            "--server: \"::1:80\": write an IPv6 address in brackets, [ADDR]:PORT");
  EXPECT_EQ(ParseError("[::1]x:80"), "--server: \"[::1]x:80\" has a misplaced bracket");
  EXPECT_EQ(ParseError("[]:80"), "--server: \"[]:80\" has no host");
  EXPECT_EQ(ParseError(""), "--server: empty (want HOST:PORT)");
  EXPECT_NE(ParseError("a:1,b\x01:2").find("entry 2"), std::string::npos);
  EXPECT_NE(ParseError("a:1,b\xc3\xa9:2").find("non-ASCII"), std::string::npos);
  EXPECT_NE(ParseError("a b:1").find("contains a space"), std::string::npos);
  EXPECT_NE(ParseError(std::string(2000, 'h') + ":1").find("longer than"), std::string::npos);
  std::string many;
  for (int i = 0; i < 40; ++i) many += "h" + std::to_string(i) + ":1,";
  EXPECT_NE(ParseError(many).find("more than 32 addresses"), std::string::npos);
  // A list read back from node.json goes through the same rules.
  auto stored = ValidateServerAddresses("node.json: servers", {"a:1", "nope"});
  ASSERT_FALSE(stored.ok());
  EXPECT_EQ(stored.error().message(), "node.json: servers entry 2: \"nope\" is not HOST:PORT");
  EXPECT_FALSE(ValidateServerAddresses("node.json: servers", {}).ok());
}

TEST(ServerAddresses, StickyUntilAdvancedAndWrapsAround) {
  ServerAddresses a({"a:1", "b:2", "c:3"});
  auto cur = a.Current();
  EXPECT_EQ(cur.address, "a:1");
  EXPECT_EQ(a.Current().address, "a:1");  // sticky
  EXPECT_FALSE(a.RoundComplete());
  auto m1 = a.Advance(cur.epoch);
  ASSERT_TRUE(m1.has_value());
  EXPECT_EQ(m1->from, "a:1");
  EXPECT_EQ(m1->to, "b:2");
  EXPECT_EQ(a.Current().address, "b:2");
  EXPECT_EQ(a.Current().epoch, m1->epoch);
  // A second failure of the old connection does not move again.
  EXPECT_FALSE(a.Advance(cur.epoch).has_value());
  EXPECT_EQ(a.Current().address, "b:2");
  EXPECT_FALSE(a.RoundComplete());
  auto m2 = a.Advance(m1->epoch);
  ASSERT_TRUE(m2.has_value());
  EXPECT_EQ(m2->to, "c:3");
  EXPECT_FALSE(a.RoundComplete());
  auto m3 = a.Advance(m2->epoch);
  ASSERT_TRUE(m3.has_value());
  EXPECT_EQ(m3->to, "a:1");        // wrapped
  EXPECT_TRUE(a.RoundComplete());  // all three tried since the last success
  a.Succeeded();
  EXPECT_FALSE(a.RoundComplete());
  EXPECT_EQ(a.failovers(), 3u);
}

TEST(ServerAddresses, StartIndexAndSingleAddress) {
  ServerAddresses started({"a:1", "b:2"}, 1);
  EXPECT_EQ(started.Current().address, "b:2");
  ServerAddresses wrapped({"a:1", "b:2"}, 5);
  EXPECT_EQ(wrapped.Current().address, "b:2");

  ServerAddresses one({"a:1"});
  EXPECT_FALSE(one.Advance(one.epoch()).has_value());  // nowhere to go
  EXPECT_EQ(one.Current().address, "a:1");
  EXPECT_TRUE(one.RoundComplete());  // the only address was tried: back off
  EXPECT_EQ(one.failovers(), 0u);
}

TEST(ServerAddresses, ConcurrentFailuresOfOneConnectionAdvanceOnce) {
  ServerAddresses a({"a:1", "b:2", "c:3"});
  const uint64_t failed = a.epoch();
  std::atomic<int> moved{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (a.Advance(failed)) moved.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(moved.load(), 1);
  EXPECT_EQ(a.Current().address, "b:2");
  EXPECT_EQ(a.failovers(), 1u);
}

}  // namespace
}  // namespace sigil::agent
