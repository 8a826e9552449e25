// Fuzzes the sigil/1 request and reply line parsers (hostile bytes from any TLS peer that
// completed a handshake) and checks encode/parse round trips on what they accept.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "dataplane/protocol/preamble.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  sigil::dataplane::Destination to;
  auto n = sigil::dataplane::ParseConnect(input, &to);
  if (n.ok() && *n > 0) {
    if (*n > input.size() || *n > sigil::dataplane::kMaxLineBytes) std::abort();
    const std::string again = sigil::dataplane::EncodeConnect(to);
    sigil::dataplane::Destination back;
    auto m = sigil::dataplane::ParseConnect(again, &back);
    if (!m.ok() || *m != again.size() || !(back == to)) std::abort();
  }
  sigil::dataplane::Reply reply;
  auto r = sigil::dataplane::ParseReply(input, &reply);
  if (r.ok() && *r > 0) {
    const std::string again = sigil::dataplane::EncodeReply(reply.code, reply.reason);
    sigil::dataplane::Reply back;
    auto m = sigil::dataplane::ParseReply(again, &back);
    if (!m.ok() || back.code != reply.code || back.reason != reply.reason) std::abort();
  }
  (void)sigil::dataplane::PortFromSni(input);
  return 0;
}
