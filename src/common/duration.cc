#include "common/duration.h"

#include <ctime>

namespace sigil {

Result<Seconds> ParseDuration(std::string_view text) {
  constexpr int64_t kMax = int64_t{100} * 365 * 24 * 3600;
  if (text.empty()) return InvalidArgument("duration: empty");
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    int64_t n = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      n = n * 10 + (text[i] - '0');
      if (n > kMax) return InvalidArgument("duration \"" + std::string(text) + "\": too large");
      ++i;
    }
    if (i == start) {
      return InvalidArgument("duration \"" + std::string(text) + "\": expected a number");
    }
    if (i == text.size()) {
      return InvalidArgument("duration \"" + std::string(text) + "\": missing unit (s, m, h or d)");
    }
    int64_t unit = 0;
    switch (text[i]) {
      case 's':
        unit = 1;
        break;
      case 'm':
        unit = 60;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'd':
        unit = 86400;
        break;
      default:
        return InvalidArgument("duration \"" + std::string(text) + "\": unknown unit '" +
                               std::string(1, text[i]) + "' (use s, m, h or d)");
    }
    ++i;
    total += n * unit;
    if (total > kMax) return InvalidArgument("duration \"" + std::string(text) + "\": too large");
  }
  return Seconds(total);
}

std::string FormatDuration(Seconds d) {
  int64_t s = d.count();
  if (s == 0) return "0s";
  std::string out;
  if (s < 0) {
    out = "-";
    s = -s;
  }
  if (s >= 3600) {
    out += std::to_string(s / 3600) + "h";
    s %= 3600;
  }
  if (s >= 60) {
    out += std::to_string(s / 60) + "m";
    s %= 60;
  }
  if (s > 0) out += std::to_string(s) + "s";
  return out;
}

std::string FormatRfc3339(TimePoint t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace sigil
