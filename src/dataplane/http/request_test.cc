#include "dataplane/http/request.h"

#include <gtest/gtest.h>

namespace sigil::dataplane::http {
namespace {

RequestHead Head(std::string line, std::vector<HeaderField> fields) {
  auto head = ParseRequestLine(line);
  EXPECT_TRUE(head.ok()) << line;
  if (!head.ok()) return {};
  head->headers = std::move(fields);
  return *head;
}

Result<RequestInfo> Analyze(std::string line, std::vector<HeaderField> fields) {
  return AnalyzeRequest(Head(std::move(line), std::move(fields)), HeadLimits{});
}

TEST(RequestLine, Parses) {
  auto head = ParseRequestLine("POST /v1/chat?x=1 HTTP/1.1");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->method, "POST");
  EXPECT_EQ(head->target, "/v1/chat?x=1");
  EXPECT_EQ(head->minor_version, 1);
  EXPECT_EQ(ParseRequestLine("GET / HTTP/1.0")->minor_version, 0);
}

TEST(RequestLine, Rejections) {
  for (const char* bad :
       {"GET /", "GET  / HTTP/1.1", "GET / HTTP/1.1 ", " GET / HTTP/1.1", "GET / http/1.1",
        "GET / HTTP/1", "GET / HTTP/1.1x", "G@T / HTTP/1.1", "GET\t/ HTTP/1.1", "GET / HTTP/11"}) {
    auto head = ParseRequestLine(bad);
    ASSERT_FALSE(head.ok()) << bad;
    EXPECT_EQ(head.error().code(), ErrorCode::kInvalidArgument) << bad;
  }
  for (const char* unsupported : {"GET / HTTP/2.0", "GET / HTTP/0.9", "GET / HTTP/1.2"}) {
    auto head = ParseRequestLine(unsupported);
    ASSERT_FALSE(head.ok());
    EXPECT_EQ(head.error().code(), ErrorCode::kUnimplemented) << unsupported;
  }
}

TEST(Analyze, PlainGet) {
  auto info = Analyze("GET / HTTP/1.1", {{"Host", "api.example"}});
  ASSERT_TRUE(info.ok()) << info.error().ToString();
  EXPECT_EQ(info->body.kind, BodyKind::kNone);
  EXPECT_TRUE(info->keep_alive);
  EXPECT_FALSE(info->expect_continue);
  EXPECT_FALSE(info->upgrade);
  EXPECT_FALSE(info->connect);
  EXPECT_EQ(info->form, TargetForm::kOrigin);
}

TEST(Analyze, TargetForms) {
  EXPECT_EQ(Analyze("GET http://a.example/x HTTP/1.1", {{"Host", "a.example"}})->form,
            TargetForm::kAbsolute);
  EXPECT_EQ(Analyze("OPTIONS * HTTP/1.1", {{"Host", "a"}})->form, TargetForm::kAsterisk);
  auto connect = Analyze("CONNECT a.example:443 HTTP/1.1", {{"Host", "a.example:443"}});
  ASSERT_TRUE(connect.ok());
  EXPECT_EQ(connect->form, TargetForm::kAuthority);
  EXPECT_TRUE(connect->connect);
  for (const char* bad :
       {"GET * HTTP/1.1", "GET a.example:443 HTTP/1.1", "CONNECT / HTTP/1.1",
        "CONNECT a.example HTTP/1.1", "CONNECT a/b:443 HTTP/1.1", "GET /x#frag HTTP/1.1",
        "GET /caf\xc3\xa9 HTTP/1.1", "GET x HTTP/1.1", "GET 1http://a/ HTTP/1.1"}) {
    EXPECT_FALSE(Analyze(bad, {{"Host", "a"}}).ok()) << bad;
  }
}

TEST(Analyze, HostRules) {
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {}).ok());
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {{"Host", "a"}, {"host", "a"}}).ok());
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {{"Host", "a b"}}).ok());
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {{"Host", "a/b"}}).ok());
  EXPECT_TRUE(Analyze("GET / HTTP/1.1", {{"Host", "[2001:db8::1]:8080"}}).ok());
  EXPECT_TRUE(Analyze("GET / HTTP/1.0", {}).ok());
}

TEST(Analyze, ContentLength) {
  auto info = Analyze("POST / HTTP/1.1", {{"Host", "a"}, {"Content-Length", "42"}});
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->body, (BodyFraming{BodyKind::kLength, 42}));
  // Equal repeats are one length.
  info = Analyze("POST / HTTP/1.1",
                 {{"Host", "a"}, {"Content-Length", "42, 42"}, {"content-length", "042"}});
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->body.length, 42u);
  for (const char* bad :
       {"", "-1", "+5", "5 5", "0x10", "1e3", "4611686018427387905", "99999999999999999999999"}) {
    EXPECT_FALSE(Analyze("POST / HTTP/1.1", {{"Host", "a"}, {"Content-Length", bad}}).ok()) << bad;
  }
  EXPECT_FALSE(
      Analyze("POST / HTTP/1.1", {{"Host", "a"}, {"Content-Length", "5"}, {"Content-Length", "6"}})
          .ok());
  EXPECT_FALSE(Analyze("POST / HTTP/1.1", {{"Host", "a"}, {"Content-Length", "5, 6"}}).ok());
}

