#include <gtest/gtest.h>

#include "resources/address.h"

namespace sigil::resources {
namespace {

TEST(ServiceAddress, CanonicalForms) {
  struct Case {
    const char* in;
    const char* out;
  };
  for (auto c : std::initializer_list<Case>{
           {"api.example.com:443", "api.example.com:443"},
           {"*.s3.amazonaws.com:443", "*.s3.amazonaws.com:443"},
           {"localhost:8080", "localhost:8080"},
           {"10.0.0.1:80", "10.0.0.1:80"},
           {"10.0.0.1/32:80", "10.0.0.1:80"},
           {"10.0.0.0/8:443", "10.0.0.0/8:443"},
           {"0.0.0.0/0:1", "0.0.0.0/0:1"},
           {"[::1]:15008", "[::1]:15008"},
           {"[2001:DB8:0:0::1]:443", "[2001:db8::1]:443"},
           {"[2001:db8::/32]:443", "[2001:db8::/32]:443"},
           {"2001:db8::/32:443", "[2001:db8::/32]:443"},
           {"[::/0]:65535", "[::/0]:65535"},
       }) {
    auto a = ParseServiceAddress(c.in);
    ASSERT_TRUE(a.ok()) << c.in << ": " << a.error().message();
    EXPECT_EQ(a->str(), c.out);
  }
  auto v4 = *ParseServiceAddress("10.1.0.0/16:5432");
  EXPECT_EQ(v4.type, ServiceAddress::Type::kIpv4);
  EXPECT_EQ(v4.prefix_length, 16);
  EXPECT_EQ(v4.port, 5432);
  EXPECT_EQ(v4.ip[0], 10);
  EXPECT_EQ(v4.ip[1], 1);
}

TEST(ServiceAddress, Rejects) {
  for (const char* bad : {"",
                          "10.0.0.1",
                          "api.example.com",
                          "api:",
                          ":80",
                          "a.b:http",
                          "a.b:123456",
                          "[::1]",
                          "[::1]80",
                          "[10.0.0.1]:80",
                          "::1:80",
                          "10.0.0.1/8:80",
                          "10.0.0.0/33:1",
                          "1.2.3:4",
                          "a..b:1",
                          "-a.b:1",
                          "A.B:1",
                          "[2001:db8::1/129]:1",
                          "a_b:1",
                          "a.*.b:1",
                          "[::1:80"}) {
    EXPECT_FALSE(ParseServiceAddress(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace sigil::resources
