// inet_diag queries over NETLINK_SOCK_DIAG; see sock_diag.h.
//
// The <linux/netlink.h> and <linux/rtnetlink.h> helper macros (NLMSG_OK, RTA_NEXT, ...) cast
// in C style, so messages are walked here with explicit offsets and memcpy instead.
#include "dataplane/intercept/sock_diag.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/owned_fd.h"

namespace sigil::dataplane {
namespace {

constexpr size_t kMaxListeners = 65536;
constexpr size_t kRecvBuffer = 64 << 10;

std::string Errno(int err) { return std::strerror(err); }

constexpr size_t Align4(size_t n) { return (n + 3) & ~size_t{3}; }

template <class T>
T Load(std::span<const uint8_t> buf, size_t off) {
  T v{};
  std::memcpy(&v, buf.data() + off, sizeof v);
  return v;
}

// inet_diag addresses are four big-endian words; ports are network order.
sockaddr_storage ToSockaddr(int family, const __be32 addr[4], __be16 port) {
  sockaddr_storage ss{};
  if (family == AF_INET) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = port;
    std::memcpy(&sin.sin_addr, &addr[0], 4);
    std::memcpy(&ss, &sin, sizeof sin);
  } else {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = port;
    std::memcpy(&sin6.sin6_addr, addr, 16);
    std::memcpy(&ss, &sin6, sizeof sin6);
  }
  return ss;
}

// Address words and port of `ss` for an inet_diag_sockid.
void FromSockaddr(const sockaddr_storage& ss, __be32 addr[4], __be16* port) {
  if (ss.ss_family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, &ss, sizeof sin);
    std::memcpy(&addr[0], &sin.sin_addr, 4);
    *port = sin.sin_port;
  } else {
    sockaddr_in6 sin6{};
    std::memcpy(&sin6, &ss, sizeof sin6);
    std::memcpy(addr, &sin6.sin6_addr, 16);
    *port = sin6.sin6_port;
  }
}

Result<TcpSocketInfo> ParseDiagMsg(std::span<const uint8_t> payload) {
  if (payload.size() < sizeof(inet_diag_msg)) {
    return Internal("sock_diag: short inet_diag_msg (" + std::to_string(payload.size()) +
                    " bytes)");
  }
  const auto msg = Load<inet_diag_msg>(payload, 0);
  if (msg.idiag_family != AF_INET && msg.idiag_family != AF_INET6) {
    return Internal("sock_diag: unexpected family " + std::to_string(msg.idiag_family));
  }
  TcpSocketInfo info;
  info.family = msg.idiag_family;
  info.state = msg.idiag_state;
  info.local = ToSockaddr(info.family, msg.id.idiag_src, msg.id.idiag_sport);
  info.remote = ToSockaddr(info.family, msg.id.idiag_dst, msg.id.idiag_dport);
  info.uid = msg.idiag_uid;
  info.inode = msg.idiag_inode;
  for (size_t off = Align4(sizeof(inet_diag_msg)); off + sizeof(rtattr) <= payload.size();) {
    const auto rta = Load<rtattr>(payload, off);
    if (rta.rta_len < sizeof(rtattr) || off + rta.rta_len > payload.size()) {
      return Internal("sock_diag: malformed attribute");
    }
    const size_t data = off + Align4(sizeof(rtattr));
    const size_t len = rta.rta_len - Align4(sizeof(rtattr));
    if (rta.rta_type == INET_DIAG_CGROUP_ID && len >= sizeof(uint64_t)) {
      info.cgroup_id = Load<uint64_t>(payload, data);
    } else if (rta.rta_type == INET_DIAG_SKV6ONLY && len >= 1) {
      info.v6only = payload[data] != 0;
    }
    off += Align4(rta.rta_len);
  }
  return info;
}

