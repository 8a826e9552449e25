#include "dataplane/http/syntax.h"

namespace sigil::dataplane::http {

bool IsTchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTchar(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool IsValidFieldValue(std::string_view v) {
  for (char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\t' || c == ' ') continue;
    if (c < 0x21 || c == 0x7f) return false;
  }
  return true;
}

namespace {
char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool IsOws(char c) { return c == ' ' || c == '\t'; }
}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = Lower(c);
  return out;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> SplitList(std::string_view s) {
  std::vector<std::string_view> out;
  while (true) {
    const size_t comma = s.find(',');
    std::string_view element = TrimOws(s.substr(0, comma));
    if (!element.empty()) out.push_back(element);
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

bool ListContains(std::string_view list, std::string_view token) {
  for (std::string_view element : SplitList(list)) {
    if (EqualsIgnoreCase(element, token)) return true;
  }
  return false;
}

Result<HeaderField> ParseFieldLine(std::string_view line) {
  if (!line.empty() && IsOws(line.front())) {
    return InvalidArgument("obsolete line folding (field line starts with whitespace)");
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return InvalidArgument("field line without a colon");
  const std::string_view name = line.substr(0, colon);
  if (name.empty()) return InvalidArgument("empty field name");
  if (IsOws(name.back())) return InvalidArgument("whitespace between field name and colon");
  if (!IsToken(name)) return InvalidArgument("field name is not a token");
  const std::string_view value = TrimOws(line.substr(colon + 1));
  if (!IsValidFieldValue(value)) {
    return InvalidArgument("control character in value of field \"" + std::string(name) + "\"");
  }
  return HeaderField{std::string(name), std::string(value)};
}

}  // namespace sigil::dataplane::http
