// ResponseFramer: follows the server-to-client half of a proxied HTTP/1.1 connection to know
// where each response ends, without changing a byte. The request rewriter does not need it
// (request framing never depends on responses); its caller does, for two things only:
//   - ordering: after a pipelined request is rejected, the agent's error response must come
//     after the upstream's responses to the requests forwarded before it (completed() catches
//     up with RequestStreamRewriter::requests_forwarded());
//   - upgrades: whether the answer to a paused Upgrade/CONNECT request switched protocols
//     (switched()), to call RequestStreamRewriter::Resume().
//
// Response framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and 304; 1xx are
// interim (the request still waits for its final response); 101, and 2xx to CONNECT, end HTTP
// on the connection; Transfer-Encoding with chunked last means chunked (reusing BodyReader),
// any other Transfer-Encoding or no length means the body ends at close; otherwise
// Content-Length (invalid or conflicting values are errors). Line syntax is the strict
// HeadReader's. On any error the caller should stop tracking and simply relay until close.
// Not thread-safe; one instance per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string_view>

#include "common/result.h"
#include "dataplane/http/body_reader.h"
#include "dataplane/http/head_reader.h"

namespace sigil::dataplane::http {

struct ResponseLimits {
  HeadLimits head{size_t{64} * 1024,
                  200};  // servers send more fields than clients (Set-Cookie, CSP)
  ChunkLimits chunks;
  size_t max_outstanding = 1024;  // forwarded requests still waiting for their response
};

class ResponseFramer {
 public:
  explicit ResponseFramer(ResponseLimits limits = {});

  // A request was forwarded upstream (call in order, e.g. from the rewriter's on_forwarded).
  Result<void> ExpectResponse(std::string_view method);

  // Consumes all of `in`. InvalidArgument for a malformed response or one nobody asked for,
  // ResourceExhausted past a limit.
  Result<void> Feed(std::string_view in);

  uint64_t completed() const { return completed_; }        // final responses fully received
  size_t outstanding() const { return expected_.size(); }  // requests without a final response
  bool switched() const { return switched_; }              // the rest of the stream is not HTTP
  bool until_close() const {
    return body_.has_value() && body_->framing().kind == BodyKind::kUntilClose;
  }
  int last_status() const { return last_status_; }  // of the latest response head

 private:
  enum class Pending { kPlain, kHead, kConnect };

  Result<void> OnHead();

  const ResponseLimits limits_;
  std::deque<Pending> expected_;
  HeadReader head_;
  std::optional<BodyReader> body_;
  uint64_t completed_ = 0;
  bool switched_ = false;
  int last_status_ = 0;
};

}  // namespace sigil::dataplane::http
