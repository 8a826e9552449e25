#include "common/encoding.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <array>

namespace sigil {
namespace {

constexpr std::string_view kStd =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view kUrl =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::array<int8_t, 256> ReverseTable(std::string_view alphabet) {
  std::array<int8_t, 256> t{};
  t.fill(-1);
  for (size_t i = 0; i < alphabet.size(); ++i)
    t[static_cast<uint8_t>(alphabet[i])] = static_cast<int8_t>(i);
  return t;
}

std::string Encode(std::span<const uint8_t> in, std::string_view alphabet, bool pad) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  size_t rest = in.size() - i;
  if (rest == 1) {
    uint32_t v = uint32_t{in[i]} << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    if (pad) out += "==";
  } else if (rest == 2) {
    uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    if (pad) out += '=';
  }
  return out;
}

Result<std::vector<uint8_t>> Decode(std::string_view in, const std::array<int8_t, 256>& table,
                                    bool padded) {
  if (padded) {
    if (in.size() % 4 != 0) return InvalidArgument("base64: length is not a multiple of 4");
    size_t pad = 0;
    while (pad < 2 && pad < in.size() && in[in.size() - 1 - pad] == '=') ++pad;
    in.remove_suffix(pad);
  }
  if (in.size() % 4 == 1) return InvalidArgument("base64: truncated input");
  std::vector<uint8_t> out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int8_t v = table[static_cast<uint8_t>(c)];
    if (v < 0) return InvalidArgument("base64: invalid character");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xff));
    }
  }
  // Canonical form: the leftover bits must be zero.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return InvalidArgument("base64: non-canonical trailing bits");
  }
  return out;
}

}  // namespace

std::string HexEncode(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

Result<std::vector<uint8_t>> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return InvalidArgument("hex: odd length");
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nibble(hex[2 * i]);
    int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("hex: invalid character");
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::string Base64Encode(std::span<const uint8_t> bytes) { return Encode(bytes, kStd, true); }

Result<std::vector<uint8_t>> Base64Decode(std::string_view text) {
  static const auto table = ReverseTable(kStd);
  return Decode(text, table, true);
}

std::string Base64UrlEncode(std::span<const uint8_t> bytes) { return Encode(bytes, kUrl, false); }
std::string Base64UrlEncode(std::string_view bytes) { return Base64UrlEncode(AsBytes(bytes)); }

namespace {
char Printable(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return c < 0x20 || c > 0x7e ? '?' : ch;
}
}  // namespace

std::string PrintableAscii(std::string_view s, size_t max) {
  std::string out(s.substr(0, max));
  for (char& ch : out) ch = Printable(ch);
  return out;
}

void AppendPrintableAsciiJson(std::string& out, std::string_view s, size_t max) {
  out.push_back('"');
  for (const char ch : s.substr(0, max)) {
    const char p = Printable(ch);
    if (p == '"' || p == '\\') out.push_back('\\');
    out.push_back(p);
  }
  out.push_back('"');
}

Result<std::vector<uint8_t>> Base64UrlDecode(std::string_view text) {
  static const auto table = ReverseTable(kUrl);
  return Decode(text, table, false);
}

std::vector<uint8_t> Sha256(std::span<const uint8_t> data) {
  // SHA256() looks the algorithm up in OpenSSL 3's provider tables on every call, which cost
  // as much as hashing a short audit record; fetch it once.
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  std::vector<uint8_t> out(SHA256_DIGEST_LENGTH);
  if (md == nullptr ||
      EVP_Digest(data.data(), data.size(), out.data(), nullptr, md, nullptr) != 1) {
    SHA256(data.data(), data.size(), out.data());
  }
  return out;
}

std::string Sha256Hex(std::span<const uint8_t> data) { return HexEncode(Sha256(data)); }

}  // namespace sigil
