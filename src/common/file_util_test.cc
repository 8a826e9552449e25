#include "common/file_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace sigil {
namespace {

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sigil-file-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FileUtilTest, AtomicWriteSetsExactModeDespiteUmask) {
  mode_t old = ::umask(0);
  ::umask(0077);
  std::string path = dir_ + "/secret.pem";
  ASSERT_TRUE(WriteFileAtomic(path, "abc", 0640).ok());
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(*ReadFile(path, 100), "abc");
  // No temporary file is left behind.
  int n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir_)) ++n;
  EXPECT_EQ(n, 1);
}

TEST_F(FileUtilTest, RefuseOverwriteKeepsOriginal) {
  std::string path = dir_ + "/key";
  ASSERT_TRUE(WriteFileAtomic(path, "first", 0600, Overwrite::kRefuse).ok());
  auto again = WriteFileAtomic(path, "second", 0600, Overwrite::kRefuse);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(*ReadFile(path, 100), "first");
  ASSERT_TRUE(WriteFileAtomic(path, "third", 0600).ok());
  EXPECT_EQ(*ReadFile(path, 100), "third");
}

TEST_F(FileUtilTest, ReadBoundsAndErrors) {
  std::string path = dir_ + "/big";
  ASSERT_TRUE(WriteFileAtomic(path, std::string(1000, 'x'), 0600).ok());
  auto too_big = ReadFile(path, 999);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.error().code(), ErrorCode::kResourceExhausted);
  auto secret = ReadSecretFile(path, 1000);
  ASSERT_TRUE(secret.ok());
  EXPECT_EQ(secret->size(), 1000u);
  auto missing = ReadFile(dir_ + "/nope", 10);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(ReadFile(dir_, 10).ok());  // a directory is not a regular file
}

TEST_F(FileUtilTest, MakeDirsCreatesNested) {
  std::string nested = dir_ + "/a/b/c";
  ASSERT_TRUE(MakeDirs(nested, 0700).ok());
  EXPECT_TRUE(std::filesystem::is_directory(nested));
  EXPECT_TRUE(MakeDirs(nested, 0700).ok());  // idempotent
}

}  // namespace
}  // namespace sigil
