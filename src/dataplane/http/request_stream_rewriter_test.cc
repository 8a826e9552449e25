#include "dataplane/http/request_stream_rewriter.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>

namespace sigil::dataplane::http {
namespace {

// What a run of the rewriter produced: everything it sent upstream, the heads the callback
// saw (serialized before editing), and how it ended.
struct Outcome {
  std::string output;
  std::vector<std::string> heads;
  std::vector<RequestInfo> infos;
  RequestStreamRewriter::State state = RequestStreamRewriter::State::kHttp;
  std::string error_response;
  int error_status = 0;
  bool tainted = false;
  uint64_t forwarded = 0;
  uint64_t dropped = 0;
  size_t taken = 0;  // input bytes taken (dropped ones included)

  // `taken` is compared except after a rejection, where part of the bad line may or may not
  // have been taken before the error, depending on the split (nothing of it is output).
  bool operator==(const Outcome& o) const {
    return output == o.output && heads == o.heads && state == o.state &&
           error_response == o.error_response && tainted == o.tainted && forwarded == o.forwarded &&
           (state == RequestStreamRewriter::State::kRejected || taken == o.taken);
  }
};

void PrintTo(const Outcome& o, std::ostream* os) {
  *os << "{state " << static_cast<int>(o.state) << ", forwarded " << o.forwarded << ", taken "
      << o.taken << ", output " << testing::PrintToString(o.output) << ", error "
      << testing::PrintToString(o.error_response) << "}";
}

// The injector the tests use: drops any Authorization/X-Api-Key the client sent, adds ours.
HeadVerdict Inject(RequestHead& head, const RequestInfo&) {
  head.Remove("authorization");
  head.Remove("x-api-key");
  head.Add("Authorization", "Bearer sk-test");
  return HeadVerdict::Forward();
}

// Feeds `in` cut at `cuts` (ascending offsets), draining all output after each Feed and
// offering what was not taken again, like a relay would.
Outcome RunCuts(std::string_view in, const std::vector<size_t>& cuts,
                RequestStreamRewriter::HeadCallback cb = Inject, RewriterLimits limits = {},
                RequestStreamRewriter::BodyCallback body_cb = nullptr) {
  Outcome o;
  RequestStreamRewriter rw(
      [&](RequestHead& head, const RequestInfo& info) {
        o.heads.push_back(head.Serialize());
        o.infos.push_back(info);
        return cb(head, info);
      },
      limits);
  if (body_cb) rw.set_on_body(body_cb);
  std::string carry;
  size_t pos = 0;
  auto feed = [&](std::string_view piece) {
    carry.append(piece);
    for (int guard = 0; guard < 100000 && !carry.empty(); ++guard) {
      const size_t n = rw.Feed(carry);
      o.taken += n;
      carry.erase(0, n);
      const size_t pending = rw.output().size();
      o.output.append(rw.output());
      rw.Drain(pending);
      if (n == 0 && pending == 0) break;  // stopped (rejected, paused)
    }
  };
  for (size_t cut : cuts) {
    feed(in.substr(pos, cut - pos));
    pos = cut;
  }
  feed(in.substr(pos));
  o.state = rw.state();
  o.error_response = rw.error_response();
  o.error_status = rw.error_status();
  o.tainted = rw.upstream_tainted();
  o.forwarded = rw.requests_forwarded();
  o.dropped = rw.bytes_dropped();
  return o;
}

Outcome RunWhole(std::string_view in, RequestStreamRewriter::HeadCallback cb = Inject,
                 RewriterLimits limits = {},
                 RequestStreamRewriter::BodyCallback body_cb = nullptr) {
  return RunCuts(in, {}, std::move(cb), limits, std::move(body_cb));
}

// Runs `in` whole, split at every single boundary, byte by byte, and in 50 random splits, and
// checks every run matches the whole one. Returns the whole run.
Outcome RunAllSplits(std::string_view in, RequestStreamRewriter::HeadCallback cb = Inject,
                     RewriterLimits limits = {},
                     RequestStreamRewriter::BodyCallback body_cb = nullptr) {
  const Outcome whole = RunWhole(in, cb, limits, body_cb);
  for (size_t i = 1; i < in.size(); ++i) {
    EXPECT_EQ(RunCuts(in, {i}, cb, limits, body_cb), whole) << "split at " << i;
  }
  std::vector<size_t> every;
  for (size_t i = 1; i < in.size(); ++i) every.push_back(i);
  EXPECT_EQ(RunCuts(in, every, cb, limits, body_cb), whole) << "byte by byte";
  std::mt19937 rng(7);
  for (int round = 0; round < 50; ++round) {
    std::vector<size_t> cuts;
    size_t at = 0;
    while (true) {
      at += 1 + rng() % 40;
      if (at >= in.size()) break;
      cuts.push_back(at);
    }
    EXPECT_EQ(RunCuts(in, cuts, cb, limits, body_cb), whole) << "random round " << round;
  }
  return whole;
}

using State = RequestStreamRewriter::State;

TEST(Rewriter, InjectsIntoOneRequest) {
  Outcome o = RunAllSplits(
      "GET /v1/models HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer stolen\r\n"
      "Accept:  */* \r\n\r\n");
  EXPECT_EQ(o.output,
            "GET /v1/models HTTP/1.1\r\nHost: api.example\r\nAccept: */*\r\n"
            "Authorization: Bearer sk-test\r\n\r\n");
  ASSERT_EQ(o.heads.size(), 1u);
  EXPECT_EQ(o.state, State::kHttp);
  EXPECT_EQ(o.forwarded, 1u);
}

// Six pipelined requests of every framing in one buffer.
const std::string kPipeline =
    "GET /a HTTP/1.1\r\nHost: h\r\nX-Api-Key: client-key\r\n\r\n"
    "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\n"
    "hello world"
    "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    "4;ext=v;flag\r\nWiki\r\n5;q=\"a b\"\r\npedia\r\n0\r\nX-Trailer: t1\r\nX-Sum:  ab \r\n\r\n"
    "HEAD /d HTTP/1.1\r\nHost: h\r\n\r\n"
    "\r\n"  // stray CRLF between requests is skipped
    "DELETE /e?x=%20y HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
    "GET /f HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";

const std::string kPipelineOut =
    "GET /a HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer sk-test\r\n\r\n"
    "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n"
    "Authorization: Bearer sk-test\r\n\r\nhello world"
    "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
    "Authorization: Bearer sk-test\r\n\r\n"
    "4;ext=v;flag\r\nWiki\r\n5;q=\"a b\"\r\npedia\r\n0\r\nX-Trailer: t1\r\nX-Sum:  ab \r\n\r\n"
    "HEAD /d HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer sk-test\r\n\r\n"
    "DELETE /e?x=%20y HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
    "Authorization: Bearer sk-test\r\n\r\n"
    "GET /f HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer sk-test\r\n\r\n";

TEST(Rewriter, PipelinedRequestsAtEverySplit) {
  Outcome o = RunAllSplits(kPipeline);
  EXPECT_EQ(o.output, kPipelineOut);
  EXPECT_EQ(o.state, State::kHttp);
  EXPECT_EQ(o.forwarded, 6u);
  ASSERT_EQ(o.infos.size(), 6u);
  EXPECT_EQ(o.infos[1].body, (BodyFraming{BodyKind::kLength, 11}));
  EXPECT_EQ(o.infos[2].body.kind, BodyKind::kChunked);
  EXPECT_TRUE(o.infos[2].expect_continue);
  EXPECT_FALSE(o.infos[0].expect_continue);
  EXPECT_TRUE(o.infos[5].keep_alive);
}

TEST(Rewriter, NoPartialHeadIsEverForwarded) {
  // Where each forwarded head lies in the full output.
  std::vector<std::pair<size_t, size_t>> heads;
  for (const char* start :
       {"GET /a ", "POST /b ", "PUT /c ", "HEAD /d ", "DELETE /e?", "GET /f "}) {
    const size_t at = kPipelineOut.find(start);
    ASSERT_NE(at, std::string::npos);
    heads.emplace_back(at, kPipelineOut.find("\r\n\r\n", at) + 4);
  }
  for (size_t prefix = 0; prefix <= kPipeline.size(); ++prefix) {
    const Outcome o = RunWhole(std::string_view(kPipeline).substr(0, prefix));
    ASSERT_TRUE(kPipelineOut.starts_with(o.output)) << prefix;
    for (const auto& [begin, end] : heads) {
      EXPECT_FALSE(o.output.size() > begin && o.output.size() < end)
          << "prefix " << prefix << " ends inside a head";
    }
  }
}

TEST(Rewriter, ConnectionCloseEndsTheStream) {
  const std::string in =
      "GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
      "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
  Outcome o = RunAllSplits(in);
  EXPECT_EQ(o.state, State::kClosed);
  EXPECT_EQ(o.forwarded, 1u);
  EXPECT_EQ(o.output.find("/2"), std::string::npos);  // never parsed, never sent
  EXPECT_EQ(o.taken, in.size());

  Outcome http10 = RunAllSplits("GET / HTTP/1.0\r\n\r\nGET /x HTTP/1.0\r\n\r\n");
  EXPECT_EQ(http10.state, State::kClosed);
  EXPECT_EQ(http10.forwarded, 1u);
}

// Rejects `in` at every split, with `status`, having forwarded exactly `before` bytes.
void ExpectRejected(const std::string& in, int status, const std::string& before,
                    const std::string& reason_part, RewriterLimits limits = {}) {
  SCOPED_TRACE(in.substr(0, 120));
  Outcome o = RunAllSplits(in, Inject, limits);
  EXPECT_EQ(o.state, State::kRejected);
  EXPECT_EQ(o.error_status, status);
  EXPECT_EQ(o.output, before);
  EXPECT_FALSE(o.tainted);
  EXPECT_TRUE(o.error_response.starts_with("HTTP/1.1 " + std::to_string(status) + " "))
      << o.error_response;
  EXPECT_NE(o.error_response.find("\r\nConnection: close\r\n"), std::string::npos);
  EXPECT_NE(o.error_response.find(reason_part), std::string::npos) << o.error_response;
}

const std::string kFirst = "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n";
const std::string kFirstOut =
    "GET /ok HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer sk-test\r\n\r\n";

TEST(Rewriter, SmugglingShapesAreRefused) {
  const std::pair<std::string, std::string> cases[] = {
      {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n",
       "both Content-Length and Transfer-Encoding"},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
       "both Content-Length and Transfer-Encoding"},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n",
       "whitespace between field name and colon"},
      {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello",
       "whitespace between field name and colon"},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
       "final transfer coding is not chunked"},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
       "final transfer coding is not chunked"},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n\r\n",
       "final transfer coding is not chunked"},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
       "chunked\r\n\r\n",
       "chunked applied twice"},
      {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
       "conflicting Content-Length values"},
      {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 50\r\n\r\n",
       "conflicting Content-Length values"},
      {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", "not a number"},
      {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
       "obsolete line folding"},
      {"GET / HTTP/1.1\nHost: h\r\n\r\n", "bare LF"},
      {"GET / HTTP/1.1\r\nHost: h\n\r\n", "bare LF"},
      {"GET / HTTP/1.1\r\nHost: h\r\n\n", "bare LF"},
      {"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", "bare CR"},
      {"GET / HTTP/1.1\r\nHost: h\r\nX: a\x0b"
       "b\r\n\r\n",
       "control character"},
      {std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 35), "control character"},
      {"GET / HTTP/1.1\r\nHost: h\r\nHost: evil\r\n\r\n", "more than one Host"},
      {"GET / HTTP/1.1\r\n\r\n", "without Host"},
      {"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", "request line"},
      {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       "Transfer-Encoding in an HTTP/1.0 request"},
  };
  for (const auto& [bad, reason] : cases) {
    ExpectRejected(kFirst + bad, 400, kFirstOut, reason);
  }
  ExpectRejected(kFirst + "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, kFirstOut, "version");
}

