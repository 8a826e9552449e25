// Service addresses: "host:port", "*.example.com:443", "10.0.0.1:80", "10.0.0.0/8:443",
// "[2001:db8::1]:443", "[2001:db8::/32]:443" (also "2001:db8::/32:443").
// Value type; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sigil::resources {

struct ServiceAddress {
  enum class Type { kDnsName, kIpv4, kIpv6 };
  Type type = Type::kDnsName;
  std::string host;              // lowercase DNS name (may start with "*."), or canonical IP text
  std::array<uint8_t, 16> ip{};  // network order; first 4 bytes for IPv4
  int prefix_length = 0;         // IPs: 32 / 128 for a single address
  uint16_t port = 0;

  // Canonical text: "10.0.0.0/8:443", "10.0.0.1:80", "[2001:db8::/32]:443", "api.x.com:443".
  std::string str() const;
};

// Errors quote the input: "\"10.0.0.1\" needs a port", "port 70000 is out of range (1-65535)",
// "\"10.0.0.1/8\" has host bits set (did you mean 10.0.0.0/8?)".
Result<ServiceAddress> ParseServiceAddress(std::string_view text);

}  // namespace sigil::resources
