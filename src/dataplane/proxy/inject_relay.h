// InjectRelay: one workload connection to an `inject` Service. The workload speaks HTTP/1.1 to
// the agent, in plaintext or over TLS the agent terminated (any Endpoint); the agent speaks TLS
// to the real upstream. Each request head passes through a RequestStreamRewriter whose
// callback (the proxy's) removes the workload's copy of the credential header and adds the
// bound credential; bodies pass through unchanged, except where the callback holds a request
// until its body is in (`on_body`: SigV4 over the payload hash).
//
// - Expect: 100-continue on a request whose body is held: the relay answers the workload's
//   "100 Continue" itself, once the upstream has answered every request forwarded before it
//   (the upstream never sees the Expect).
//
// - A request the rewriter refuses (malformed, oversized, a header injection attempt, a host
//   the Service does not cover, ...) never reaches the upstream, not even in part: the workload
//   gets the rewriter's error response (400/403/431/502/...) once the upstream has answered
//   every request forwarded before it (ResponseFramer counts the answers), then the connection
//   closes: after the response the relay ends its direction and discards what the workload
//   still sends, for up to 2 s, so the close does not reset the connection before the workload
//   read the answer (a 413 to an upload in flight). `on_refused` sees the status and reason
//   (for the audit).
// - Upgrade/CONNECT: rewriting pauses until the upstream's answer; a switch makes the rest
//   opaque, anything else resumes HTTP.
// - Before taking a workload byte that may start a new request, `fresh` is asked whether the
//   credential is still current; when it is not, reading stops, `refresh` runs (on a worker,
//   by the caller) and reading resumes when it calls back, so every request uses a current
//   credential without blocking the loop.
// - Half-close both ways, resets propagated, bounded buffers (64 KiB each way plus one head),
//   idle timeout.
// Runs on one EventLoop; Start must be called on the loop thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "dataplane/http/request_stream_rewriter.h"
#include "dataplane/relay/endpoint.h"
#include "dataplane/relay/event_loop.h"

namespace sigil::dataplane {

struct InjectHooks {
  http::RequestStreamRewriter::HeadCallback on_head;
  http::RequestStreamRewriter::BodyCallback on_body;  // after on_head returned BufferBody()
  std::function<void(int status, const std::string& reason)> on_refused;
  // Whether the credential used by on_head is still current (cheap, never blocks).
  std::function<bool()> fresh;
  // Renews it; calls `done` (from any thread) when on_head can run again.
  std::function<void(std::function<void()> done)> refresh;
  std::function<void(const std::string& error)> on_end;  // once; "" when both sides closed
};

void StartInjectRelay(EventLoop& loop, std::unique_ptr<Endpoint> workload,
                      std::unique_ptr<Endpoint> upstream, InjectHooks hooks,
                      std::chrono::milliseconds idle_timeout);

}  // namespace sigil::dataplane
