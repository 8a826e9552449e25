#include "dataplane/inject/sigv4.h"

#include <gtest/gtest.h>

#include "common/encoding.h"

namespace sigil::dataplane::inject {
namespace {

// AWS's documentation examples use these (published, non-working) credentials.
constexpr std::string_view kDocSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr std::string_view kS3DocSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

AwsCredentials Creds(std::string_view id, std::string_view secret, std::string_view token = "") {
  AwsCredentials c;
  c.access_key_id = std::string(id);
  c.secret_access_key = SecretBytes::Copy(secret);
  c.session_token = SecretBytes::Copy(token);
  return c;
}

TimePoint At(int year, unsigned month, unsigned day, int h, int m, int s) {
  using namespace std::chrono;
  return sys_days(year_month_day(std::chrono::year(year), std::chrono::month(month),
                                 std::chrono::day(day))) +
         hours(h) + minutes(m) + seconds(s);
}

std::string Header(const SigV4Result& r, std::string_view name) {
  for (const auto& f : r.set) {
    if (f.name == name) return f.value;
  }
  return "<missing>";
}

TEST(SigV4, SigningKeyDerivationDocumentationExample) {
  // AWS's key-derivation example: 20120215 / us-east-1 / iam.
  auto key = DeriveSigningKey(SecretBytes::Copy(kDocSecret), "20120215", "us-east-1", "iam");
  ASSERT_TRUE(key.ok()) << key.error().ToString();
  EXPECT_EQ(HexEncode(key->span()),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

TEST(SigV4, IamListUsersDocumentationExample) {
  SigV4Request req{"GET",
                   "/",
                   "Action=ListUsers&Version=2010-05-08",
                   {{"Host", "iam.amazonaws.com"},
                    {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}},
                   std::string_view()};
  SigV4Params params{"us-east-1", "iam", At(2015, 8, 30, 12, 36, 0)};
  SigV4Debug debug;
  auto r = SignV4ForTest(req, Creds("AKIDEXAMPLE", kDocSecret), params, &debug);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(debug.canonical_request,
            "GET\n/\nAction=ListUsers&Version=2010-05-08\n"
            "content-type:application/x-www-form-urlencoded; charset=utf-8\n"
            "host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
            "content-type;host;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(debug.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n"
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
  EXPECT_EQ(Header(*r, "Authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date, "
            "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
  EXPECT_EQ(Header(*r, "X-Amz-Date"), "20150830T123600Z");
  ASSERT_EQ(r->set.size(), 2u);  // no token, signed payload, not S3: no extra headers
}

TEST(SigV4, S3GetObjectDocumentationExample) {
  // AWS's S3 example: GET /test.txt with a Range header, empty payload hashed.
  SigV4Request req{"GET",
                   "/test.txt",
                   "",
                   {{"Host", "examplebucket.s3.amazonaws.com"}, {"Range", "bytes=0-9"}},
                   std::string_view()};
  SigV4Params params{"us-east-1", "s3", At(2013, 5, 24, 0, 0, 0), DefaultUriMode("s3")};
  auto r = SignV4(req, Creds("AKIAIOSFODNN7EXAMPLE", kS3DocSecret), params);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->signed_headers, "host;range;x-amz-content-sha256;x-amz-date");
  EXPECT_EQ(Header(*r, "X-Amz-Content-SHA256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_TRUE(
      Header(*r, "Authorization")
          .ends_with("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"));
}

TEST(SigV4, AmzDate) {
  EXPECT_EQ(AmzDate(At(2024, 2, 29, 23, 59, 58)), "20240229T235958Z");
  EXPECT_EQ(AmzDate(FromUnixSeconds(0)), "19700101T000000Z");
}

TEST(SigV4, UriEncoding) {
  EXPECT_EQ(UriEncode("AZaz09-_.~", false), "AZaz09-_.~");
  EXPECT_EQ(UriEncode("a b/c+d=e%f", false), "a%20b%2Fc%2Bd%3De%25f");
  EXPECT_EQ(UriEncode("a b/c", true), "a%20b/c");
  EXPECT_EQ(UriEncode("caf\xc3\xa9*", false), "caf%C3%A9%2A");
}

TEST(SigV4, CanonicalUriNormalizesAndEncodesTwiceExceptS3) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "/"},
      {"/", "/"},
      {"/my%20doc", "/my%2520doc"},
      {"/~user/a-b_c.d", "/~user/a-b_c.d"},
      {"/a//b///c", "/a/b/c"},
      {"/a/./b/../c", "/a/c"},
      {"/a/b/..", "/a"},
      {"/..", "/"},
      {"/../..//x/", "/x/"},
      {"//", "/"},
      {"/trailing/", "/trailing/"},
      {"/a:b@c!$'()*,;=+", "/a%3Ab%40c%21%24%27%28%29%2A%2C%3B%3D%2B"},
      {"/50%off", "/50%25off"},
      {"/%2e%2E/x", "/%252e%252E/x"},  // encoded dots are not dot segments
  };
  for (const auto& [in, want] : cases) {
    EXPECT_EQ(CanonicalUri(in, UriMode::kNormalizeAndEncode), want) << in;
  }
  for (const char* s3 : {"/bucket/my%20key", "/bucket//a/./b/../c", "/b/%7Ex", "/b/a+b"}) {
    EXPECT_EQ(CanonicalUri(s3, UriMode::kS3), s3);
  }
  EXPECT_EQ(CanonicalUri("", UriMode::kS3), "/");
  EXPECT_EQ(DefaultUriMode("s3"), UriMode::kS3);
  EXPECT_EQ(DefaultUriMode("s3-object-lambda"), UriMode::kS3);
  EXPECT_EQ(DefaultUriMode("sts"), UriMode::kNormalizeAndEncode);
  EXPECT_EQ(DefaultUriMode("execute-api"), UriMode::kNormalizeAndEncode);
}

TEST(SigV4, CanonicalQuery) {
  const std::pair<const char*, const char*> cases[] = {
      {"", ""},
      {"b=2&a=1", "a=1&b=2"},
      {"k=2&k=10&k=1", "k=1&k=10&k=2"},  // repeated names sorted by value, bytewise
      {"flag&x=", "flag=&x="},
      {"a=1&&b=2&", "a=1&b=2"},
      {"q=a%20b", "q=a%20b"},
      {"q=a+b", "q=a%2Bb"},  // '+' is a literal plus
      {"q=%7e%2d%5F", "q=~-_"},
      {"q=%c3%a9", "q=%C3%A9"},
      {"q=b=c", "q=b%3Dc"},
      {"%24top=5&prefix=a/b", "%24top=5&prefix=a%2Fb"},
      {"Z=1&a=1&_=1", "Z=1&_=1&a=1"},
  };
  for (const auto& [in, want] : cases) {
    auto q = CanonicalQuery(in);
    ASSERT_TRUE(q.ok()) << in;
    EXPECT_EQ(*q, want) << in;
  }
  for (const char* bad : {"a=%", "a=%2", "a=%zz", "%g1=1"}) {
    EXPECT_FALSE(CanonicalQuery(bad).ok()) << bad;
  }
}

TEST(SigV4, CanonicalHeaderValues) {
  EXPECT_EQ(CanonicalHeaderValue("  a   b \t c  "), "a b c");
  EXPECT_EQ(CanonicalHeaderValue("\t"), "");
  EXPECT_EQ(CanonicalHeaderValue("x"), "x");
}

SigV4Request Basic() {
  return {"POST", "/", "", {{"Host", "sts.eu-west-1.amazonaws.com"}}, std::string_view("{}")};
}
SigV4Params Sts() { return {"eu-west-1", "sts", At(2024, 1, 2, 3, 4, 5)}; }

TEST(SigV4, ClientCopiesOfSignerHeadersAreIgnored) {
  auto clean = SignV4(Basic(), Creds("AKID", "secret"), Sts());
  SigV4Request dirty = Basic();
  dirty.headers.push_back({"Authorization", "AWS4-HMAC-SHA256 forged"});
  dirty.headers.push_back({"X-Amz-Date", "19990101T000000Z"});
  dirty.headers.push_back({"x-amz-security-token", "forged"});
  dirty.headers.push_back({"X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD"});
  dirty.headers.push_back({"User-Agent", "curl/7.88"});
  dirty.headers.push_back({"Expect", "100-continue"});
  auto r = SignV4(dirty, Creds("AKID", "secret"), Sts());
  ASSERT_TRUE(clean.ok() && r.ok());
  EXPECT_EQ(r->set, clean->set);
  EXPECT_EQ(r->signed_headers, "host;x-amz-date");
}

TEST(SigV4, SessionTokenAndPayloadModes) {
  auto r = SignV4(Basic(), Creds("ASIAEXAMPLE", "secret", "FwoGZXIvYXdzEXAMPLE=="), Sts());
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->set.size(), 3u);
  EXPECT_EQ(r->set[1], (HeaderField{"X-Amz-Security-Token", "FwoGZXIvYXdzEXAMPLE=="}));
  EXPECT_EQ(r->signed_headers, "host;x-amz-date;x-amz-security-token");

  SigV4Request unsigned_body = Basic();
  unsigned_body.body.reset();
  SigV4Debug debug;
  r = SignV4ForTest(unsigned_body, Creds("AKID", "secret"), Sts(), &debug);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Header(*r, "X-Amz-Content-SHA256"), "UNSIGNED-PAYLOAD");
  EXPECT_TRUE(debug.canonical_request.ends_with("\nUNSIGNED-PAYLOAD"));

  SigV4Params with_header = Sts();
  with_header.content_sha256_header = true;
  r = SignV4(Basic(), Creds("AKID", "secret"), with_header);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Header(*r, "X-Amz-Content-SHA256"), Sha256Hex(AsBytes("{}")));