TEST(Rewriter, ChunkedFramingErrorMidBodyTaintsTheUpstream) {
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string in = head + "3\r\nabc\r\n3\nxyz\r\n0\r\n\r\n";
  Outcome o = RunAllSplits(in);
  EXPECT_EQ(o.state, State::kRejected);
  EXPECT_EQ(o.error_status, 400);
  EXPECT_TRUE(o.tainted);
  EXPECT_EQ(o.output,
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            "Authorization: Bearer sk-test\r\n\r\n3\r\nabc\r\n");
}

TEST(Rewriter, HeadLimits) {
  RewriterLimits limits;
  limits.head.max_bytes = 64;
  limits.head.max_fields = 3;
  const std::string at_limit =
      "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + std::string(28, 'p') + "\r\n\r\n";
  ASSERT_EQ(at_limit.size(), 64u);
  Outcome ok = RunAllSplits(at_limit, Inject, limits);
  EXPECT_EQ(ok.state, State::kHttp);
  EXPECT_EQ(ok.forwarded, 1u);
  const std::string over =
      "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + std::string(29, 'p') + "\r\n\r\n";
  ExpectRejected(over, 431, "", "head too large", limits);
  ExpectRejected("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431, "",
                 "too many header fields", limits);
  ExpectRejected("GET /" + std::string(100, 'a') + " HTTP/1.1\r\n\r\n", 431, "", "head too large",
                 limits);
  // A syntax error inside the limit is found first, whatever the split.
  ExpectRejected("GET / HTTP/1.1\nHost: h" + std::string(100, 'x'), 400, "", "bare LF", limits);
  // Default limits: 16 KiB and 100 fields.
  std::string big = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 99; ++i) big += "X-F" + std::to_string(i) + ": v\r\n";
  Outcome hundred = RunWhole(big + "\r\n");
  EXPECT_EQ(hundred.forwarded, 1u);
  EXPECT_EQ(RunWhole(big + "X-Last: v\r\n\r\n").error_status, 431);
  const std::string pad = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
  EXPECT_EQ(RunWhole(pad + std::string(16 * 1024 - pad.size() - 4, 'v') + "\r\n\r\n").forwarded,
            1u);
  EXPECT_EQ(RunWhole(pad + std::string(16 * 1024 - pad.size() - 3, 'v') + "\r\n\r\n").error_status,
            431);
}

