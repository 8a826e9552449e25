// Kernel TLS probe: the hook for the fast path (kTLS sockets relayed with splice()).
#pragma once

namespace sigil::dataplane {

// True if setsockopt(TCP_ULP, "tls") succeeds on a connected loopback TCP socket, i.e. the
// kernel has the tls ULP (module loaded or loadable). Probed once, then cached.
bool KernelTlsAvailable();

}  // namespace sigil::dataplane
