#include "core/der.h"

#include <gtest/gtest.h>
#include <openssl/asn1.h>

#include <vector>

#include "common/encoding.h"
#include "common/ossl.h"

namespace sigil::core::der {
namespace {

std::string Hex(DerWriter&& w) {
  auto out = std::move(w).Finish();
  EXPECT_TRUE(out.ok());
  return out.ok() ? HexEncode(*out) : "";
}

std::string TlvHeader(size_t length) {
  DerWriter w;
  std::vector<uint8_t> body(length, 0xab);
  w.AddOctetString(body);
  auto out = std::move(w).Finish();
  EXPECT_TRUE(out.ok());
  return HexEncode(std::span<const uint8_t>(*out).first(out->size() - length));
}

TEST(DerWriter, LengthsAreMinimal) {
  EXPECT_EQ(TlvHeader(0), "0400");
  EXPECT_EQ(TlvHeader(127), "047f");
  EXPECT_EQ(TlvHeader(128), "048180");
  EXPECT_EQ(TlvHeader(255), "0481ff");
  EXPECT_EQ(TlvHeader(256), "04820100");
  EXPECT_EQ(TlvHeader(65535), "0482ffff");
  EXPECT_EQ(TlvHeader(65536), "0483010000");
}

TEST(DerWriter, ConstructedElementsWidenTheirLength) {
  for (size_t n : {0u, 125u, 126u, 127u, 128u, 254u, 255u, 256u, 65536u}) {
    DerWriter nested;
    nested.Begin(kSequence);
    nested.Begin(ContextTag(3, true));
    nested.AddRaw(std::vector<uint8_t>(n, 0x01));
    nested.End();
    nested.End();
    auto got = std::move(nested).Finish();
    ASSERT_TRUE(got.ok());
    // Expected: built inside out with AddTlv.
    DerWriter inner;
    inner.AddTlv(ContextTag(3, true), std::vector<uint8_t>(n, 0x01));
    auto inner_der = std::move(inner).Finish();
    DerWriter outer;
    outer.AddTlv(kSequence, *inner_der);
    EXPECT_EQ(*got, *std::move(outer).Finish()) << n;
  }
}

TEST(DerWriter, UnsignedIntegers) {
  auto enc = [](std::vector<uint8_t> v) {
    DerWriter w;
    w.AddUnsignedInteger(v);
    return Hex(std::move(w));
  };
  EXPECT_EQ(enc({}), "020100");
  EXPECT_EQ(enc({0x00}), "020100");
  EXPECT_EQ(enc({0x00, 0x00}), "020100");
  EXPECT_EQ(enc({0x01}), "020101");
  EXPECT_EQ(enc({0x7f}), "02017f");
  EXPECT_EQ(enc({0x80}), "02020080");
  EXPECT_EQ(enc({0x00, 0x80}), "02020080");
  EXPECT_EQ(enc({0x00, 0x00, 0x7f, 0xff}), "02027fff");
  EXPECT_EQ(enc({0xff, 0x00}), "020300ff00");
  DerWriter w;
  w.AddSmallInteger(2);
  w.AddSmallInteger(65537);
  EXPECT_EQ(Hex(std::move(w)),
            "020102020301"
            "0001");
}

TEST(DerWriter, PrimitivesAndContextTags) {
  DerWriter w;
  const uint8_t bits[] = {0xaa, 0xbb};
  w.AddBitString(bits);
  w.AddBitString({});
  w.AddIa5String(ContextTag(6, false), "spiffe://a/b");
  w.AddIa5String(ContextTag(2, false), "");
  w.AddBoolean(true);
  w.AddTlv(kNull, {});
  EXPECT_EQ(Hex(std::move(w)),
            "030300aabb"
            "030100"
            "860c7370696666653a2f2f612f62"
            "8200"
            "0101ff"
            "0500");
  EXPECT_EQ(ContextTag(0, true), 0xa0);
  EXPECT_EQ(ContextTag(3, true), 0xa3);
}

TEST(DerWriter, ErrorsAreStickyAndReported) {
  DerWriter unbalanced;
  unbalanced.Begin(kSequence);
  EXPECT_FALSE(std::move(unbalanced).Finish().ok());
  DerWriter extra_end;
  extra_end.End();
  EXPECT_FALSE(extra_end.ok());
  EXPECT_FALSE(std::move(extra_end).Finish().ok());
  DerWriter non_ascii;
  non_ascii.AddIa5String(kIa5String, "caf\xc3\xa9");
  EXPECT_FALSE(std::move(non_ascii).Finish().ok());
  // (AddTime's year 0..9999 check cannot be reached through TimePoint: system_clock's
  // nanosecond count covers only 1677..2262.)
}

std::string TimeHex(int64_t unix_seconds) {
  DerWriter w;
  w.AddTime(FromUnixSeconds(unix_seconds));
  return Hex(std::move(w));
}

// What OpenSSL (ASN1_TIME_set, as the pre-template issuance used) writes for the same instant.
std::string OpenSslTimeHex(int64_t unix_seconds) {
  sigil::Asn1TimePtr t(ASN1_TIME_set(nullptr, static_cast<time_t>(unix_seconds)));
  unsigned char* out = nullptr;
  int len = i2d_ASN1_TIME(t.get(), &out);
  std::string hex = HexEncode(std::span<const uint8_t>(out, static_cast<size_t>(len)));
  OPENSSL_free(out);
  return hex;
}

TEST(DerWriter, UtcTimeUntil2049ThenGeneralizedTime) {
  // 2049-12-31T23:59:59Z: UTCTime "491231235959Z".
  EXPECT_EQ(TimeHex(2524607999), "170d" + HexEncode(AsBytes("491231235959Z")));
  // 2050-01-01T00:00:00Z: GeneralizedTime "20500101000000Z".
  EXPECT_EQ(TimeHex(2524608000), "180f" + HexEncode(AsBytes("20500101000000Z")));
  // 1950-01-01T00:00:00Z is UTCTime, one second earlier is not.
  EXPECT_EQ(TimeHex(-631152000), "170d" + HexEncode(AsBytes("500101000000Z")));
  EXPECT_EQ(TimeHex(-631152001), "180f" + HexEncode(AsBytes("19491231235959Z")));
  EXPECT_EQ(TimeHex(0), "170d" + HexEncode(AsBytes("700101000000Z")));
  EXPECT_EQ(TimeHex(951782400), "170d" + HexEncode(AsBytes("000229000000Z")));  // leap day
}

TEST(DerWriter, TimesMatchOpenSsl) {
  for (int64_t t = -2208988800; t < 4102444800; t += 7919 * 3607 + 13) {
    ASSERT_EQ(TimeHex(t), OpenSslTimeHex(t)) << t;
  }
  for (int64_t t : {int64_t{2524607999}, int64_t{2524608000}, int64_t{-631152000},
                    int64_t{-631152001}, int64_t{1796398545}, int64_t{7258118400}}) {
    EXPECT_EQ(TimeHex(t), OpenSslTimeHex(t)) << t;
  }
}

TEST(DerWriter, TimeTruncatesFractionalSecondsLikeTimeT) {
  DerWriter w;
  w.AddTime(FromUnixSeconds(0) + std::chrono::milliseconds(999));
  EXPECT_EQ(Hex(std::move(w)), "170d" + HexEncode(AsBytes("700101000000Z")));
}

TEST(ToCivil, KnownDates) {
  CivilTime c = ToCivil(1796398545);  // 2026-12-04T15:35:45Z
  EXPECT_EQ(c.year, 2026);
  EXPECT_EQ(c.month, 12u);
  EXPECT_EQ(c.day, 4u);
  EXPECT_EQ(c.hour, 15u);
  EXPECT_EQ(c.minute, 35u);
  EXPECT_EQ(c.second, 45u);
  CivilTime before_epoch = ToCivil(-1);
  EXPECT_EQ(before_epoch.year, 1969);
  EXPECT_EQ(before_epoch.month, 12u);
  EXPECT_EQ(before_epoch.day, 31u);
  EXPECT_EQ(before_epoch.second, 59u);
}

}  // namespace
}  // namespace sigil::core::der