TEST(Rewriter, CallbackRejectsWithItsStatus) {
  auto deny_admin = [](RequestHead& head, const RequestInfo& info) {
    if (head.target.starts_with("/admin")) return HeadVerdict::Reject(403, "path not allowed");
    return Inject(head, info);
  };
  const std::string in =
      kFirst + "POST /admin HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody" + kFirst;
  Outcome o = RunAllSplits(in, deny_admin);
  EXPECT_EQ(o.state, State::kRejected);
  EXPECT_EQ(o.output, kFirstOut);
  EXPECT_EQ(o.forwarded, 1u);
  EXPECT_EQ(o.error_response,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 24\r\nConnection: close\r\n\r\nsigil: path not allowed\n");
}

TEST(Rewriter, InjectedHeaderInjectionIsRefused) {
  // A credential value carrying CR/LF (a broken template, a hostile secret) never reaches the
  // wire: the request is answered 500 and nothing of it is sent.
  for (std::string value : {std::string("k\r\nX-Evil: 1"), std::string("k\nX"),
                            std::string("k\0", 2), std::string(" k")}) {
    auto bad = [value](RequestHead& head, const RequestInfo&) {
      head.Add("Authorization", value);
      return HeadVerdict::Forward();
    };
    Outcome o = RunWhole(kFirst, bad);
    EXPECT_EQ(o.state, State::kRejected);
    EXPECT_EQ(o.error_status, 500);
    EXPECT_EQ(o.output, "");
  }
  auto bad_name = [](RequestHead& head, const RequestInfo&) {
    head.Add("X-Evil:\r\nA", "1");
    return HeadVerdict::Forward();
  };
  EXPECT_EQ(RunWhole(kFirst, bad_name).error_status, 500);
  auto reframe = [](RequestHead& head, const RequestInfo&) {
    head.Add("Content-Length", "10");
    return HeadVerdict::Forward();
  };
  Outcome o = RunWhole(kFirst, reframe);
  EXPECT_EQ(o.error_status, 500);
  EXPECT_NE(o.error_response.find("framing"), std::string::npos);
  // Secret text in a rejection reason with control characters cannot break the response.
  auto weird = [](RequestHead&, const RequestInfo&) { return HeadVerdict::Reject(99, "a\r\nb"); };
  EXPECT_EQ(RunWhole(kFirst, weird).error_response,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 12\r\nConnection: close\r\n\r\nsigil: a??b\n");
}

TEST(Rewriter, EqualContentLengthsAreForwardedAsOne) {
  Outcome o = RunAllSplits(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_EQ(o.output,
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
            "Authorization: Bearer sk-test\r\n\r\nabc");
}

TEST(Rewriter, UpgradePausesUntilTheServerAnswers) {
  const std::string up =
      "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
  const std::string after = "\x81\x05hello-not-http\r\n";
  for (bool switched : {true, false}) {
    Outcome paused = RunAllSplits(up + after);
    EXPECT_EQ(paused.state, State::kPaused);
    EXPECT_EQ(paused.taken, up.size());
    EXPECT_TRUE(paused.infos[0].upgrade);

    RequestStreamRewriter rw(Inject);
    ASSERT_EQ(rw.Feed(up + after), up.size());
    rw.Resume(switched);
    if (switched) {
      EXPECT_EQ(rw.state(), State::kOpaque);
      EXPECT_EQ(rw.Feed(after), after.size());
      EXPECT_TRUE(rw.output().ends_with(after));
    } else {
      EXPECT_EQ(rw.state(), State::kHttp);
      EXPECT_EQ(rw.Feed(after), 0u);  // not HTTP: rejected
      EXPECT_EQ(rw.state(), State::kRejected);
    }
  }
}

TEST(Rewriter, ConnectAndOpaqueVerdict) {
  RequestStreamRewriter rw(Inject);
  const std::string connect = "CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n";
  EXPECT_EQ(rw.Feed(connect + "tunnel bytes"), connect.size());
  EXPECT_EQ(rw.state(), State::kPaused);
  rw.Resume(true);
  EXPECT_EQ(rw.Feed("tunnel bytes"), 12u);
  EXPECT_TRUE(rw.output().ends_with("\r\n\r\ntunnel bytes"));

  auto opaque = [](RequestHead&, const RequestInfo&) { return HeadVerdict::Opaque(); };
  Outcome o = RunAllSplits(kFirst + "anything \n at all\r\n\r\n", opaque);
  EXPECT_EQ(o.state, State::kOpaque);
  EXPECT_EQ(o.output, kFirst + "anything \n at all\r\n\r\n");
}

TEST(Rewriter, ExpectContinueIsPassedOn) {
  RequestStreamRewriter rw(Inject);
  const std::string head =
      "PUT /big HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
  bool saw = false;
  rw.set_on_forwarded([&](const RequestHead& h, const RequestInfo& info) {
    saw = info.expect_continue && h.Find("expect") != nullptr;
  });
  EXPECT_EQ(rw.Feed(head), head.size());
  EXPECT_TRUE(saw);
  // The head goes out before any body byte arrives (the client waits for 100 Continue).
  EXPECT_TRUE(rw.output().ends_with("\r\n\r\n"));
  EXPECT_TRUE(rw.mid_request());
  EXPECT_EQ(rw.Feed("12345"), 5u);
  EXPECT_FALSE(rw.mid_request());
}

TEST(Rewriter, OutputIsBoundedWhenTheCallerDoesNotDrain) {
  RewriterLimits limits;
  limits.max_output = 1024;
  RequestStreamRewriter rw(Inject, limits);
  const std::string body(100000, 'b');
  const std::string in = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + body;
  size_t taken = rw.Feed(in);
  EXPECT_LT(taken, 1200u);
  EXPECT_LE(rw.output().size(), 1024u + 200u);
  EXPECT_EQ(rw.Feed(std::string_view(in).substr(taken)), 0u);  // full until drained
  std::string all(rw.output());
  rw.Drain(rw.output().size());
  for (int guard = 0; guard < 10000 && taken < in.size(); ++guard) {
    taken += rw.Feed(std::string_view(in).substr(taken));
    EXPECT_LE(rw.output().size(), 1024u);
    all += rw.output();
    rw.Drain(rw.output().size());
  }
  EXPECT_EQ(taken, in.size());
  EXPECT_TRUE(all.ends_with(body));

  // Many tiny pipelined requests: a new head is not started while the output is full.
  std::string many;
  for (int i = 0; i < 1000; ++i) many += kFirst;
  RequestStreamRewriter rw2(Inject, limits);
  rw2.Feed(many);
  EXPECT_LE(rw2.output().size(), 1024u + kFirstOut.size());
}

TEST(Rewriter, MidRequestAtEof) {
  RequestStreamRewriter rw(Inject);
  EXPECT_FALSE(rw.mid_request());
  rw.Feed("GET / HTTP/1.1\r\nHo");
  EXPECT_TRUE(rw.mid_request());
  EXPECT_TRUE(rw.output().empty());  // a partial head is never forwarded
}

TEST(Rewriter, AbsoluteFormAndOptionsPassThrough) {
  Outcome o = RunAllSplits(
      "GET http://api.example/x HTTP/1.1\r\nHost: api.example\r\n\r\n"
      "OPTIONS * HTTP/1.1\r\nHost: api.example\r\n\r\n");
  EXPECT_EQ(o.forwarded, 2u);
  EXPECT_EQ(o.infos[0].form, TargetForm::kAbsolute);
  EXPECT_EQ(o.infos[1].form, TargetForm::kAsterisk);
}

// Buffered bodies: targets starting with /sign are held until their body is in; the body
// callback then adds a field naming what it saw (a stand-in for a SigV4 payload hash).
HeadVerdict BufferSigned(RequestHead& head, const RequestInfo& info) {
  if (head.target.starts_with("/sign")) return HeadVerdict::BufferBody();
  return Inject(head, info);
}
HeadVerdict SignBody(RequestHead& head, const RequestInfo& info, std::string_view body) {
  if (head.target.starts_with("/sign-refuse")) return HeadVerdict::Reject(403, "refused");
  if (head.target.starts_with("/sign-reframe")) {
    head.Remove("content-length");
    head.Add("Transfer-Encoding", "chunked");
    return HeadVerdict::Forward();
  }
  const bool length = info.body.kind == BodyKind::kLength;
  head.Add("X-Signed", std::to_string(body.size()) + ":" + std::string(body) +
                           (length ? ":cl" + std::to_string(info.body.length) : ":none"));
  return HeadVerdict::Forward();
}

TEST(RewriterBuffer, BodiesAreHeldSignedAndReframedAtEverySplit) {
  const std::string in =
      "GET /sign-get HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /sign-len HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
      "POST /sign-chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
      "X-After: 1\r\n\r\n3;e=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
      "POST /sign-empty HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
      kFirst;
  Outcome o = RunAllSplits(in, BufferSigned, {}, SignBody);
  EXPECT_EQ(o.state, State::kHttp);
  EXPECT_EQ(o.forwarded, 5u);
  EXPECT_EQ(o.output,
            "GET /sign-get HTTP/1.1\r\nHost: h\r\nX-Signed: 0::none\r\n\r\n"
            "POST /sign-len HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
            "X-Signed: 5:hello:cl5\r\n\r\nhello"
            "POST /sign-chunked HTTP/1.1\r\nHost: h\r\nX-After: 1\r\nContent-Length: 5\r\n"
            "X-Signed: 5:abcde:cl5\r\n\r\nabcde"
            "POST /sign-empty HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
            "X-Signed: 0::cl0\r\n\r\n" +
                kFirstOut);
}

TEST(RewriterBuffer, LimitIsExactAndNothingOfALargerBodyIsForwarded) {
  RewriterLimits limits;
  limits.max_buffered_body = 64;
  const std::string exact(64, 'x'), over(65, 'y');
  auto length = [](const std::string& body) {
    return "POST /sign HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
  };
  auto chunked = [](const std::string& body) {
    std::string out = "POST /sign HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (size_t at = 0; at < body.size(); at += 10) {
      const std::string piece = body.substr(at, 10);
      char size[8];
      std::snprintf(size, sizeof size, "%zx", piece.size());
      out += std::string(size) + "\r\n" + piece + "\r\n";
    }
    return out + "0\r\n\r\n";
  };
  // At the limit: forwarded (chunked re-framed with Content-Length).
  Outcome o = RunAllSplits(length(exact) + chunked(exact), BufferSigned, limits, SignBody);
  EXPECT_EQ(o.forwarded, 2u);
  EXPECT_EQ(o.state, State::kHttp);
  EXPECT_NE(o.output.find("X-Signed: 64:" + exact), std::string::npos);
  EXPECT_EQ(o.output.find("Transfer-Encoding"), std::string::npos);
  // One past it, announced by Content-Length: refused at the head; what came before stays.
  o = RunAllSplits(kFirst + length(over) + kFirst, BufferSigned, limits, SignBody);
  EXPECT_EQ(o.state, State::kRejected);
  EXPECT_EQ(o.error_status, 413);
  EXPECT_EQ(o.output, kFirstOut);
  EXPECT_FALSE(o.tainted);
  EXPECT_NE(o.error_response.find("65 bytes is larger than 64 bytes"), std::string::npos);
  // One past it in a chunked body: refused when the data passes the limit, nothing forwarded.
  o = RunAllSplits(kFirst + chunked(over), BufferSigned, limits, SignBody);
  EXPECT_EQ(o.state, State::kRejected);
  EXPECT_EQ(o.error_status, 413);
  EXPECT_EQ(o.output, kFirstOut);
  EXPECT_FALSE(o.tainted);
}

TEST(RewriterBuffer, MemoryStaysBoundedWhileBuffering) {
  RewriterLimits limits;
  limits.max_buffered_body = 1000;
  limits.max_output = 256;
  RequestStreamRewriter rw(BufferSigned, limits);
  rw.set_on_body(SignBody);
  std::string in = "POST /sign HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 10000; ++i) in += "a\r\n0123456789\r\n";
  size_t taken = 0;
  for (int guard = 0; guard < 100000 && rw.state() == State::kHttp; ++guard) {
    const size_t n = rw.Feed(std::string_view(in).substr(taken, 7));
    taken += n;
    EXPECT_LE(rw.buffered_bytes(), 1000u);
    EXPECT_TRUE(rw.output().empty());
    if (n == 0) break;
  }
  EXPECT_EQ(rw.state(), State::kRejected);
  EXPECT_EQ(rw.error_status(), 413);
  EXPECT_EQ(rw.buffered_bytes(), 0u);  // released
  EXPECT_LT(taken, 1700u);             // the head, ~100 chunks of 10 bytes, and no more
}

TEST(RewriterBuffer, ExpectContinueIsAnsweredByTheCallerAndRemoved) {
  RequestStreamRewriter rw(BufferSigned);
  rw.set_on_body(SignBody);
  const std::string head =
      "PUT /sign HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
  EXPECT_EQ(rw.Feed(head), head.size());
  EXPECT_TRUE(rw.output().empty());  // held: the body is needed first
  EXPECT_TRUE(rw.continue_wanted());
  rw.ContinueSent();
  EXPECT_FALSE(rw.continue_wanted());
  EXPECT_EQ(rw.Feed("12345"), 5u);
  EXPECT_EQ(rw.output(),
            "PUT /sign HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Signed: 5:12345:cl5\r\n"
            "\r\n12345");
  // Without a body there is nothing to wait for.
  RequestStreamRewriter rw2(BufferSigned);
  rw2.set_on_body(SignBody);
  rw2.Feed("GET /sign HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_FALSE(rw2.continue_wanted());
  EXPECT_EQ(rw2.requests_forwarded(), 1u);
}

TEST(RewriterBuffer, RefusalsAndBadEdits) {
  // The body callback refuses: nothing of the request, earlier requests intact.
  Outcome o =
      RunAllSplits(kFirst + "POST /sign-refuse HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
                   BufferSigned, {}, SignBody);
  EXPECT_EQ(o.error_status, 403);
  EXPECT_EQ(o.output, kFirstOut);
  EXPECT_FALSE(o.tainted);
  // A changed framing after buffering is refused.
  o = RunWhole("POST /sign-reframe HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
               BufferSigned, {}, SignBody);
  EXPECT_EQ(o.error_status, 500);
  EXPECT_TRUE(o.output.empty());
  // Trailer fields cannot survive re-framing: refused rather than dropped.
  o = RunAllSplits(
      "POST /sign HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\na\r\n0\r\nX-Trailer: t\r\n\r\n",
      BufferSigned, {}, SignBody);
  EXPECT_EQ(o.error_status, 501);
  EXPECT_TRUE(o.output.empty());
  // A broken chunk inside a buffered body: 400, and the upstream saw nothing of it.
  o = RunAllSplits("POST /sign HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
                   BufferSigned, {}, SignBody);
  EXPECT_EQ(o.error_status, 400);
  EXPECT_FALSE(o.tainted);
  EXPECT_TRUE(o.output.empty());
  // BufferBody without a body callback is a caller bug: 500, nothing forwarded.
  o = RunWhole("GET /sign HTTP/1.1\r\nHost: h\r\n\r\n", BufferSigned);
  EXPECT_EQ(o.error_status, 500);
}

}  // namespace
}  // namespace sigil::dataplane::http