  // Different bodies, different signatures.
  SigV4Request other = Basic();
  other.body = "{ }";
  EXPECT_NE(SignV4(other, Creds("AKID", "secret"), Sts())->set.back().value,
            SignV4(Basic(), Creds("AKID", "secret"), Sts())->set.back().value);
}

TEST(SigV4, DuplicateHeadersJoinInOrder) {
  SigV4Request req = Basic();
  req.headers.push_back({"X-Dup", " b "});
  req.headers.push_back({"x-dup", "a"});
  SigV4Debug debug;
  ASSERT_TRUE(SignV4ForTest(req, Creds("AKID", "secret"), Sts(), &debug).ok());
  EXPECT_NE(debug.canonical_request.find("\nx-dup:b,a\n"), std::string::npos);
}

TEST(SigV4, RefusesBadInput) {
  SigV4Request no_host = Basic();
  no_host.headers.clear();
  EXPECT_FALSE(SignV4(no_host, Creds("AKID", "s"), Sts()).ok());
  SigV4Request crlf = Basic();
  crlf.headers.push_back({"X", "a\r\nb"});
  EXPECT_FALSE(SignV4(crlf, Creds("AKID", "s"), Sts()).ok());
  SigV4Request bad_name = Basic();
  bad_name.headers.push_back({"X Y", "a"});
  EXPECT_FALSE(SignV4(bad_name, Creds("AKID", "s"), Sts()).ok());
  SigV4Request bad_path = Basic();
  bad_path.path = "relative";
  EXPECT_FALSE(SignV4(bad_path, Creds("AKID", "s"), Sts()).ok());
  bad_path.path = "/a b";
  EXPECT_FALSE(SignV4(bad_path, Creds("AKID", "s"), Sts()).ok());
  SigV4Request bad_query = Basic();
  bad_query.query = "a=%zz";
  EXPECT_FALSE(SignV4(bad_query, Creds("AKID", "s"), Sts()).ok());
  EXPECT_FALSE(SignV4(Basic(), Creds("AK/ID", "s"), Sts()).ok());
  EXPECT_FALSE(SignV4(Basic(), Creds("", "s"), Sts()).ok());
  EXPECT_FALSE(SignV4(Basic(), Creds("AKID", "s", "tok\nen"), Sts()).ok());
  SigV4Params bad_region = Sts();
  bad_region.region = "eu west";
  EXPECT_FALSE(SignV4(Basic(), Creds("AKID", "s"), bad_region).ok());
}

}  // namespace
}  // namespace sigil::dataplane::inject
