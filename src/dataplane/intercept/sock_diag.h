// TCP socket facts from the kernel's NETLINK_SOCK_DIAG (inet_diag) interface: owner uid,
// inode, and the cgroup v2 id the socket was created in (INET_DIAG_CGROUP_ID, Linux >= 5.7).
// The nftables interception fallback uses them to find which managed process holds the client
// end of a redirected connection. Queries see the caller's network namespace only.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <vector>

#include "common/result.h"

namespace sigil::dataplane {

struct TcpSocketInfo {
  int family = 0;     // the socket's family (AF_INET6 for a dual-stack socket on IPv4)
  uint8_t state = 0;  // TCP_ESTABLISHED, TCP_LISTEN, ... (<netinet/tcp.h>)
  sockaddr_storage local{};
  sockaddr_storage remote{};
  uint32_t uid = 0;        // the socket's owner (the creator's fsuid)
  uint64_t inode = 0;      // 0: no file refers to it any more (orphaned while closing)
  uint64_t cgroup_id = 0;  // 0: the kernel did not report one
  bool v6only = false;     // AF_INET6 sockets: IPV6_V6ONLY
};

// The TCP socket whose local address is `local` and remote address is `remote`, found with
// the kernel's own connection lookup (exact, not a dump). Both addresses of one family;
// IPv4-mapped IPv6 addresses must be passed as AF_INET. NotFound if there is none.
Result<TcpSocketInfo> FindTcpSocket(const sockaddr_storage& local, const sockaddr_storage& remote);

// Listening TCP sockets of `family` bound to `port`. ResourceExhausted if the namespace has
// more than 65536 listeners of that family.
Result<std::vector<TcpSocketInfo>> TcpListeners(int family, uint16_t port);

// Parses a buffer of netlink messages answering a SOCK_DIAG_BY_FAMILY request into `out`.
// Returns true once NLMSG_DONE was seen (a dump is complete); an NLMSG_ERROR becomes its
// errno as an Error (NotFound for ENOENT). Exposed for tests; bounds-checked throughout.
Result<bool> ParseSockDiagMessages(std::span<const uint8_t> buf, std::vector<TcpSocketInfo>& out,
                                   size_t max_sockets);

}  // namespace sigil::dataplane
