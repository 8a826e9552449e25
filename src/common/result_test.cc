#include "common/result.h"

#include <gtest/gtest.h>

#include <memory>

namespace sigil {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Result<int> Quarter(int x) {
  SIGIL_ASSIGN_OR_RETURN(int h, Half(x));
  SIGIL_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Result<void> CheckEven(int x) {
  SIGIL_TRY(Half(x));
  return Ok();
}

TEST(Result, ValueAndErrorPropagation) {
  auto q = Quarter(8);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, 2);
  auto bad = Quarter(6);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.error().message(), "odd: 3");
  EXPECT_TRUE(CheckEven(2).ok());
  EXPECT_FALSE(CheckEven(3).ok());
}

TEST(Result, MoveOnlyValues) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

TEST(Result, ContextAndToString) {
  Error e = InvalidArgument("bad").WithContext("field spec.ttl").WithContext("document 2");
  EXPECT_EQ(e.message(), "document 2: field spec.ttl: bad");
  EXPECT_EQ(e.ToString(), "InvalidArgument: document 2: field spec.ttl: bad");
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  Result<int> r = Internal("x");
  EXPECT_DEATH((void)r.value(), "");
}

}  // namespace
}  // namespace sigil
