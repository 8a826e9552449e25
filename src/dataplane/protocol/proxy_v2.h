// PROXY protocol v2 header (haproxy.org proxy-protocol.txt, section 2.2) for handing the
// verified peer to a local application: the original client address and port, and the peer's
// SPIFFE ID in a TLV of type kSpiffeIdTlv (0xE0, the first type the spec reserves for
// application use). Pure function; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "dataplane/protocol/preamble.h"

namespace sigil::dataplane {

inline constexpr uint8_t kSpiffeIdTlv = 0xE0;

// `source` and `destination` must be of the same family. The SPIFFE ID is cut at 2048 bytes
// (SPIFFE IDs are at most 2048 bytes).
std::string EncodeProxyV2(const Destination& source, const Destination& destination,
                          std::string_view spiffe_id);

}  // namespace sigil::dataplane
