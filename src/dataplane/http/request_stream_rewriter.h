// RequestStreamRewriter: the client-to-server half of an HTTP/1.1 connection, rewritten one
// request head at a time (credential injection for `inject` Services, x-forwarded-client-cert
// for `xfcc`). Bytes from the client go in with Feed(); bytes for the upstream come out of
// output()/Drain().
//
// For each request head the callback sees the parsed head (method, target, version, fields in
// order) and its framing, and may remove or add fields, or reject the request with a status
// and a reason. Bodies pass through unchanged: Content-Length bytes as they come, chunked
// bodies byte for byte (chunk-size lines, extensions and trailers included, never re-chunked),
// unless the callback asks for the body to be buffered (below). Keep-alive and pipelining: any
// number of requests in one buffer, each head handed to the callback in order. Expect:
// 100-continue needs nothing from a proxy but passing it on (except for buffered bodies); it
// is exposed in RequestInfo.
//
// Rejection (a malformed head, a limit, the callback): state() becomes kRejected,
// error_response() holds a complete "HTTP/1.1 4xx ..." response with Connection: close, and no
// further input is taken. Nothing of the rejected request's head is ever in output(); requests
// before it are complete in output() and may still be sent. A chunked-framing error found in a
// body that already started is the one case where part of the request was forwarded:
// upstream_tainted() then says the upstream connection must be reset, not reused.
//
// Upgrade and CONNECT: a forwarded request with Connection: upgrade + Upgrade, or CONNECT,
// pauses the rewriter after its body (state kPaused, nothing more is taken), because what
// follows depends on the server's answer; the caller reports it with Resume(switched): true
// (101, or 2xx to CONNECT) makes the rest an opaque relay, false continues with HTTP. A
// callback can also return Opaque() to stop inspecting after a request, or Reject() to refuse
// the upgrade.
//
// Responses are not parsed here: request framing never depends on them. The caller needs
// response boundaries only to order its own error response after the upstream's responses to
// earlier pipelined requests and to learn the answer to an upgrade; ResponseFramer
// (response_framer.h) provides exactly that, without changing response bytes.
//
// Buffered bodies (BufferBody(): SigV4 for services that sign the payload hash): the head
// callback may hold a request back until its whole body has arrived. The body's data (a
// chunked body decoded) is collected, at most limits.max_buffered_body bytes: a Content-Length
// above that is refused with 413 at once, a chunked body as soon as its data passes it, and
// nothing of the request is forwarded. Once the body is complete, the body callback sees the
// head, re-framed, and the data, may edit the head (or reject), and then the head and the body
// go out together: a chunked body as Content-Length (Transfer-Encoding removed; trailer fields
// are refused with 501 since they would be lost), Expect: 100-continue removed. A client that
// waits for 100 Continue before sending its body would wait forever: continue_wanted() tells
// the caller to answer it an interim "100 Continue" (after the responses to earlier requests).
//
// Bounded: the head being parsed is held up to limits.head.max_bytes; body bytes are taken
// only while the undrained output is below limits.max_output, and a new head is started only
// then, so the output exceeds max_output by at most one serialized head (callback additions
// included) or by one chunk-size line plus one trailer section, or by one head plus one
// buffered body (max_buffered_body). Feed() returns how many bytes it took; the rest must be
// offered again after Drain().
//
// Deterministic: output, callback calls and the error response depend only on the bytes, not
// on how they are split across Feed() calls (tested byte by byte and fuzzed).
// Not thread-safe; one instance per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "dataplane/http/body_reader.h"
#include "dataplane/http/head_reader.h"
#include "dataplane/http/request.h"

namespace sigil::dataplane::http {

struct RewriterLimits {
  HeadLimits head;                        // 16 KiB, 100 fields
  ChunkLimits chunks;                     // 4 KiB chunk-size lines; trailers like heads
  size_t max_output = size_t{64} * 1024;  // undrained output above which input is no longer taken
  size_t max_buffered_body = size_t{64} * 1024;  // BufferBody(): data bytes of one body
};

struct HeadVerdict {
  enum class Action { kForward, kReject, kOpaque, kBufferBody };
  Action action = Action::kForward;
  int status = 0;      // kReject: 4xx/5xx
  std::string reason;  // kReject: short text for the error body (never a secret)

