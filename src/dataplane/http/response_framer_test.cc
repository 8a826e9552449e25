#include "dataplane/http/response_framer.h"

#include <gtest/gtest.h>

namespace sigil::dataplane::http {
namespace {

struct Seen {
  uint64_t completed = 0;
  size_t outstanding = 0;
  bool switched = false;
  int last_status = 0;
  std::string error;
  bool operator==(const Seen&) const = default;
};

Seen Follow(const std::vector<std::string>& methods, std::string_view in, size_t step) {
  ResponseFramer framer;
  for (const auto& m : methods) EXPECT_TRUE(framer.ExpectResponse(m).ok());
  Seen seen;
  for (size_t pos = 0; pos < in.size(); pos += step) {
    auto r = framer.Feed(in.substr(pos, step));
    if (!r.ok()) {
      seen.error = r.error().message();
      break;
    }
  }
  seen.completed = framer.completed();
  seen.outstanding = framer.outstanding();
  seen.switched = framer.switched();
  seen.last_status = framer.last_status();
  return seen;
}

Seen RunAllSteps(const std::vector<std::string>& methods, std::string_view in) {
  const Seen whole = Follow(methods, in, in.size());
  for (size_t step = 1; step < in.size(); ++step) {
    EXPECT_EQ(Follow(methods, in, step), whole) << "step " << step;
  }
  return whole;
}

TEST(ResponseFramer, PipelinedResponsesOfEveryShape) {
  const std::string in =
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
      "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"  // HEAD: no body despite the length
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
      "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n"
      "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"
      "HTTP/1.1 304 Not Modified\r\n\r\n"
      "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
  Seen seen = RunAllSteps({"GET", "HEAD", "PUT", "GET", "GET", "GET", "GET"}, in);
  EXPECT_EQ(seen.error, "");
  EXPECT_EQ(seen.completed, 6u);
  EXPECT_EQ(seen.outstanding, 1u);  // the seventh request still waits for its response
  EXPECT_FALSE(seen.switched);
}

TEST(ResponseFramer, InterimDoesNotCompleteARequest) {
  Seen seen = RunAllSteps({"PUT"}, "HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_EQ(seen.completed, 0u);
  EXPECT_EQ(seen.outstanding, 1u);
  EXPECT_EQ(seen.last_status, 100);
}

TEST(ResponseFramer, UntilCloseAndSwitches) {
  ResponseFramer framer;
  ASSERT_TRUE(framer.ExpectResponse("GET").ok());
  ASSERT_TRUE(framer.Feed("HTTP/1.0 200 OK\r\n\r\nbody until close").ok());
  EXPECT_TRUE(framer.until_close());
  EXPECT_EQ(framer.completed(), 0u);

  Seen up = RunAllSteps({"GET"},
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
                        "\x81\x02hi not http");
  EXPECT_TRUE(up.switched);
  EXPECT_EQ(up.completed, 1u);
  Seen connect = RunAllSteps({"CONNECT"}, "HTTP/1.1 200 Connection established\r\n\r\nraw");
  EXPECT_TRUE(connect.switched);
  Seen refused = RunAllSteps({"CONNECT", "GET"},
                             "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"
                             "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  EXPECT_FALSE(refused.switched);
  EXPECT_EQ(refused.completed, 2u);
  Seen gzip = RunAllSteps({"GET"}, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz");
  EXPECT_EQ(gzip.completed, 0u);
}

TEST(ResponseFramer, Errors) {
  EXPECT_NE(Follow({}, "HTTP/1.1 200 OK\r\n\r\n", 100).error.find("without a request"),
            std::string::npos);
  for (const char* bad : {"HTTP/1.1 2000 OK\r\n\r\n", "HTTP/2 200 OK\r\n\r\n",
                          "HTTP/1.1 200 OK\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "garbage\r\n"}) {
    EXPECT_NE(Follow({"GET"}, bad, 1).error, "") << bad;
    EXPECT_EQ(Follow({"GET"}, bad, 1).error, Follow({"GET"}, bad, 1000).error) << bad;
  }
  ResponseLimits limits;
  limits.max_outstanding = 2;
  ResponseFramer framer(limits);
  EXPECT_TRUE(framer.ExpectResponse("GET").ok());
  EXPECT_TRUE(framer.ExpectResponse("GET").ok());
  EXPECT_FALSE(framer.ExpectResponse("GET").ok());
}

}  // namespace
}  // namespace sigil::dataplane::http
