// DerWriter: a small DER encoder for the few shapes certificate issuance needs (X.690).
//
// Why it exists: OpenSSL 3.0 builds a certificate through its generic ASN.1 item machinery,
// which re-encodes names, extensions and keys several times per leaf. X509Ca instead encodes
// the constant parts of a leaf once and writes the per-leaf parts (serial, validity, key, SAN,
// SKID) with this writer. It only writes; parsing stays with OpenSSL, and every certificate
// built with it is parsed back by d2i_X509 before anyone sees it.
//
// Contract: every Add* appends one complete TLV (AddRaw: pre-encoded TLVs) to the current
// innermost open constructed element. Lengths are always the minimal (DER) form. Errors are
// sticky: a failed call (time out of range, element larger than 4 GiB, unbalanced Begin/End)
// marks the writer failed and Finish() returns the first error, so call sites do not need to
// check each step. Not thread-safe; one writer per encoding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace sigil::core::der {

// Universal tags (X.690 section 8) and the constructed bit.
inline constexpr uint8_t kInteger = 0x02;
inline constexpr uint8_t kBitString = 0x03;
inline constexpr uint8_t kOctetString = 0x04;
inline constexpr uint8_t kNull = 0x05;
inline constexpr uint8_t kOid = 0x06;
inline constexpr uint8_t kUtf8String = 0x0c;
inline constexpr uint8_t kPrintableString = 0x13;
inline constexpr uint8_t kIa5String = 0x16;
inline constexpr uint8_t kUtcTime = 0x17;
inline constexpr uint8_t kGeneralizedTime = 0x18;
inline constexpr uint8_t kSequence = 0x30;
inline constexpr uint8_t kSet = 0x31;

// Context-specific tag [n] (n <= 30), primitive or constructed.
constexpr uint8_t ContextTag(uint8_t n, bool constructed) {
  return static_cast<uint8_t>(0x80 | (constructed ? 0x20 : 0x00) | (n & 0x1f));
}

// Largest content length the writer encodes (4 length octets).
inline constexpr size_t kMaxLength = 0xffffffffu;

class DerWriter {
 public:
  DerWriter() = default;
  explicit DerWriter(size_t reserve) { out_.reserve(reserve); }

  // tag + length + contents.
  void AddTlv(uint8_t tag, std::span<const uint8_t> contents);
  // Already-encoded DER (one or more complete TLVs), copied verbatim.
  void AddRaw(std::span<const uint8_t> der);
  // INTEGER holding the non-negative big-endian value `magnitude`: leading zero octets are
  // dropped and one 0x00 is prepended when the top bit is set (X.690 8.3.2). Empty = 0.
  void AddUnsignedInteger(std::span<const uint8_t> magnitude);
  void AddSmallInteger(uint32_t value);
  // BIT STRING with 0 unused bits.
  void AddBitString(std::span<const uint8_t> bytes);
  void AddOctetString(std::span<const uint8_t> bytes) { AddTlv(kOctetString, bytes); }
  void AddIa5String(uint8_t tag, std::string_view s);
  void AddBoolean(bool value);
  // RFC 5280 section 4.1.2.5: UTCTime (YYMMDDHHMMSSZ) for years 1950..2049, GeneralizedTime
  // (YYYYMMDDHHMMSSZ) otherwise; fractional seconds are truncated like time_t. Years outside
  // 0..9999 fail.
  void AddTime(TimePoint t);

  // Opens a constructed element; everything added until the matching End() is its contents.
  void Begin(uint8_t tag);
  void End();

  bool ok() const { return !error_.has_value(); }
  size_t size() const { return out_.size(); }
  // The encoding, or the first error. Fails if a Begin() is still open.
  Result<std::vector<uint8_t>> Finish() &&;

 private:
  void Fail(std::string message);
  void AddHeader(uint8_t tag, size_t length);

  std::vector<uint8_t> out_;
  std::vector<size_t> open_;  // offsets of the open elements' tag octets
  std::optional<std::string> error_;
};

// Calendar fields of a time_t in UTC (proleptic Gregorian); used by AddTime and tests.
struct CivilTime {
  int64_t year;
  unsigned month, day, hour, minute, second;
};
CivilTime ToCivil(int64_t unix_seconds);

}  // namespace sigil::core::der
