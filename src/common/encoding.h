// Strict binary-to-text encodings. Decoders reject anything not in canonical form (stray
// characters, bad padding, non-zero trailing bits), because they run on untrusted input.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/secret_bytes.h"

namespace sigil {

std::string HexEncode(std::span<const uint8_t> bytes);  // lowercase
Result<std::vector<uint8_t>> HexDecode(std::string_view hex);

// RFC 4648 section 4, with '=' padding (JWK x5c, PEM bodies).
std::string Base64Encode(std::span<const uint8_t> bytes);
Result<std::vector<uint8_t>> Base64Decode(std::string_view text);

// RFC 4648 section 5 without padding (JWS, JWK members), as RFC 7515 requires.
std::string Base64UrlEncode(std::span<const uint8_t> bytes);
std::string Base64UrlEncode(std::string_view bytes);
Result<std::vector<uint8_t>> Base64UrlDecode(std::string_view text);

inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
inline std::string_view AsChars(std::span<const uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Peer-supplied text as it may appear in logs, messages and audit records: at most `max`
// bytes, each byte outside printable ASCII (0x20-0x7e) replaced by '?'.
std::string PrintableAscii(std::string_view s, size_t max);
// PrintableAscii(s, max) as a JSON string literal (quoted, '"' and '\\' escaped), appended to
// `out` without an intermediate string: audit details written as text on a hot path.
void AppendPrintableAsciiJson(std::string& out, std::string_view s, size_t max);

// SHA-256 helpers used for fingerprints and hash pins.
std::vector<uint8_t> Sha256(std::span<const uint8_t> data);
std::string Sha256Hex(std::span<const uint8_t> data);

}  // namespace sigil
