#include "common/encoding.h"

#include <gtest/gtest.h>

namespace sigil {
namespace {

std::vector<uint8_t> B(std::string_view s) { return {s.begin(), s.end()}; }

TEST(Base64, Rfc4648Vectors) {
  const std::pair<std::string_view, std::string_view> vectors[] = {{"", ""},
                                                                   {"f", "Zg=="},
                                                                   {"fo", "Zm8="},
                                                                   {"foo", "Zm9v"},
                                                                   {"foob", "Zm9vYg=="},
                                                                   {"fooba", "Zm9vYmE="},
                                                                   {"foobar", "Zm9vYmFy"}};
  for (auto [plain, enc] : vectors) {
    EXPECT_EQ(Base64Encode(AsBytes(plain)), enc);
    auto dec = Base64Decode(enc);
    ASSERT_TRUE(dec.ok()) << enc;
    EXPECT_EQ(*dec, B(plain));
  }
}

TEST(Base64, RejectsNonCanonical) {
  EXPECT_FALSE(Base64Decode("Zg").ok());      // missing padding
  EXPECT_FALSE(Base64Decode("Zh==").ok());    // non-zero trailing bits
  EXPECT_FALSE(Base64Decode("Zm9v\n").ok());  // stray whitespace
  EXPECT_FALSE(Base64Decode("Zm=v").ok());    // padding in the middle
  EXPECT_FALSE(Base64Decode("Z===").ok());
  EXPECT_FALSE(Base64Decode("Zm9-").ok());  // url alphabet in std decoding
}

TEST(Base64Url, RoundTripAndStrictness) {
  std::vector<uint8_t> all(256);
  for (int i = 0; i < 256; ++i) all[i] = static_cast<uint8_t>(i);
  std::string enc = Base64UrlEncode(all);
  EXPECT_EQ(enc.find_first_of("+/="), std::string::npos);
  auto dec = Base64UrlDecode(enc);
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(*dec, all);
  EXPECT_FALSE(Base64UrlDecode("Zg==").ok());  // padding is not allowed in JWS
  EXPECT_FALSE(Base64UrlDecode("Z").ok());
  EXPECT_FALSE(Base64UrlDecode("Zh").ok());
  EXPECT_FALSE(Base64UrlDecode("a+b/").ok());
}

TEST(Hex, RoundTrip) {
  EXPECT_EQ(HexEncode(B("\x01\xab")), "01ab");
  auto dec = HexDecode("01AB");
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(*dec, B("\x01\xab"));
  EXPECT_FALSE(HexDecode("abc").ok());
  EXPECT_FALSE(HexDecode("zz").ok());
}

TEST(Sha256, KnownAnswer) {
  EXPECT_EQ(Sha256Hex(AsBytes("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(PrintableAscii, ReplacesNonPrintableBytesAndBoundsTheLength) {
  EXPECT_EQ(PrintableAscii("GET /v1 ok~", 100), "GET /v1 ok~");
  EXPECT_EQ(PrintableAscii(std::string_view("a\x00"
                                            "b\tc\x7f\x80\xff",
                                            8),
                           100),
            "a?b?c???");
  EXPECT_EQ(PrintableAscii("abcdef", 3), "abc");
  EXPECT_EQ(PrintableAscii("", 3), "");
}

TEST(PrintableAscii, AsAJsonStringLiteral) {
  std::string out = "x=";
  AppendPrintableAsciiJson(out, std::string_view("a\"b\\c\x01\xff", 7), 100);
  EXPECT_EQ(out, R"(x="a\"b\\c??")");
  out.clear();
  AppendPrintableAsciiJson(out, "abcdef", 3);
  EXPECT_EQ(out, R"("abc")");
  out.clear();
  AppendPrintableAsciiJson(out, "", 3);
  EXPECT_EQ(out, R"("")");
}

}  // namespace
}  // namespace sigil
