// The sigil/1 inbound protocol spoken on the agent's mTLS port (15008), after the TLS 1.3
// handshake (ALPN "sigil/1"). See docs/dataplane.md, "Agent-to-agent protocol".
//
//   client:  CONNECT 10.0.0.2:8080 SIGIL/1\r\n         (IPv6: CONNECT [2001:db8::1]:8080 ...)
//   server:  SIGIL/1 200 OK\r\n                          then raw bytes in both directions
//        or  SIGIL/1 403 <reason>\r\n                    then close_notify
//
// One line each way, printable ASCII, at most kMaxLineBytes including CRLF, so a person can
// speak it with `openssl s_client`. The client also names the destination port in SNI
// ("8080.sigil.invalid") so the server can present the right certificate before it sees the
// request line. Parsers take hostile input: every byte is checked, nothing is allocated
// beyond the bound. Pure functions; thread-safe.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sigil::dataplane {

inline constexpr std::string_view kAlpn = "sigil/1";
inline constexpr size_t kMaxLineBytes = 256;
inline constexpr uint16_t kDefaultInboundPort = 15008;

// An IP endpoint (no DNS names on the wire: the workload already resolved what it dialled).
struct Destination {
  int family = AF_INET;          // AF_INET or AF_INET6
  std::array<uint8_t, 16> ip{};  // network order; IPv4 in the first 4 bytes
  uint16_t port = 0;             // host order

  // "10.0.0.2:8080", "[2001:db8::1]:8080"
  std::string str() const;
  sockaddr_storage ToSockaddr() const;
  // InvalidArgument for families other than AF_INET/AF_INET6. An IPv4-mapped IPv6 address
  // (::ffff:a.b.c.d) becomes AF_INET.
  static Result<Destination> FromSockaddr(const sockaddr_storage& addr);
  // "10.0.0.2:8080" or "[::1]:8080" (port 1-65535).
  static Result<Destination> Parse(std::string_view text);

  bool operator==(const Destination&) const = default;
};

// Request line for `to`.
std::string EncodeConnect(const Destination& to);
// Parses the request line at the start of `buffered`: the line's length in bytes (CRLF
// included) when complete, 0 when more bytes are needed, InvalidArgument when malformed or
// longer than kMaxLineBytes.
Result<size_t> ParseConnect(std::string_view buffered, Destination* to);

struct Reply {
  int code = 0;        // 200 success; 403 denied by policy; 502 local application unreachable;
                       // 400 malformed request; 421 destination not served by this node
  std::string reason;  // printable ASCII
};
// Control characters in `reason` become '?', and it is cut so the line fits kMaxLineBytes.
std::string EncodeReply(int code, std::string_view reason);
Result<size_t> ParseReply(std::string_view buffered, Reply* reply);

// "8080.sigil.invalid" (.invalid never resolves, RFC 2606), and back.
std::string SniForPort(uint16_t port);
std::optional<uint16_t> PortFromSni(std::string_view sni);

}  // namespace sigil::dataplane
