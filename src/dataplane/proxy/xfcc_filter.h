// XfccFilter: the inbound half of `peerIdentityForwarding: xfcc`. Every HTTP/1.1 request the
// peer agent relays to the local application gets exactly one x-forwarded-client-cert field
// describing the verified peer (any such field the client sent is removed first, so the
// application can trust the header), in the element syntax Envoy uses:
//
//   x-forwarded-client-cert: By=<this service's SPIFFE ID>;Hash=<sha256 of the client leaf,
//                            hex>;URI=<client SPIFFE ID>
//
// Parsing is RequestStreamRewriter's (strict, bounded); the application's responses are
// followed with ResponseFramer only to learn whether an Upgrade/CONNECT switched protocols
// (then the rest of the stream is relayed as is). A malformed request, or a response stream
// that cannot be followed while an upgrade is pending, fails the stream: it is reset rather
// than relayed with a header nobody checked.
#pragma once

#include <string>

#include "dataplane/http/request_stream_rewriter.h"
#include "dataplane/http/response_framer.h"
#include "dataplane/mux/mux_connection.h"

namespace sigil::dataplane {

// The header value for one verified peer.
std::string XfccValue(const std::string& by, const std::string& leaf_sha256_hex,
                      const std::string& uri);

class XfccFilter final : public mux::StreamFilter {
 public:
  explicit XfccFilter(std::string value);
  size_t ToLocal(std::string_view in, mux::ByteQueue& out) override;
  bool FromLocal(std::string_view bytes) override;
  std::string Failure() const override { return failure_; }

  uint64_t requests() const { return rewriter_.requests_forwarded(); }

 private:
  std::string value_;
  http::RequestStreamRewriter rewriter_;
  http::ResponseFramer framer_;
  bool framer_failed_ = false;
  std::string failure_;
};

}  // namespace sigil::dataplane
