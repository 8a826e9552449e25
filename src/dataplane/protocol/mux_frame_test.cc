// sigil/2 frame codec: round trips and every malformed shape the parser must refuse.
#include "dataplane/protocol/mux_frame.h"

#include <gtest/gtest.h>

namespace sigil::dataplane::mux {
namespace {

std::string Header(uint8_t type, uint8_t flags, uint16_t len, uint32_t stream) {
  std::string h(8, '\0');
  h[0] = static_cast<char>(type);
  h[1] = static_cast<char>(flags);
  h[2] = static_cast<char>(len >> 8);
  h[3] = static_cast<char>(len & 0xff);
  h[4] = static_cast<char>(stream >> 24);
  h[5] = static_cast<char>((stream >> 16) & 0xff);
  h[6] = static_cast<char>((stream >> 8) & 0xff);
  h[7] = static_cast<char>(stream & 0xff);
  return h;
}

TEST(MuxFrame, OpenRoundTripV4AndV6) {
  for (const char* text : {"10.0.0.2:8080", "[2001:db8::1]:443"}) {
    auto dst = Destination::Parse(text);
    ASSERT_TRUE(dst.ok());
    std::string wire = EncodeOpen(7, *dst);
    Frame f;
    auto n = ParseFrame(wire, &f);
    ASSERT_TRUE(n.ok()) << n.error().ToString();
    EXPECT_EQ(*n, wire.size());
    EXPECT_EQ(f.type, FrameType::kOpen);
    EXPECT_EQ(f.stream, 7u);
    EXPECT_EQ(f.open_dst, *dst);
  }
}

TEST(MuxFrame, ReplyWindowDataFinRstRoundTrip) {
  Frame f;
  std::string r = EncodeReply(3, 403, "no AccessPolicy allows\r\nit");
  ASSERT_EQ(*ParseFrame(r, &f), r.size());
  EXPECT_EQ(f.reply_code, 403);
  EXPECT_EQ(f.reply_reason, "no AccessPolicy allows??it");

  std::string w = EncodeWindow(5, 65536);
  ASSERT_EQ(*ParseFrame(w, &f), w.size());
  EXPECT_EQ(f.type, FrameType::kWindow);
  EXPECT_EQ(f.window_increment, 65536u);

  std::string d = Header(3, 0, 5, 9) + "hello";
  ASSERT_EQ(*ParseFrame(d, &f), d.size());
  EXPECT_EQ(f.type, FrameType::kData);
  EXPECT_EQ(f.payload, "hello");

  for (FrameType t : {FrameType::kFin, FrameType::kRst}) {
    std::string e = EncodeEmpty(t, 0xfffffff1u);
    ASSERT_EQ(*ParseFrame(e, &f), 8u);
    EXPECT_EQ(f.type, t);
    EXPECT_EQ(f.stream, 0xfffffff1u);
  }
}

TEST(MuxFrame, LongReasonIsCut) {
  Frame f;
  std::string r = EncodeReply(1, 502, std::string(1000, 'x'));
  ASSERT_TRUE(ParseFrame(r, &f).ok());
  EXPECT_EQ(f.reply_reason.size(), kMaxReasonBytes);
}

TEST(MuxFrame, IncompleteNeedsMore) {
  std::string d = Header(3, 0, 5, 1) + "hello";
  Frame f;
  for (size_t i = 0; i < d.size(); ++i) {
    auto n = ParseFrame(std::string_view(d).substr(0, i), &f);
    ASSERT_TRUE(n.ok()) << i;
    EXPECT_EQ(*n, 0u) << i;
  }
}

TEST(MuxFrame, PipelinedFramesParseOneAtATime) {
  std::string wire = EncodeWindow(1, 10) + EncodeEmpty(FrameType::kFin, 1);
  Frame f;
  auto n = ParseFrame(wire, &f);
  ASSERT_EQ(*n, 12u);
  EXPECT_EQ(f.type, FrameType::kWindow);
  ASSERT_EQ(*ParseFrame(std::string_view(wire).substr(*n), &f), 8u);
  EXPECT_EQ(f.type, FrameType::kFin);
}

TEST(MuxFrame, RejectsMalformed) {
  Frame f;
  auto bad = [&](const std::string& wire, const std::string& why) {
    auto n = ParseFrame(wire, &f);
    ASSERT_FALSE(n.ok()) << why;
    EXPECT_NE(n.error().message().find(why), std::string::npos) << n.error().message();
  };
  bad(Header(0, 0, 0, 1), "unknown type 0");
  bad(Header(7, 0, 0, 1), "unknown type 7");
  bad(Header(4, 1, 0, 1), "flags must be 0");
  bad(Header(4, 0, 0, 0), "stream id 0");
  bad(Header(4, 0, 1, 1) + "x", "length 1 exceeds 0");
  bad(Header(3, 0, 16385, 1), "exceeds 16384");  // rejected before the payload arrives
  bad(Header(3, 0, 0, 1), "DATA: empty");
  bad(Header(6, 0, 4, 1) + std::string(4, '\0'), "zero increment");
  bad(Header(6, 0, 3, 1) + "abc", "4 bytes");
  bad(Header(2, 0, 1, 1) + "x", "shorter than its code");
  bad(Header(2, 0, 2, 1) + std::string("\x00\x63", 2), "code 99");
  bad(Header(2, 0, 3, 1) + std::string("\x00\xc8\x01", 3), "not printable");
  bad(Header(1, 0, 9, 1) + "not-an-ip", "OPEN");
  bad(Header(1, 0, 65, 1) + std::string(65, '1'), "exceeds 64");
}

}  // namespace
}  // namespace sigil::dataplane::mux
