// KernelTlsAvailable: probes TCP_ULP "tls" on a throwaway loopback connection.
#include "dataplane/relay/ktls.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>

#include "common/owned_fd.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

namespace sigil::dataplane {

namespace {

bool Probe() {
  OwnedFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.valid()) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener.get(), 1) != 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return false;
  }
  OwnedFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!client.valid() ||
      ::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return false;
  }
  OwnedFd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!server.valid()) return false;
  // The ULP can only be set on an established socket; the loopback connect above is.
  return ::setsockopt(client.get(), SOL_TCP, TCP_ULP, "tls", std::strlen("tls")) == 0;
}

}  // namespace

bool KernelTlsAvailable() {
  static const bool available = Probe();
  return available;
}

}  // namespace sigil::dataplane
