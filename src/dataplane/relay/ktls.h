// Kernel TLS probe for the relay: the fast path (kTLS sockets relayed with splice()) is used
// only where the kernel has the tls ULP. One probe for the whole data plane: sigil_ktls's.
#pragma once

#include "dataplane/ktls/ktls.h"

namespace sigil::dataplane {

// True if setsockopt(TCP_ULP, "tls") succeeds on a connected loopback TCP socket, i.e. the
// kernel has the tls ULP (module loaded or loadable). Probed once, then cached.
inline bool KernelTlsAvailable() { return ktls::KernelTlsSupported(); }

}  // namespace sigil::dataplane