TEST(Analyze, TransferEncoding) {
  auto info = Analyze("POST / HTTP/1.1", {{"Host", "a"}, {"Transfer-Encoding", "chunked"}});
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->body.kind, BodyKind::kChunked);
  EXPECT_TRUE(
      Analyze("POST / HTTP/1.1", {{"Host", "a"}, {"Transfer-Encoding", "gzip, CHUNKED"}}).ok());
  EXPECT_TRUE(
      Analyze("POST / HTTP/1.1",
              {{"Host", "a"}, {"Transfer-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}})
          .ok());
  for (const char* bad : {"identity", "chunked, gzip", "chunked, chunked", "xchunked",
                          "chunked;q=1", "\"chunked\"", ",", ""}) {
    EXPECT_FALSE(Analyze("POST / HTTP/1.1", {{"Host", "a"}, {"Transfer-Encoding", bad}}).ok())
        << bad;
  }
  // The classic smuggling shapes.
  EXPECT_FALSE(Analyze("POST / HTTP/1.1",
                       {{"Host", "a"}, {"Content-Length", "4"}, {"Transfer-Encoding", "chunked"}})
                   .ok());
  EXPECT_FALSE(
      Analyze("POST / HTTP/1.1",
              {{"Host", "a"}, {"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "x"}})
          .ok());
  EXPECT_FALSE(Analyze("POST / HTTP/1.0", {{"Transfer-Encoding", "chunked"}}).ok());
  EXPECT_FALSE(
      Analyze("CONNECT a:443 HTTP/1.1", {{"Host", "a:443"}, {"Content-Length", "1"}}).ok());
}

TEST(Analyze, ConnectionOptions) {
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {{"Host", "a"}, {"Connection", "Close"}})->keep_alive);
  EXPECT_FALSE(Analyze("GET / HTTP/1.0", {})->keep_alive);
  EXPECT_TRUE(Analyze("GET / HTTP/1.0", {{"Connection", "Keep-Alive"}})->keep_alive);
  EXPECT_FALSE(Analyze("GET / HTTP/1.0", {{"Connection", "keep-alive"}, {"Connection", "close"}})
                   ->keep_alive);
  EXPECT_TRUE(Analyze("PUT / HTTP/1.1",
                      {{"Host", "a"}, {"Expect", "100-Continue"}, {"Content-Length", "3"}})
                  ->expect_continue);
  EXPECT_FALSE(Analyze("PUT / HTTP/1.0", {{"Expect", "100-continue"}})->expect_continue);
  auto up =
      Analyze("GET /ws HTTP/1.1",
              {{"Host", "a"}, {"Connection", "keep-alive, Upgrade"}, {"Upgrade", "websocket"}});
  EXPECT_TRUE(up->upgrade);
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {{"Host", "a"}, {"Upgrade", "websocket"}})->upgrade);
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {{"Host", "a"}, {"Connection", "upgrade"}})->upgrade);
}

TEST(Analyze, FieldLimitAndEditedValues) {
  std::vector<HeaderField> fields{{"Host", "a"}};
  for (int i = 0; i < 99; ++i) fields.push_back({"X-" + std::to_string(i), "v"});
  EXPECT_TRUE(Analyze("GET / HTTP/1.1", fields).ok());
  fields.push_back({"X-100", "v"});
  auto info = Analyze("GET / HTTP/1.1", fields);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.error().code(), ErrorCode::kResourceExhausted);
  // What a callback could add: CR/LF, a bad name, untrimmed whitespace.
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {{"Host", "a"}, {"X", "a\r\nEvil: 1"}}).ok());
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {{"Host", "a"}, {"X Y", "1"}}).ok());
  EXPECT_FALSE(Analyze("GET / HTTP/1.1", {{"Host", "a"}, {"X", " 1"}}).ok());
}

TEST(RequestHead, EditAndSerialize) {
  RequestHead head =
      Head("GET /x HTTP/1.1",
           {{"Host", "a"}, {"authorization", "old"}, {"Accept", "*/*"}, {"Authorization", "old2"}});
  EXPECT_EQ(head.Count("AUTHORIZATION"), 2u);
  EXPECT_EQ(head.Remove("Authorization"), 2u);
  head.Add("Authorization", "Bearer new");
  EXPECT_EQ(head.Find("authorization")->value, "Bearer new");
  EXPECT_EQ(head.Find("missing"), nullptr);
  EXPECT_EQ(head.Serialize(),
            "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nAuthorization: Bearer new\r\n\r\n");
}

TEST(RequestHead, CollapseContentLength) {
  RequestHead head =
      Head("POST / HTTP/1.1",
           {{"Host", "a"}, {"content-length", "05"}, {"X", "1"}, {"Content-Length", "5, 5"}});
  auto info = AnalyzeRequest(head, {});
  ASSERT_TRUE(info.ok());
  CollapseContentLength(head, *info);
  EXPECT_EQ(head.Serialize(), "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nX: 1\r\n\r\n");
}

}  // namespace
}  // namespace sigil::dataplane::http
