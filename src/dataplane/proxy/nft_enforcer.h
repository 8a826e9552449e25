// NftEnforcer: the nftables rules that make `mutual` Services unreachable in plaintext. For each
// inbound Service this node serves, TCP to the service's address and port that arrives on any
// interface other than loopback is dropped, so a client on another host cannot bypass the
// agent; the agent itself reaches the application over loopback. One table
// (`inet sigil_enforce`), replaced atomically by `nft -f -` when the set changes and deleted on
// Clear(). See docs/dataplane.md, "Enforcement".
#pragma once

#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include "common/result.h"

namespace sigil::dataplane {

struct ProtectedPort {
  std::string address;  // "10.0.0.2", "10.20.0.0/16", "2001:db8::/32" (nft syntax)
  bool ipv6 = false;
  uint16_t port = 0;
  std::string service;
  auto operator<=>(const ProtectedPort&) const = default;
};

class NftEnforcer {
 public:
  explicit NftEnforcer(std::string nft_binary = "/usr/sbin/nft");
  // Installs exactly `ports` (no-op when unchanged). Unavailable with nft's message on failure.
  Result<void> Apply(const std::set<ProtectedPort>& ports);
  Result<void> Clear();
  // The ruleset text Apply would load (for tests and logs).
  static std::string Ruleset(const std::set<ProtectedPort>& ports);

 private:
  Result<void> Run(const std::string& script);
  const std::string nft_;
  std::mutex mu_;
  std::set<ProtectedPort> current_;
  bool installed_ = false;
};

}  // namespace sigil::dataplane
