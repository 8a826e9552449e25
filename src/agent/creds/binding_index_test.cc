// ParseBinding over the canonical JSON the server syncs, and BindingIndex snapshots.
#include "agent/creds/binding_index.h"

#include <gtest/gtest.h>

namespace sigil::agent::creds {
namespace {

core::SpiffeId Id(std::string_view s) { return core::SpiffeId::Parse(s).value(); }

TEST(ParseBinding, FileFormats) {
  auto env = ParseBinding(
      "legacy-env",
      R"({"delivery":{"file":{"envName":"PARTNER_TOKEN","fileName":"partner.env","format":"env"}},)"
      R"("identities":["spiffe://example.org/legacy/cron"],"source":"partner-oauth"})");
  ASSERT_TRUE(env.ok()) << env.error().ToString();
  EXPECT_EQ(env->name, "legacy-env");
  EXPECT_EQ(env->source, "partner-oauth");
  ASSERT_TRUE(env->file.has_value());
  EXPECT_EQ(env->file->file_name, "partner.env");
  EXPECT_EQ(env->file->format, FileFormat::kEnv);
  EXPECT_EQ(env->file->env_name, "PARTNER_TOKEN");
  EXPECT_TRUE(env->Allows(Id("spiffe://example.org/legacy/cron")));
  EXPECT_FALSE(env->Allows(Id("spiffe://example.org/legacy/cron2")));

  auto pem = ParseBinding("nginx-pem",
                          R"({"delivery":{"file":{"fileName":"svid.pem","format":"svid-pem"}},)"
                          R"("identities":["spiffe://example.org/web/*"]})");
  ASSERT_TRUE(pem.ok()) << pem.error().ToString();
  EXPECT_EQ(pem->source, "");
  EXPECT_EQ(pem->file->format, FileFormat::kSvidPem);
  EXPECT_TRUE(pem->Allows(Id("spiffe://example.org/web/nginx")));
  EXPECT_FALSE(pem->Allows(Id("spiffe://example.org/web")));

  auto aws = ParseBinding(
      "aws-file", R"({"delivery":{"file":{"fileName":"credentials","format":"aws-credentials"}},)"
                  R"("identities":["spiffe://example.org/*"],"source":"aws-prod"})");
  ASSERT_TRUE(aws.ok());
  EXPECT_EQ(aws->file->format, FileFormat::kAwsCredentials);
  EXPECT_EQ(FileFormatName(aws->file->format), "aws-credentials");

  auto raw = ParseBinding("raw", R"({"delivery":{"file":{"fileName":"key"}},)"
                                 R"("identities":["spiffe://example.org/a"],"source":"s"})");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->file->format, FileFormat::kRaw);
}

TEST(ParseBinding, HeaderBindingHasNoFile) {
  auto b = ParseBinding(
      "ml-openai",
      R"({"delivery":{"header":{"name":"Authorization","template":"Bearer {{secret}}"}},)"
      R"("identities":["spiffe://example.org/ml/*"],"service":"openai","source":"openai-key"})");
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_FALSE(b->file.has_value());
  EXPECT_EQ(b->source, "openai-key");
}

TEST(ParseBinding, Errors) {
  for (
      const char* bad : {
          "not json",
          R"({"identities":[]})",
          R"({"identities":["not-a-spiffe-id"]})",
          R"({"identities":["spiffe://example.org/a"],"delivery":{"file":{"format":"raw"}},"source":"s"})",
          R"({"identities":["spiffe://example.org/a"],"delivery":{"file":{"fileName":"f","format":"zip"}},"source":"s"})",
          R"({"identities":["spiffe://example.org/a"],"delivery":{"file":{"fileName":"f","format":"env"}},"source":"s"})",
          R"({"identities":["spiffe://example.org/a"],"delivery":{"file":{"fileName":"f"}}})",
      }) {
    auto b = ParseBinding("b", bad);
    EXPECT_FALSE(b.ok()) << bad;
    if (!b.ok()) {
      EXPECT_NE(b.error().message().find("CredentialBinding b"), std::string::npos);
    }
  }
}

TEST(BindingIndex, RebuildsOnlyWhenTheRevisionMoves) {
  BindingIndex index;
  int loads = 0;
  std::vector<std::pair<std::string, std::string>> synced = {
      {"a",
       R"({"delivery":{"file":{"fileName":"k"}},"identities":["spiffe://td/x"],"source":"s"})"},
      {"broken", "{"}};
  auto load = [&] {
    ++loads;
    return synced;
  };
  auto first = index.Get(7, load);
  EXPECT_EQ(first->size(), 1u);
  EXPECT_EQ(index.skipped(), 1u);
  EXPECT_EQ(index.Get(7, load).get(), first.get());
  EXPECT_EQ(loads, 1);
  synced.pop_back();
  synced.emplace_back(
      "b", R"({"delivery":{"file":{"fileName":"k"}},"identities":["spiffe://td/y"],"source":"s"})");
  auto second = index.Get(8, load);
  EXPECT_EQ(loads, 2);
  EXPECT_EQ(second->size(), 2u);
  EXPECT_EQ(index.skipped(), 0u);
  EXPECT_EQ(first->size(), 1u) << "an old snapshot changed under its holder";
}

}  // namespace
}  // namespace sigil::agent::creds
