// Character classes and small helpers for HTTP/1.1 message syntax (RFC 9110 section 5,
// RFC 9112). Everything here works on bytes and is strict: the agent rewrites a stream that
// an upstream server parses after it, so any input two parsers could read differently is
// refused rather than interpreted. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sigil::dataplane::http {

// tchar: "!#$%&'*+-.^_`|~", DIGIT, ALPHA.
bool IsTchar(unsigned char c);
// A non-empty run of tchar (field names, methods, transfer codings, Connection options).
bool IsToken(std::string_view s);
// What a field value may contain after its surrounding whitespace is removed: VCHAR, SP,
// HTAB and obs-text (0x80-0xFF). CR, LF, NUL, the other controls and DEL are refused.
bool IsValidFieldValue(std::string_view v);
// ASCII-only case-insensitive comparison (field names and tokens are ASCII).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
std::string AsciiLower(std::string_view s);
// Strips leading and trailing SP/HTAB (OWS).
std::string_view TrimOws(std::string_view s);
// Splits a comma-separated list (RFC 9110 section 5.6.1) into trimmed elements; empty
// elements are dropped, as the list rule requires of recipients.
std::vector<std::string_view> SplitList(std::string_view s);
// True when the list field value contains `token` as one element (case-insensitive).
bool ListContains(std::string_view list, std::string_view token);

struct HeaderField {
  std::string name;   // as received (case preserved); compare with EqualsIgnoreCase
  std::string value;  // without surrounding OWS
  bool operator==(const HeaderField&) const = default;
};

// Parses one field line (without its CRLF): `name ":" OWS value OWS`. Refuses obs-fold
// (a line starting with SP/HTAB), whitespace between name and colon, a name that is not a
// token, and values with characters IsValidFieldValue refuses.
Result<HeaderField> ParseFieldLine(std::string_view line);

}  // namespace sigil::dataplane::http