  static HeadVerdict Forward() { return {}; }
  static HeadVerdict Reject(int status, std::string reason) {
    return {Action::kReject, status, std::move(reason)};
  }
  // Forward this request, then relay everything after it without parsing.
  static HeadVerdict Opaque() { return {Action::kOpaque, 0, {}}; }
  // Head callback only: hold the request until its whole body is in, then ask the body
  // callback (see "Buffered bodies" above).
  static HeadVerdict BufferBody() { return {Action::kBufferBody, 0, {}}; }
};

class RequestStreamRewriter {
 public:
  // May edit `head` (fields; method, target and version too, all re-validated). An edit that
  // makes the head invalid or changes its body framing rejects the request with 500.
  using HeadCallback = std::function<HeadVerdict(RequestHead& head, const RequestInfo& info)>;
  // Called when a head is committed to the output (after the callback's edits).
  using ForwardedCallback = std::function<void(const RequestHead& head, const RequestInfo& info)>;
  // After BufferBody(): the head as it will be forwarded (Content-Length framing, no Expect),
  // its framing, and the body's data. May edit the head like the head callback (the framing
  // must stay), Forward, Opaque or Reject.
  using BodyCallback =
      std::function<HeadVerdict(RequestHead& head, const RequestInfo& info, std::string_view body)>;

  enum class State {
    kHttp,      // parsing requests
    kPaused,    // waiting for Resume() after an upgrade or CONNECT request
    kOpaque,    // relaying bytes unparsed
    kClosed,    // the last request (Connection: close, HTTP/1.0) is complete; input is dropped
    kRejected,  // error_response() is ready; input is no longer taken
  };

  explicit RequestStreamRewriter(HeadCallback on_head, RewriterLimits limits = {});
  void set_on_forwarded(ForwardedCallback cb) { on_forwarded_ = std::move(cb); }
  void set_on_body(BodyCallback cb) { on_body_ = std::move(cb); }

  // Takes bytes from the start of `in`; returns how many. In kClosed every byte is taken and
  // dropped (the upstream closes after the last response and would never read them).
  size_t Feed(std::string_view in);

  // Bytes ready for the upstream, and how many of them were sent.
  std::string_view output() const { return std::string_view(out_).substr(out_pos_); }
  void Drain(size_t n);

  // In kPaused: the server switched protocols (101, or 2xx to CONNECT) or not.
  void Resume(bool switched);

  State state() const { return state_; }
  const std::string& error_response() const { return error_response_; }
  int error_status() const { return error_status_; }
  const std::string& error_reason() const { return error_reason_; }
  bool upstream_tainted() const { return tainted_; }
  // Part of a request has been received (at client EOF: the request was cut short).
  bool mid_request() const { return in_body_ || head_.bytes() > 0; }
  uint64_t requests_forwarded() const { return requests_forwarded_; }
  // A body is being buffered for a request that sent Expect: 100-continue and the caller has
  // not answered the client's 100 yet (ContinueSent()). The caller sends "HTTP/1.1 100
  // Continue" once the upstream has answered every request forwarded before this one.
  bool continue_wanted() const { return buffering_ && continue_wanted_; }
  void ContinueSent() { continue_wanted_ = false; }
  // Body bytes held back for the request being buffered (0 when none).
  size_t buffered_bytes() const { return body_buf_.size(); }
  uint64_t bytes_dropped() const { return dropped_; }

 private:
  size_t Room() const;
  void OnHeadComplete();
  void OnBufferedBody();
  void EndRequest();
  void Reject(int status, std::string reason);

  HeadCallback on_head_;
  ForwardedCallback on_forwarded_;
  BodyCallback on_body_;
  const RewriterLimits limits_;
  State state_ = State::kHttp;
  HeadReader head_;
  std::optional<BodyReader> body_;
  bool in_body_ = false;
  RequestInfo current_;
  bool opaque_after_ = false;
  // BufferBody(): the held head and its framing, the body's data so far.
  bool buffering_ = false;
  bool continue_wanted_ = false;
  RequestHead held_head_;
  RequestInfo held_info_;
  std::string body_buf_;
  std::string out_;
  size_t out_pos_ = 0;
  std::string error_response_;
  int error_status_ = 0;
  std::string error_reason_;
  bool tainted_ = false;
  uint64_t requests_forwarded_ = 0;
  uint64_t dropped_ = 0;
};

}  // namespace sigil::dataplane::http
