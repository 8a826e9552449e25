#include "core/der.h"

#include <array>
#include <chrono>

namespace sigil::core::der {
namespace {

// Number of octets needed for the long-form length `n` (> 127).
size_t LengthOctets(size_t n) {
  size_t k = 0;
  for (size_t v = n; v != 0; v >>= 8) ++k;
  return k;
}

void PutDigits(std::vector<uint8_t>& out, uint64_t value, int width) {
  std::array<uint8_t, 8> buf{};
  for (int i = width - 1; i >= 0; --i) {
    buf[static_cast<size_t>(i)] = static_cast<uint8_t>('0' + value % 10);
    value /= 10;
  }
  out.insert(out.end(), buf.begin(), buf.begin() + width);
}

}  // namespace

CivilTime ToCivil(int64_t unix_seconds) {
  // Floor division so times before 1970 land on the right day.
  int64_t days = unix_seconds / 86400;
  int64_t secs = unix_seconds % 86400;
  if (secs < 0) {
    secs += 86400;
    --days;
  }
  // civil_from_days (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int64_t d = doy - (153 * mp + 2) / 5 + 1;
  int64_t m = mp < 10 ? mp + 3 : mp - 9;
  int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return {y,
          static_cast<unsigned>(m),
          static_cast<unsigned>(d),
          static_cast<unsigned>(secs / 3600),
          static_cast<unsigned>(secs / 60 % 60),
          static_cast<unsigned>(secs % 60)};
}

void DerWriter::Fail(std::string message) {
  if (!error_) error_ = std::move(message);
}

void DerWriter::AddHeader(uint8_t tag, size_t length) {
  if (length > kMaxLength) return Fail("der: element longer than 4 GiB");
  out_.push_back(tag);
  if (length < 0x80) {
    out_.push_back(static_cast<uint8_t>(length));
    return;
  }
  size_t k = LengthOctets(length);
  out_.push_back(static_cast<uint8_t>(0x80 | k));
  for (size_t i = k; i > 0; --i) out_.push_back(static_cast<uint8_t>(length >> (8 * (i - 1))));
}

void DerWriter::AddTlv(uint8_t tag, std::span<const uint8_t> contents) {
  AddHeader(tag, contents.size());
  if (!ok()) return;
  out_.insert(out_.end(), contents.begin(), contents.end());
}

void DerWriter::AddRaw(std::span<const uint8_t> der) {
  out_.insert(out_.end(), der.begin(), der.end());
}

void DerWriter::AddUnsignedInteger(std::span<const uint8_t> magnitude) {
  size_t skip = 0;
  while (skip < magnitude.size() && magnitude[skip] == 0) ++skip;
  std::span<const uint8_t> v = magnitude.subspan(skip);
  if (v.empty()) {
    static constexpr uint8_t kZero[] = {0};
    return AddTlv(kInteger, kZero);
  }
  bool pad = (v.front() & 0x80) != 0;
  AddHeader(kInteger, v.size() + (pad ? 1 : 0));
  if (!ok()) return;
  if (pad) out_.push_back(0);
  out_.insert(out_.end(), v.begin(), v.end());
}

void DerWriter::AddSmallInteger(uint32_t value) {
  std::array<uint8_t, 4> be{static_cast<uint8_t>(value >> 24), static_cast<uint8_t>(value >> 16),
                            static_cast<uint8_t>(value >> 8), static_cast<uint8_t>(value)};
  AddUnsignedInteger(be);
}

void DerWriter::AddBitString(std::span<const uint8_t> bytes) {
  if (bytes.size() >= kMaxLength) return Fail("der: element longer than 4 GiB");
  AddHeader(kBitString, bytes.size() + 1);
  if (!ok()) return;
  out_.push_back(0);  // unused bits in the last octet
  out_.insert(out_.end(), bytes.begin(), bytes.end());
}

void DerWriter::AddIa5String(uint8_t tag, std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) > 0x7f) return Fail("der: IA5String with a non-ASCII octet");
  }
  AddTlv(tag, {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

void DerWriter::AddBoolean(bool value) {
  const uint8_t v = value ? 0xff : 0x00;
  AddTlv(0x01, {&v, 1});
}

void DerWriter::AddTime(TimePoint t) {
  CivilTime c = ToCivil(static_cast<int64_t>(std::chrono::system_clock::to_time_t(t)));
  if (c.year < 0 || c.year > 9999) return Fail("der: time outside years 0..9999");
  bool utc = c.year >= 1950 && c.year <= 2049;
  AddHeader(utc ? kUtcTime : kGeneralizedTime, utc ? 13 : 15);
  if (utc) {
    PutDigits(out_, static_cast<uint64_t>(c.year % 100), 2);
  } else {
    PutDigits(out_, static_cast<uint64_t>(c.year), 4);
  }
  PutDigits(out_, c.month, 2);
  PutDigits(out_, c.day, 2);
  PutDigits(out_, c.hour, 2);
  PutDigits(out_, c.minute, 2);
  PutDigits(out_, c.second, 2);
  out_.push_back('Z');
}

void DerWriter::Begin(uint8_t tag) {
  open_.push_back(out_.size());
  out_.push_back(tag);
  out_.push_back(0);  // short-form placeholder; End() widens it if needed
}

void DerWriter::End() {
  if (open_.empty()) return Fail("der: End() without Begin()");
  size_t at = open_.back();
  open_.pop_back();
  size_t length = out_.size() - (at + 2);
  if (length < 0x80) {
    out_[at + 1] = static_cast<uint8_t>(length);
    return;
  }
  if (length > kMaxLength) return Fail("der: element longer than 4 GiB");
  size_t k = LengthOctets(length);
  out_.insert(out_.begin() + static_cast<std::ptrdiff_t>(at + 2), k, uint8_t{0});
  out_[at + 1] = static_cast<uint8_t>(0x80 | k);
  for (size_t i = 0; i < k; ++i) {
    out_[at + 2 + i] = static_cast<uint8_t>(length >> (8 * (k - 1 - i)));
  }
}

Result<std::vector<uint8_t>> DerWriter::Finish() && {
  if (!open_.empty()) Fail("der: unterminated constructed element");
  if (error_) return Internal(*error_);
  return std::move(out_);
}

}  // namespace sigil::core::der
