#include "common/duration.h"

#include <gtest/gtest.h>

namespace sigil {
namespace {

TEST(Duration, ParsesUnitsAndCompounds) {
  EXPECT_EQ(*ParseDuration("30s"), Seconds(30));
  EXPECT_EQ(*ParseDuration("5m"), Seconds(300));
  EXPECT_EQ(*ParseDuration("24h"), Seconds(86400));
  EXPECT_EQ(*ParseDuration("1h30m"), Seconds(5400));
  EXPECT_EQ(*ParseDuration("2d"), Seconds(172800));
  EXPECT_EQ(*ParseDuration("0s"), Seconds(0));
}

TEST(Duration, RejectsBadInputWithReason) {
  auto bare = ParseDuration("60");
  ASSERT_FALSE(bare.ok());
  EXPECT_NE(bare.error().message().find("missing unit"), std::string::npos);
  auto unit = ParseDuration("5y");
  ASSERT_FALSE(unit.ok());
  EXPECT_NE(unit.error().message().find("unknown unit 'y'"), std::string::npos);
  EXPECT_FALSE(ParseDuration("").ok());
  EXPECT_FALSE(ParseDuration("h").ok());
  EXPECT_FALSE(ParseDuration("-5m").ok());
  EXPECT_FALSE(ParseDuration("99999999999999999999s").ok());
  EXPECT_FALSE(ParseDuration("1 h").ok());
}

TEST(Duration, FormatRoundTrips) {
  for (int64_t s : {0, 1, 59, 60, 61, 3600, 5400, 86399, 86400 * 3}) {
    std::string f = FormatDuration(Seconds(s));
    auto back = ParseDuration(f);
    ASSERT_TRUE(back.ok()) << f;
    EXPECT_EQ(back->count(), s) << f;
  }
  EXPECT_EQ(FormatDuration(Seconds(5400)), "1h30m");
}

TEST(Duration, Rfc3339) {
  EXPECT_EQ(FormatRfc3339(FromUnixSeconds(0)), "1970-01-01T00:00:00Z");
  EXPECT_EQ(FormatRfc3339(FromUnixSeconds(1796398545)), "2026-12-04T15:35:45Z");
}

}  // namespace
}  // namespace sigil
