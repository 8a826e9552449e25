#include "resources/syntax.h"

#include <cstdio>

namespace sigil::resources::internal {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

Result<void> ValidateName(std::string_view name) {
  if (name.empty()) return InvalidArgument("must not be empty");
  if (name.size() > 63) return InvalidArgument(Quote(name) + " is longer than 63 characters");
  for (char c : name) {
    if (!IsLowerAlnum(c) && c != '-') {
      return InvalidArgument(
          Quote(name) + " must consist of lowercase letters, digits and '-' (like a DNS label)");
    }
  }
  if (name.front() == '-' || name.back() == '-') {
    return InvalidArgument(Quote(name) + " must start and end with a letter or digit");
  }
  return Ok();
}

Result<void> ValidateDnsName(std::string_view name, bool allow_wildcard) {
  if (name.empty()) return InvalidArgument("DNS name must not be empty");
  if (name.size() > 253) return InvalidArgument(Quote(name) + " is longer than 253 characters");
  std::string_view rest = name;
  if (rest.starts_with("*.")) {
    if (!allow_wildcard) return InvalidArgument(Quote(name) + ": a wildcard is not allowed here");
    rest.remove_prefix(2);
  }
  size_t pos = 0;
  while (pos <= rest.size()) {
    size_t end = rest.find('.', pos);
    if (end == std::string_view::npos) end = rest.size();
    std::string_view label = rest.substr(pos, end - pos);
    if (label.empty()) return InvalidArgument(Quote(name) + " has an empty label");
    if (label.size() > 63) return InvalidArgument(Quote(name) + " has a label longer than 63");
    for (char c : label) {
      if (!IsLowerAlnum(c) && c != '-') {
        return InvalidArgument(Quote(name) +
                               " is not a valid DNS name (lowercase letters, digits, '-', '.')");
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return InvalidArgument(Quote(name) + ": a label must not start or end with '-'");
    }
    pos = end + 1;
  }
  return Ok();
}

bool IsHttpToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool IsHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::optional<uint64_t> ParseDecimal(std::string_view s, uint64_t max) {
  if (s.empty() || s.size() > 19 || (s.size() > 1 && s.front() == '0')) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > max) return std::nullopt;
  return v;
}

Result<void> ValidateAbsolutePath(std::string_view path, bool allow_root) {
  if (path.empty() || path.front() != '/') {
    return InvalidArgument(Quote(path) + " must be an absolute path");
  }
  if (path.size() > 4096) return InvalidArgument("path is longer than 4096 bytes");
  if (path == "/") {
    if (allow_root) return Ok();
    return InvalidArgument("\"/\" is not a file");
  }
  if (path.back() == '/') return InvalidArgument(Quote(path) + " must not end with '/'");
  if (!IsPrintable(path)) return InvalidArgument(Quote(path) + " contains control characters");
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(pos, end - pos);
    if (seg.empty() || seg == "." || seg == "..") {
      return InvalidArgument(Quote(path) + " is not normalised (no '//', '.' or '..')");
    }
    pos = end + 1;
  }
  return Ok();
}

bool IsPrintable(std::string_view s, bool allow_tab) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u == 0x7f || (u < 0x20 && !(allow_tab && c == '\t'))) return false;
  }
  return true;
}

std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 80;
  size_t n = s.size() < kMaxShown ? s.size() : kMaxShown;
  // Never cut a UTF-8 sequence in half: messages end up in JSON error bodies.
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  std::string out = "\"";
  for (size_t i = 0; i < n; ++i) {
    auto u = static_cast<unsigned char>(s[i]);
    if (s[i] == '"' || s[i] == '\\') {
      out += '\\';
      out += s[i];
    } else if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += s[i];
    }
  }
  if (n < s.size()) out += "...";
  out += '"';
  return out;
}

}  // namespace sigil::resources::internal
