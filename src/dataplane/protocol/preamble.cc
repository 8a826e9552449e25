#include "dataplane/protocol/preamble.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace sigil::dataplane {
namespace {

constexpr std::string_view kConnect = "CONNECT ";
constexpr std::string_view kVersion = "SIGIL/1";
constexpr std::string_view kSniSuffix = ".sigil.invalid";

std::optional<uint16_t> ParsePort(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
    return std::nullopt;
  }
  if (text.size() > 1 && text[0] == '0') return std::nullopt;  // one spelling per port
  return static_cast<uint16_t>(value);
}

// Finds the CRLF-terminated line at the start of `buffered`. Returns the line without CRLF
// in *line and its length with CRLF, 0 when incomplete, an error when too long or when a
// bare CR/LF or another control character appears.
Result<size_t> TakeLine(std::string_view buffered, std::string_view what, std::string_view* line) {
  const size_t limit = std::min(buffered.size(), kMaxLineBytes);
  for (size_t i = 0; i < limit; ++i) {
    const auto c = static_cast<unsigned char>(buffered[i]);
    if (c == '\r') {
      if (i + 2 > kMaxLineBytes) break;  // CRLF would end past the bound
      if (i + 1 == buffered.size()) return size_t{0};
      if (buffered[i + 1] != '\n') return InvalidArgument(std::string(what) + ": CR without LF");
      *line = buffered.substr(0, i);
      return i + 2;
    }
    if (c < 0x20 || c > 0x7e) {
      return InvalidArgument(std::string(what) + ": byte " + std::to_string(c) + " at offset " +
                             std::to_string(i) + " is not printable ASCII");
    }
  }
  if (buffered.size() >= kMaxLineBytes - 1) {
    return InvalidArgument(std::string(what) + ": longer than " + std::to_string(kMaxLineBytes) +
                           " bytes");
  }
  return size_t{0};
}

}  // namespace

std::string Destination::str() const {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family, ip.data(), text, sizeof(text));
  if (family == AF_INET6) return "[" + std::string(text) + "]:" + std::to_string(port);
  return std::string(text) + ":" + std::to_string(port);
}

sockaddr_storage Destination::ToSockaddr() const {
  sockaddr_storage out{};
  if (family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&out);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    std::memcpy(&a->sin6_addr, ip.data(), 16);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&out);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    std::memcpy(&a->sin_addr, ip.data(), 4);
  }
  return out;
}

Result<Destination> Destination::FromSockaddr(const sockaddr_storage& addr) {
  Destination d;
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    d.family = AF_INET;
    std::memcpy(d.ip.data(), &a->sin_addr, 4);
    d.port = ntohs(a->sin_port);
    return d;
  }
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    d.port = ntohs(a->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      d.family = AF_INET;
      std::memcpy(d.ip.data(), a->sin6_addr.s6_addr + 12, 4);
    } else {
      d.family = AF_INET6;
      std::memcpy(d.ip.data(), a->sin6_addr.s6_addr, 16);
    }
    return d;
  }
  return InvalidArgument("address family " + std::to_string(addr.ss_family) +
                         " is not IPv4 or IPv6");
}

Result<Destination> Destination::Parse(std::string_view text) {
  Destination d;
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return InvalidArgument("destination \"" + std::string(text) + "\": expected [IPv6]:port");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    d.family = AF_INET6;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return InvalidArgument("destination \"" + std::string(text) + "\": expected IPv4:port");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    d.family = AF_INET;
  }
  const std::string host_text(host);
  if (host_text.size() >= INET6_ADDRSTRLEN ||
      ::inet_pton(d.family, host_text.c_str(), d.ip.data()) != 1) {
    return InvalidArgument("destination \"" + std::string(text) + "\": \"" + host_text +
                           "\" is not an " + (d.family == AF_INET ? "IPv4" : "IPv6") + " address");
  }
  const auto p = ParsePort(port);
  if (!p) {
    return InvalidArgument("destination \"" + std::string(text) + "\": port \"" +
                           std::string(port) + "\" is not 1-65535");
  }
  d.port = *p;
  return d;
}

std::string EncodeConnect(const Destination& to) {
  return std::string(kConnect) + to.str() + " " + std::string(kVersion) + "\r\n";
}

Result<size_t> ParseConnect(std::string_view buffered, Destination* to) {
  std::string_view line;
  SIGIL_ASSIGN_OR_RETURN(size_t length, TakeLine(buffered, "sigil/1 request", &line));
  if (length == 0) return size_t{0};
  if (!line.starts_with(kConnect)) {
    return InvalidArgument("sigil/1 request: expected \"CONNECT <ip>:<port> SIGIL/1\"");
  }
  line.remove_prefix(kConnect.size());
  const size_t space = line.find(' ');
  if (space == std::string_view::npos || line.substr(space + 1) != kVersion) {
    return InvalidArgument("sigil/1 request: expected \" SIGIL/1\" after the destination");
  }
  SIGIL_ASSIGN_OR_RETURN(*to, Destination::Parse(line.substr(0, space)));
  return length;
}

std::string EncodeReply(int code, std::string_view reason) {
  std::string line = std::string(kVersion) + " " + std::to_string(code) + " ";
  const size_t room = kMaxLineBytes - 2 - line.size();
  for (size_t i = 0; i < reason.size() && i < room; ++i) {
    const auto c = static_cast<unsigned char>(reason[i]);
    line.push_back(c < 0x20 || c > 0x7e ? '?' : static_cast<char>(c));
  }
  line += "\r\n";
  return line;
}

Result<size_t> ParseReply(std::string_view buffered, Reply* reply) {
  std::string_view line;
  SIGIL_ASSIGN_OR_RETURN(size_t length, TakeLine(buffered, "sigil/1 reply", &line));
  if (length == 0) return size_t{0};
  // "SIGIL/1 200 OK": version, space, three digits, space, reason (may be empty).
  if (!line.starts_with(kVersion) || line.size() < kVersion.size() + 5 ||
      line[kVersion.size()] != ' ' || line[kVersion.size() + 4] != ' ') {
    return InvalidArgument("sigil/1 reply: expected \"SIGIL/1 <code> <reason>\"");
  }
  const std::string_view code = line.substr(kVersion.size() + 1, 3);
  int value = 0;
  auto [end, ec] = std::from_chars(code.data(), code.data() + code.size(), value);
  if (ec != std::errc() || end != code.data() + code.size() || value < 100 || value > 599) {
    return InvalidArgument("sigil/1 reply: status \"" + std::string(code) +
                           "\" is not a 3-digit code");
  }
  reply->code = value;
  reply->reason = std::string(line.substr(kVersion.size() + 5));
  return length;
}

std::string SniForPort(uint16_t port) { return std::to_string(port) + std::string(kSniSuffix); }

std::optional<uint16_t> PortFromSni(std::string_view sni) {
  if (!sni.ends_with(kSniSuffix)) return std::nullopt;
  return ParsePort(sni.substr(0, sni.size() - kSniSuffix.size()));
}

}  // namespace sigil::dataplane
