#include "common/secret_bytes.h"

#include <gtest/gtest.h>

#include <type_traits>

namespace sigil {
namespace {

static_assert(!std::is_copy_constructible_v<SecretBytes>);
static_assert(!std::is_copy_assignable_v<SecretBytes>);
static_assert(std::is_nothrow_move_constructible_v<SecretBytes>);

TEST(SecretBytes, CopyCompareAndMove) {
  SecretBytes a = SecretBytes::Copy(std::string_view("hunter2"));
  SecretBytes b = SecretBytes::Copy(std::string_view("hunter2"));
  SecretBytes c = SecretBytes::Copy(std::string_view("hunter3"));
  EXPECT_TRUE(a.Equals(b));
  EXPECT_FALSE(a.Equals(c));
  EXPECT_EQ(a.view(), "hunter2");
  SecretBytes moved = std::move(a);
  EXPECT_EQ(moved.view(), "hunter2");
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_EQ(a.data(), nullptr);
}

TEST(SecretBytes, TruncateWipesTail) {
  SecretBytes s = SecretBytes::Copy(std::string_view("abcdef"));
  const uint8_t* p = s.data();
  s.Truncate(2);
  EXPECT_EQ(s.view(), "ab");
  // The tail was cleansed in place (the allocation is still ours, so reading it is defined).
  for (int i = 2; i < 6; ++i) EXPECT_EQ(p[i], 0);
}

TEST(SecretBytes, ZeroSizeIsEmpty) {
  SecretBytes s(0);
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(s.Equals(SecretBytes()));
}

}  // namespace
}  // namespace sigil
