// RenderFile: the bytes of each credential file format.
#include "agent/creds/file_content.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

namespace sigil::agent::creds {
namespace {

const TimePoint kNow = FromUnixSeconds(1'700'000'000);

CredentialGrantHandle Grant(std::string source_type, std::string_view secret,
                            std::map<std::string, std::string> attributes = {},
                            std::vector<std::pair<std::string, SecretBytes>> extra = {},
                            std::string chain_pem = "") {
  GrantInfo info;
  info.binding = "b";
  info.source = "src";
  info.source_type = std::move(source_type);
  info.spiffe_id = "spiffe://example.org/app";
  info.attributes = std::move(attributes);
  info.chain_pem = std::move(chain_pem);
  info.fetched_at = kNow;
  info.expires_at = kNow + std::chrono::minutes(5);
  return CredentialGrantHandle(std::make_shared<const CredentialGrant>(
                                   std::move(info), SecretBytes::Copy(secret), std::move(extra)),
                               true);
}

std::string Render(const FileDelivery& f, const CredentialGrantHandle& g) {
  auto r = RenderFile(f, g);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().ToString());
  return r.ok() ? std::string(r->view()) : std::string();
}

TEST(RenderFile, RawAndEnv) {
  const std::string_view binary("sk\0\xff", 4);
  EXPECT_EQ(Render({"key", FileFormat::kRaw, ""}, Grant("static", binary)), binary);
  EXPECT_EQ(Render({"key", FileFormat::kRaw, ""}, Grant("static", "line1\nline2")), "line1\nline2");
  EXPECT_EQ(Render({"x.env", FileFormat::kEnv, "OPENAI_API_KEY"}, Grant("static", "sk-live-1")),
            "OPENAI_API_KEY=sk-live-1\n");
  for (std::string_view bad :
       {std::string_view("a\nB=c"), std::string_view("a\rb"), std::string_view("a\0b", 3)}) {
    auto r = RenderFile({"x.env", FileFormat::kEnv, "K"}, Grant("static", bad));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  }
}

TEST(RenderFile, AwsCredentials) {
  std::vector<std::pair<std::string, SecretBytes>> extra;
  extra.emplace_back("sessionToken", SecretBytes::Copy("FwoGZXIvYXdzEXAMPLE"));
  EXPECT_EQ(Render({"credentials", FileFormat::kAwsCredentials, ""},
                   Grant("aws", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                         {{"accessKeyId", "AKIAIOSFODNN7EXAMPLE"}, {"region", "eu-west-1"}},
                         std::move(extra))),
            "[default]\naws_access_key_id=AKIAIOSFODNN7EXAMPLE\n"
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
            "aws_session_token=FwoGZXIvYXdzEXAMPLE\n");
  EXPECT_EQ(Render({"credentials", FileFormat::kAwsCredentials, ""},
                   Grant("aws", "secret", {{"accessKeyId", "AKID"}})),
            "[default]\naws_access_key_id=AKID\naws_secret_access_key=secret\n");
  auto wrong =
      RenderFile({"credentials", FileFormat::kAwsCredentials, ""}, Grant("static", "sk-1"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(wrong.error().message().find("sk-1"), std::string::npos);
}

TEST(RenderFile, SvidPem) {
  std::string der(138, '\0');
  for (size_t i = 0; i < der.size(); ++i) der[i] = static_cast<char>(i * 37 + 11);
  const std::string chain = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  std::string out =
      Render({"svid.pem", FileFormat::kSvidPem, ""}, Grant("x509-svid", der, {}, {}, chain));
  ASSERT_TRUE(out.starts_with(chain));
  std::string key = out.substr(chain.size());
  const std::string begin = "-----BEGIN PRIVATE KEY-----\n", end = "-----END PRIVATE KEY-----\n";
  ASSERT_TRUE(key.starts_with(begin)) << key;
  ASSERT_TRUE(key.ends_with(end)) << key;
  std::string body = key.substr(begin.size(), key.size() - begin.size() - end.size());
  std::string b64;
  size_t start = 0;
  while (start < body.size()) {
    size_t nl = body.find('\n', start);
    ASSERT_NE(nl, std::string::npos);
    EXPECT_LE(nl - start, 64u);
    b64 += body.substr(start, nl - start);
    start = nl + 1;
  }
  std::string decoded(b64.size(), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(decoded.data()),
                          reinterpret_cast<const unsigned char*>(b64.data()),
                          static_cast<int>(b64.size()));
  ASSERT_GT(n, 0);
  // EVP_DecodeBlock keeps the padding's zero bytes: 138 bytes encode to 184 chars, 138 + 0 pad.
  EXPECT_EQ(decoded.substr(0, der.size()), der);

  auto wrong = RenderFile({"svid.pem", FileFormat::kSvidPem, ""}, Grant("static", "x"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), ErrorCode::kFailedPrecondition);
}

}  // namespace
}  // namespace sigil::agent::creds
