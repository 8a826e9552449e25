#include "core/kek.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/encoding.h"
#include "common/file_util.h"

namespace sigil::core {
namespace {

class KekTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sigil-kek-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(KekTest, CreatesOnceWithMode0600AndReloadsTheSameKey) {
  std::string path = dir_ + "/kek";
  auto a = Kek::LoadOrCreate(path);
  ASSERT_TRUE(a.ok()) << a.error().ToString();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  auto b = Kek::LoadOrCreate(path);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->KeyId(), b->KeyId());
  auto sealed = a->Seal(AsBytes("ca private key"), "ca/1");
  ASSERT_TRUE(sealed.ok());
  auto opened = b->Open(*sealed, "ca/1");
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(opened->view(), "ca private key");
}

TEST_F(KekTest, RefusesLooseModeAndWrongSize) {
  std::string path = dir_ + "/kek";
  ASSERT_TRUE(WriteFileAtomic(path, std::string(32, 'k'), 0644).ok());
  auto loose = Kek::LoadOrCreate(path);
  ASSERT_FALSE(loose.ok());
  EXPECT_NE(loose.error().message().find("chmod 600"), std::string::npos);
  ASSERT_TRUE(WriteFileAtomic(path, std::string(31, 'k'), 0600).ok());
  EXPECT_FALSE(Kek::LoadOrCreate(path).ok());
}

TEST_F(KekTest, SealedBlobsAreBoundToKeyAndName) {
  auto kek = Kek::FromBytes(SecretBytes(32));
  auto other = Kek::FromBytes(SecretBytes::Copy(std::string(32, 'x')));
  ASSERT_TRUE(kek.ok() && other.ok());
  auto sealed = kek->Seal(AsBytes("secret"), "source/openai");
  ASSERT_TRUE(sealed.ok());
  // The plaintext does not appear in the blob, and two seals differ (random nonce).
  EXPECT_EQ(std::string(AsChars(*sealed)).find("secret"), std::string::npos);
  EXPECT_NE(*sealed, *kek->Seal(AsBytes("secret"), "source/openai"));
  auto wrong_name = kek->Open(*sealed, "source/aws");
  ASSERT_FALSE(wrong_name.ok());
  EXPECT_EQ(wrong_name.error().code(), ErrorCode::kUnauthenticated);
  auto wrong_key = other->Open(*sealed, "source/openai");
  ASSERT_FALSE(wrong_key.ok());
  EXPECT_NE(wrong_key.error().message().find(kek->KeyId()), std::string::npos);
  for (size_t i = 0; i < sealed->size(); i += 7) {
    auto tampered = *sealed;
    tampered[i] ^= 0x40;
    EXPECT_FALSE(kek->Open(tampered, "source/openai").ok()) << "byte " << i;
  }
  EXPECT_FALSE(kek->Open(std::vector<uint8_t>(10, 0), "x").ok());
  auto empty = kek->Seal({}, "empty");
  ASSERT_TRUE(empty.ok());
  auto opened = kek->Open(*empty, "empty");
  ASSERT_TRUE(opened.ok());
  EXPECT_TRUE(opened->empty());
}

}  // namespace
}  // namespace sigil::core
