// Relay: moves bytes both ways between two Endpoints on one EventLoop, with bounded buffers,
// backpressure, half-close, reset propagation and an idle timeout.
//
// Per direction (a->b and b->a):
// - A buffer of at most `buffer_bytes` is allocated when the direction first reads and released
//   whenever it drains and the source has nothing more to give, so an idle relay holds no buffer.
// - When the destination cannot take more, the source is not read (backpressure: the kernel's
//   receive window then throttles the sender).
// - EOF from the source (read returns 0, or TLS close_notify) is forwarded after the pending
//   bytes: the destination's write side is shut (TLS: close_notify, then shutdown(SHUT_WR)).
//   The other direction keeps flowing. A TLS peer that closes TCP without close_notify is
//   treated as EOF and recorded as truncated.
// - ECONNRESET/EPIPE on either side (read or write) aborts the other side with an RST
//   (SO_LINGER {1, 0}) and ends the relay with the reset recorded.
// `done` runs once, on the loop thread, when both directions have ended or the relay was
// aborted (idle timeout, Abort(), an I/O error, or the loop stopping). Both sockets are closed
// by then.
//
// splice mode: bytes move through a pipe per direction with splice(2) and never enter user
// space; the pipe capacity plays the role of the buffer. Needs both endpoints plain or kTLS
// (Endpoint::can_splice); used when `use_splice` is set, and by default whenever one endpoint is
// kTLS (`splice_kernel_tls`): the kernel then decrypts into the pipe and encrypts out of it.
// Control records on a kTLS source (tickets, close_notify) are consumed on the way; a kTLS
// destination's half-close waits until the kernel has handed its last records to TCP (polled
// on a short timer, see ktls_endpoint.h).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "dataplane/relay/endpoint.h"
#include "dataplane/relay/event_loop.h"

namespace sigil::dataplane {

struct RelayOptions {
  size_t buffer_bytes = 16 * 1024;                                   // per direction, upper bound
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};  // <= 0: none
  std::string initial_a_to_b, initial_b_to_a;  // queued before anything is read
  bool use_splice = false;  // both endpoints plain or kTLS: relay with splice(2) through pipes
  bool splice_kernel_tls = true;  // ... and also without use_splice when one endpoint is kTLS
};

struct RelayStats {
  uint64_t a_to_b_bytes = 0;  // bytes written to b (including initial_a_to_b)
  uint64_t b_to_a_bytes = 0;
  bool a_reset = false;  // a reset the connection (or vanished while we wrote)
  bool b_reset = false;
  bool a_truncated = false;  // a (TLS) ended without close_notify
  bool b_truncated = false;
  bool idle_timeout = false;
  bool spliced = false;  // the relay ran in splice mode
  // kTLS endpoints (both sides summed): NewSessionTickets consumed after the switch, and
  // half-close attempts that found records still inside the kernel (see ktls_endpoint.h).
  uint64_t ktls_tickets = 0;
  uint64_t ktls_flush_waits = 0;
  std::string error;  // empty when both directions ended cleanly
};

namespace detail {
class RelayCore;
}

class RelayHandle {
 public:
  RelayHandle(std::shared_ptr<LoopRemote> remote, std::weak_ptr<detail::RelayCore> core)
      : remote_(std::move(remote)), core_(std::move(core)) {}
  // Thread-safe: RST both sides; done() runs with error "aborted". No-op once the relay ended.
  void Abort();

 private:
  std::shared_ptr<LoopRemote> remote_;
  std::weak_ptr<detail::RelayCore> core_;
};

// May be called from any thread (the relay then starts on the loop thread).
std::shared_ptr<RelayHandle> StartRelay(EventLoop& loop, std::unique_ptr<Endpoint> a,
                                        std::unique_ptr<Endpoint> b, RelayOptions options,
                                        std::function<void(const RelayStats&)> done);

// Bytes of relay buffers currently allocated, process-wide (splice pipes not included).
size_t RelayBufferBytesInUse();
// Relays started and not yet finished, process-wide.
size_t LiveRelays();

}  // namespace sigil::dataplane
