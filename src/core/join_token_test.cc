#include "core/join_token.h"

#include <gtest/gtest.h>

#include <set>

#include "core/testing/pki_fixture.h"

namespace sigil::core {
namespace {

TEST(JoinToken, GenerateParseRoundTrip) {
  X509Ca ca = testing::MakeCa();
  auto token = JoinToken::Generate(ca.root());
  ASSERT_TRUE(token.ok());
  SecretBytes text = token->Text();
  EXPECT_TRUE(text.view().starts_with("SJT1."));
  EXPECT_EQ(text.size(), 5u + 8 + 1 + 32 + 1 + 64);
  auto parsed = JoinToken::Parse(std::string(text.view()) + "\n");
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(parsed->id(), token->id());
  EXPECT_EQ(parsed->StorageHash(), token->StorageHash());
  EXPECT_TRUE(parsed->PinsCa(ca.root()));
  EXPECT_FALSE(parsed->PinsCa(testing::MakeCa().root()));
  EXPECT_EQ(parsed->ca_sha256(), ca.root().Fingerprint());
}

TEST(JoinToken, HashIsNotTheSecretAndTokensAreUnique) {
  X509Ca ca = testing::MakeCa();
  std::set<std::string> ids, hashes;
  for (int i = 0; i < 50; ++i) {
    auto t = JoinToken::Generate(ca.root());
    ASSERT_TRUE(t.ok());
    std::string text(t->Text().view());
    EXPECT_EQ(text.find(t->StorageHash()), std::string::npos);
    ids.insert(t->id());
    hashes.insert(t->StorageHash());
  }
  EXPECT_EQ(hashes.size(), 50u);
  EXPECT_GE(ids.size(), 49u);  // 32-bit ids: a collision in 50 is astronomically unlikely
}

TEST(JoinToken, RejectsMalformedWithoutEchoingIt) {
  const std::string secretish =
      "SJT1.0123abcd.SECRETSECRETSECRETSECRETSECRET!!." + std::string(64, 'a');
  const char* bad[] = {
      "",
      "hello",
      "SJT2.0123abcd.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.aaaa",
      "SJT1.0123ABCD.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.",
      "SJT1.0123abc.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.",
  };
  for (const char* b : bad) {
    std::string text = std::string(b) + (std::string(b).size() > 10 ? std::string(64, 'a') : "");
    EXPECT_FALSE(JoinToken::Parse(text).ok()) << b;
  }
  auto r = JoinToken::Parse(secretish);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message().find("SECRET"), std::string::npos);
  std::string upper_hash = "SJT1.0123abcd." + std::string(32, 'A') + "." + std::string(64, 'A');
  auto u = JoinToken::Parse(upper_hash);
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.error().message().find("CA hash"), std::string::npos);
}

}  // namespace
}  // namespace sigil::core
