// Asynchronous building blocks on an EventLoop: connect, TLS handshake, read one framed
// message, write a whole buffer. Each calls `done` exactly once, on the loop thread, never
// from inside the call that started it: with the result, with DeadlineExceeded after
// `timeout`, or with Unavailable("event loop stopped") if the loop stops first.
//
// The helpers must be started on the loop thread. An Endpoint passed by reference must stay
// alive, and its fd must not be watched by anything else, until `done` has run; the helper
// unwatches the fd before calling `done`, so a relay can take it over from there.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "common/ossl.h"
#include "common/owned_fd.h"
#include "common/result.h"
#include "dataplane/relay/endpoint.h"
#include "dataplane/relay/event_loop.h"

namespace sigil::dataplane {

// Non-blocking TCP connect to `to` (AF_INET or AF_INET6), SO_ERROR checked, TCP_NODELAY set.
// Refused/unreachable: Unavailable; timeout: DeadlineExceeded.
void AsyncConnect(EventLoop& loop, const sockaddr_storage& to, std::chrono::milliseconds timeout,
                  std::function<void(Result<OwnedFd>)> done);

// Drives SSL_do_handshake on `fd` (made non-blocking here; client or server mode already set on
// `ssl`; the SSL is attached to `fd` here unless it already is). Failures are Unavailable (or
// Unauthenticated when certificate verification failed) and carry OpenSSL's reasons and the verify
// result.
void AsyncTlsHandshake(EventLoop& loop, OwnedFd fd, SslPtr ssl, std::chrono::milliseconds timeout,
                       std::function<void(Result<std::unique_ptr<Endpoint>>)> done);

// Reads from `ep` until `parse(buffered)` returns > 0 (length of a complete message at the
// front), < 0 (malformed: InvalidArgument) or 0 (need more). At most `max_bytes` are read in
// total (ResourceExhausted beyond). Success: {message bytes, bytes read beyond the message}.
// EOF or reset before a complete message: Unavailable.
void AsyncReadMessage(EventLoop& loop, Endpoint& ep, size_t max_bytes,
                      std::chrono::milliseconds timeout,
                      std::function<ssize_t(std::string_view buffered)> parse,
                      std::function<void(Result<std::pair<std::string, std::string>>)> done);

// Writes all of `bytes` to `ep`. Reset or error: Unavailable.
void AsyncWriteAll(EventLoop& loop, Endpoint& ep, std::string bytes,
                   std::chrono::milliseconds timeout, std::function<void(Result<void>)> done);

}  // namespace sigil::dataplane
