#include "dataplane/http/body_reader.h"

#include <gtest/gtest.h>

#include <limits>

namespace sigil::dataplane::http {
namespace {

constexpr size_t kNoLimit = std::numeric_limits<size_t>::max();

// Feeds `in` in pieces of `step` bytes; the forwarded bytes, or the error message.
struct ReadResult {
  std::string out;
  size_t consumed = 0;
  bool done = false;
  std::string error;
};
ReadResult Read(BodyFraming framing, std::string_view in, size_t step, ChunkLimits limits = {}) {
  BodyReader reader(framing, limits);
  ReadResult run;
  while (run.consumed < in.size() && !reader.done()) {
    const std::string_view piece = in.substr(run.consumed, step);
    auto n = reader.Consume(piece, &run.out, kNoLimit);
    if (!n.ok()) {
      run.error = n.error().message();
      return run;
    }
    run.consumed += *n;
    if (*n < piece.size()) break;  // the body ended inside this piece
  }
  run.done = reader.done();
  return run;
}

TEST(ChunkLine, Sizes) {
  EXPECT_EQ(*ParseChunkLine("0"), 0u);
  EXPECT_EQ(*ParseChunkLine("1a"), 26u);
  EXPECT_EQ(*ParseChunkLine("00FF"), 255u);
  EXPECT_EQ(*ParseChunkLine("ffffffffffffffff"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*ParseChunkLine("5;name"), 5u);
  EXPECT_EQ(*ParseChunkLine("5;a=b;c;d=\"quoted; \\\" value\""), 5u);
}

TEST(ChunkLine, Rejections) {
  for (const char* bad :
       {"", "x", "-1", "0x5", "1ffffffffffffffff", "5 ", " 5", "5 ;a", "5; a", "5;a =b", "5;a= b",
        "5;", "5;=b", "5;a=", "5;a=\"open", "5;a=b c", "5;a=\"x\"y", "+5", "5,6"}) {
    EXPECT_FALSE(ParseChunkLine(bad).ok()) << bad;
  }
}

TEST(BodyReader, ContentLengthStopsAtTheEnd) {
  const std::string in = "hello world, then the next request";
  for (size_t step : {size_t{1}, size_t{3}, in.size()}) {
    ReadResult run = Read({BodyKind::kLength, 11}, in, step);
    EXPECT_TRUE(run.error.empty()) << run.error;
    EXPECT_TRUE(run.done);
    EXPECT_EQ(run.out, "hello world");
    EXPECT_EQ(run.consumed, 11u);
  }
}

TEST(BodyReader, ChunkedPassesThroughVerbatim) {
  const std::string body =
      "5;ext=1\r\nhello\r\n"
      "1A;name=\"va lue\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
      "0;last\r\nX-Checksum: abc\r\nX-Other:  2 \r\n\r\n";
  for (size_t step = 1; step <= body.size(); ++step) {
    ReadResult run = Read({BodyKind::kChunked, 0}, body + "GET / HTTP/1.1\r\n", step);
    ASSERT_TRUE(run.error.empty()) << step << ": " << run.error;
    EXPECT_TRUE(run.done) << step;
    EXPECT_EQ(run.out, body) << step;
    EXPECT_EQ(run.consumed, body.size()) << step;
  }
}

TEST(BodyReader, ConsumeDataDecodesChunkedAtEverySplit) {
  const std::string body =
      "5;ext=1\r\nhello\r\n"
      "1A;name=\"va lue\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
      "0;last\r\nX-Checksum: abc\r\n\r\n";
  const std::string in = body + "GET / HTTP/1.1\r\n";
  for (size_t step = 1; step <= in.size(); ++step) {
    BodyReader reader({BodyKind::kChunked, 0}, {});
    std::string data;
    size_t consumed = 0;
    while (consumed < in.size() && !reader.done()) {
      auto n = reader.ConsumeData(in.substr(consumed, step), &data, kNoLimit);
      ASSERT_TRUE(n.ok()) << step << ": " << n.error().message();
      consumed += *n;
    }
    EXPECT_TRUE(reader.done()) << step;
    EXPECT_EQ(consumed, body.size()) << step;
    EXPECT_EQ(data, "helloabcdefghijklmnopqrstuvwxyz") << step;
    EXPECT_TRUE(reader.had_trailer_fields()) << step;
  }
  // Content-Length: the data as is; max_data bounds each call.
  BodyReader reader({BodyKind::kLength, 10}, {});
  std::string data;
  EXPECT_EQ(*reader.ConsumeData("0123456789rest", &data, 4), 4u);
  EXPECT_EQ(*reader.ConsumeData("456789rest", &data, 100), 6u);
  EXPECT_TRUE(reader.done());
  EXPECT_FALSE(reader.had_trailer_fields());
  EXPECT_EQ(data, "0123456789");
  // Framing errors are the same as for Consume.
  BodyReader bad({BodyKind::kChunked, 0}, {});
  EXPECT_FALSE(bad.ConsumeData("5\r\nhelloX", &data, kNoLimit).ok());
}

TEST(BodyReader, ChunkedWithoutTrailers) {
  ReadResult run = Read({BodyKind::kChunked, 0}, "0\r\n\r\n", 1);
  EXPECT_TRUE(run.done);
  EXPECT_EQ(run.out, "0\r\n\r\n");
}

TEST(BodyReader, ChunkedFramingErrors) {
  const std::pair<std::string, std::string> cases[] = {
      {"5\nhello\r\n0\r\n\r\n", "bare LF after chunk size"},
      {"5\r\nhello\n0\r\n\r\n", "not followed by CRLF"},
      {"5\r\nhelloX\r\n0\r\n\r\n", "not followed by CRLF"},
      {"5\r\nhello\rX0\r\n\r\n", "not followed by CRLF"},
      {"z\r\n", "hex digit"},
      {"0\r\nX-T: a\n\r\n", "bare LF"},
      {"0\r\nX-T : a\r\n\r\n", "whitespace between field name and colon"},
      {"0\r\n folded\r\n\r\n", "obsolete line folding"},
      {"0\r\nX-T: a\rb\r\n\r\n", "bare CR"},
  };
  for (const auto& [in, want] : cases) {
    for (size_t step : {size_t{1}, in.size()}) {
      ReadResult run = Read({BodyKind::kChunked, 0}, in, step);
      EXPECT_NE(run.error.find(want), std::string::npos) << in << " -> " << run.error;
    }
  }
}

TEST(BodyReader, ChunkLineAndTrailerLimits) {
  ChunkLimits limits;
  limits.max_chunk_line = 8;
  EXPECT_TRUE(Read({BodyKind::kChunked, 0}, "1;abcd\r\nx\r\n0\r\n\r\n", 1, limits).done);
  EXPECT_NE(Read({BodyKind::kChunked, 0}, "1;abcde\r\nx\r\n", 1, limits).error.find("too long"),
            std::string::npos);
  limits.trailers.max_fields = 1;
  EXPECT_TRUE(Read({BodyKind::kChunked, 0}, "0\r\nA: 1\r\n\r\n", 1, limits).done);
  EXPECT_NE(Read({BodyKind::kChunked, 0}, "0\r\nA: 1\r\nB: 2\r\n\r\n", 1, limits)
                .error.find("too many trailer fields"),
            std::string::npos);
  limits.trailers.max_bytes = 10;
  EXPECT_NE(Read({BodyKind::kChunked, 0}, "0\r\nA: 123456789\r\n\r\n", 1, limits)
                .error.find("trailer section too large"),
            std::string::npos);
}

TEST(BodyReader, MaxDataBoundsEachCall) {
  BodyReader reader({BodyKind::kLength, 10}, {});
  std::string out;
  auto n = reader.Consume("0123456789", &out, 4);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 4u);
  EXPECT_EQ(out, "0123");
  n = reader.Consume("456789", &out, 0);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  n = reader.Consume("456789", &out, 100);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 6u);
  EXPECT_TRUE(reader.done());
}

TEST(BodyReader, NoneAndUntilClose) {
  BodyReader none({BodyKind::kNone, 0}, {});
  EXPECT_TRUE(none.done());
  BodyReader zero({BodyKind::kLength, 0}, {});
  EXPECT_TRUE(zero.done());
  BodyReader until({BodyKind::kUntilClose, 0}, {});
  std::string out;
  auto n = until.Consume("anything at all", &out, kNoLimit);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 15u);
  EXPECT_FALSE(until.done());
}

}  // namespace
}  // namespace sigil::dataplane::http
