#include "resources/address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "resources/syntax.h"

namespace sigil::resources {
namespace {

using internal::Quote;

Result<uint16_t> ParsePort(std::string_view text, std::string_view port) {
  if (port.empty()) return InvalidArgument(Quote(text) + " needs a port");
  if (port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return InvalidArgument(Quote(text) + ": port " + Quote(port) + " is not a number");
  }
  int p = std::stoi(std::string(port));
  if (p < 1 || p > 65535) {
    return InvalidArgument(Quote(text) + ": port " + std::to_string(p) +
                           " is out of range (1-65535)");
  }
  return static_cast<uint16_t>(p);
}

// Fills ip/prefix for "a.b.c.d[/n]" or an IPv6 "x::y[/n]"; nullopt error when not an IP.
Result<void> ParseIp(std::string_view text, std::string_view host, ServiceAddress& out) {
  std::string_view addr = host;
  std::optional<std::string_view> len_text;
  if (size_t slash = host.find('/'); slash != std::string_view::npos) {
    addr = host.substr(0, slash);
    len_text = host.substr(slash + 1);
  }
  std::string addr_z(addr);
  bool v6 = addr.find(':') != std::string_view::npos;
  int family = v6 ? AF_INET6 : AF_INET;
  if (inet_pton(family, addr_z.c_str(), out.ip.data()) != 1) {
    return InvalidArgument(Quote(text) + ": " + Quote(addr) + " is not a valid IPv" +
                           (v6 ? "6" : "4") + " address");
  }
  int max_len = v6 ? 128 : 32;
  out.type = v6 ? ServiceAddress::Type::kIpv6 : ServiceAddress::Type::kIpv4;
  out.prefix_length = max_len;
  if (len_text) {
    auto n = internal::ParseDecimal(*len_text, static_cast<uint64_t>(max_len));
    if (!n) {
      return InvalidArgument(Quote(text) + ": prefix length " + Quote(*len_text) +
                             " is out of range (0-" + std::to_string(max_len) + ")");
    }
    out.prefix_length = static_cast<int>(*n);
  }
  // Host bits must be zero so that the canonical form is unambiguous.
  std::array<uint8_t, 16> masked = out.ip;
  for (int bit = out.prefix_length; bit < max_len; ++bit) {
    masked[static_cast<size_t>(bit / 8)] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, masked.data(), buf, sizeof(buf));
  if (masked != out.ip) {
    return InvalidArgument(Quote(text) + ": " + Quote(host) + " has host bits set (did you mean " +
                           buf + "/" + std::to_string(out.prefix_length) + "?)");
  }
  out.host = buf;
  return Ok();
}

}  // namespace

std::string ServiceAddress::str() const {
  std::string h = host;
  bool single =
      (type == Type::kIpv4 && prefix_length == 32) || (type == Type::kIpv6 && prefix_length == 128);
  if (type != Type::kDnsName && !single) h += "/" + std::to_string(prefix_length);
  if (type == Type::kIpv6) h = "[" + h + "]";
  return h + ":" + std::to_string(port);
}

Result<ServiceAddress> ParseServiceAddress(std::string_view text) {
  ServiceAddress out;
  if (text.empty()) return InvalidArgument("address must not be empty");
  if (text.size() > 300) return InvalidArgument(Quote(text) + " is too long");
  std::string_view host;
  std::string_view port;
  if (text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return InvalidArgument(Quote(text) + ": missing ']'");
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (rest.empty()) return InvalidArgument(Quote(text) + " needs a port");
    if (rest.front() != ':') return InvalidArgument(Quote(text) + ": expected ':' after ']'");
    port = rest.substr(1);
    if (host.find(':') == std::string_view::npos) {
      return InvalidArgument(Quote(text) + ": brackets are only for IPv6 addresses");
    }
  } else {
    size_t colon = text.rfind(':');
    size_t first_colon = text.find(':');
    size_t slash = text.find('/');
    if (colon == std::string_view::npos) return InvalidArgument(Quote(text) + " needs a port");
    if (first_colon != colon) {
      // Several colons: only an unbracketed IPv6 CIDR ("2001:db8::/32:443") is unambiguous.
      if (slash == std::string_view::npos || slash > colon) {
        return InvalidArgument(Quote(text) +
                               ": an IPv6 address needs brackets and a port, "
                               "like \"[2001:db8::1]:443\"");
      }
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  SIGIL_ASSIGN_OR_RETURN(out.port, ParsePort(text, port));
  if (host.empty()) return InvalidArgument(Quote(text) + ": host is missing");
  bool looks_ip = host.find(':') != std::string_view::npos ||
                  host.find('/') != std::string_view::npos ||
                  std::all_of(host.begin(), host.end(),
                              [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
  if (looks_ip) {
    SIGIL_TRY(ParseIp(text, host, out));
    return out;
  }
  auto dns = internal::ValidateDnsName(host, /*allow_wildcard=*/true);
  if (!dns.ok()) return InvalidArgument(Quote(text) + ": " + dns.error().message());
  out.type = ServiceAddress::Type::kDnsName;
  out.host = std::string(host);
  return out;
}

}  // namespace sigil::resources