Result<OwnedFd> OpenDiagSocket() {
  OwnedFd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd.valid()) return Unavailable("sock_diag: socket(NETLINK_SOCK_DIAG): " + Errno(errno));
  // The kernel answers at once; the timeout only guards against a wedged netlink socket.
  const timeval tv{.tv_sec = 2, .tv_usec = 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

uint32_t NextSeq() {
  static std::atomic<uint32_t> seq{1};
  return seq.fetch_add(1, std::memory_order_relaxed);
}

// Sends `req` and collects the answer: one message for an exact request, until NLMSG_DONE for
// a dump.
Result<std::vector<TcpSocketInfo>> Query(inet_diag_req_v2 req, bool dump, size_t max_sockets) {
  SIGIL_ASSIGN_OR_RETURN(OwnedFd fd, OpenDiagSocket());
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0));
  msg.nlh.nlmsg_seq = NextSeq();
  msg.req = req;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd.get(), &msg, sizeof msg, 0, reinterpret_cast<const sockaddr*>(&kernel),
               sizeof kernel) != static_cast<ssize_t>(sizeof msg)) {
    return Unavailable("sock_diag: send: " + Errno(errno));
  }
  std::vector<uint8_t> buf(kRecvBuffer);
  std::vector<TcpSocketInfo> out;
  // Every reply datagram carries at least one message, so the number of datagrams is bounded
  // by the socket bound plus the final DONE.
  for (size_t datagrams = 0; datagrams <= max_sockets + 1; ++datagrams) {
    const ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Unavailable("sock_diag: recv: " + Errno(errno));
    if (n == 0) break;
    const size_t before = out.size();
    SIGIL_ASSIGN_OR_RETURN(
        const bool done,
        ParseSockDiagMessages(std::span(buf.data(), static_cast<size_t>(n)), out, max_sockets));
    if (done || (!dump && out.size() > before)) return out;
  }
  if (!dump) return Internal("sock_diag: no answer to an exact request");
  return ResourceExhausted("sock_diag: dump did not end within its bound");
}

}  // namespace

Result<bool> ParseSockDiagMessages(std::span<const uint8_t> buf, std::vector<TcpSocketInfo>& out,
                                   size_t max_sockets) {
  size_t off = 0;
  while (off + sizeof(nlmsghdr) <= buf.size()) {
    const auto nlh = Load<nlmsghdr>(buf, off);
    if (nlh.nlmsg_len < sizeof(nlmsghdr) || nlh.nlmsg_len > buf.size() - off) {
      return Internal("sock_diag: malformed netlink message (length " +
                      std::to_string(nlh.nlmsg_len) + ")");
    }
    const auto payload =
        buf.subspan(off + Align4(sizeof(nlmsghdr)), nlh.nlmsg_len - Align4(sizeof(nlmsghdr)));
    if (nlh.nlmsg_type == NLMSG_DONE) return true;
    if (nlh.nlmsg_type == NLMSG_ERROR) {
      if (payload.size() < sizeof(int)) return Internal("sock_diag: short NLMSG_ERROR");
      const int err = -Load<int>(payload, 0);
      if (err == 0) return false;  // an ACK
      std::string text = "sock_diag: " + Errno(err);
      if (err == ENOENT) return NotFound(std::move(text));
      return Unavailable(std::move(text));
    }
    if (nlh.nlmsg_type == SOCK_DIAG_BY_FAMILY) {
      if (out.size() >= max_sockets) {
        return ResourceExhausted("sock_diag: more than " + std::to_string(max_sockets) +
                                 " sockets");
      }
      SIGIL_ASSIGN_OR_RETURN(TcpSocketInfo info, ParseDiagMsg(payload));
      out.push_back(info);
    }
    off += Align4(nlh.nlmsg_len);
  }
  return false;
}

Result<TcpSocketInfo> FindTcpSocket(const sockaddr_storage& local, const sockaddr_storage& remote) {
  if ((local.ss_family != AF_INET && local.ss_family != AF_INET6) ||
      local.ss_family != remote.ss_family) {
    return InvalidArgument("sock_diag: addresses must be both AF_INET or both AF_INET6");
  }
  inet_diag_req_v2 req{};
  req.sdiag_family = static_cast<uint8_t>(local.ss_family);
  req.sdiag_protocol = IPPROTO_TCP;
  req.idiag_states = ~0u;
  FromSockaddr(local, req.id.idiag_src, &req.id.idiag_sport);
  FromSockaddr(remote, req.id.idiag_dst, &req.id.idiag_dport);
  req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  SIGIL_ASSIGN_OR_RETURN(std::vector<TcpSocketInfo> found, Query(req, false, 1));
  if (found.empty()) return NotFound("sock_diag: no such TCP socket");
  return found.front();
}

Result<std::vector<TcpSocketInfo>> TcpListeners(int family, uint16_t port) {
  if (family != AF_INET && family != AF_INET6) {
    return InvalidArgument("sock_diag: family " + std::to_string(family));
  }
  inet_diag_req_v2 req{};
  req.sdiag_family = static_cast<uint8_t>(family);
  req.sdiag_protocol = IPPROTO_TCP;
  req.idiag_states = 1u << TCP_LISTEN;
  SIGIL_ASSIGN_OR_RETURN(std::vector<TcpSocketInfo> all, Query(req, true, kMaxListeners));
  std::vector<TcpSocketInfo> out;
  for (const auto& s : all) {
    sockaddr_in sin{};
    std::memcpy(&sin, &s.local, sizeof sin);  // sin_port and sin6_port share their offset
    if (ntohs(sin.sin_port) == port) out.push_back(s);
  }
  return out;
}

}  // namespace sigil::dataplane
