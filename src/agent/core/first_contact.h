// First contact with a server the agent does not trust yet (join).
//
// The join token pins the SHA-256 of the server's root CA certificate. The agent opens a TLS
// connection that verifies nothing, takes the chain the server presents, and accepts the server
// only if (1) one of the presented certificates is the pinned root, (2) the leaf validates to
// that root alone (X.509 path validation, the rest of the chain as untrusted intermediates), and
// (3) the leaf is spiffe://TD/sigil/server. Only then does the caller send the token, over a new
// channel that trusts exactly that root. A server that cannot prove the pin never sees the
// token.
#pragma once

#include <chrono>
#include <string>

#include "common/result.h"
#include "core/certificate.h"
#include "core/join_token.h"
#include "core/spiffe_id.h"

namespace sigil::agent {

struct PinnedServer {
  core::Certificate root;
  core::TrustDomain trust_domain;
};

// `address` is HOST:PORT. Unavailable when the server cannot be reached; PermissionDenied
// (naming what failed, never the token) when it does not prove the pin.
Result<PinnedServer> FetchPinnedRoot(const std::string& address, const core::JoinToken& token,
                                     std::chrono::milliseconds timeout);

}  // namespace sigil::agent
