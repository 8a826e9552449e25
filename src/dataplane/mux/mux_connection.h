// MuxConnection: one sigil/2 connection (protocol/mux_frame.h) carrying many streams, each
// relayed to a local TCP socket: on the client agent the workload's intercepted connection, on
// the server agent the connection to the local application. Runs on one EventLoop.
//
// Per stream:
// - Flow control: each direction starts with kInitialWindow bytes of credit; a DATA frame
//   spends credit, a WINDOW frame returns it once the receiver has written the bytes to its
//   local socket. So a stream never has more than kInitialWindow bytes buffered at the
//   receiver, a slow local socket only stalls its own stream, and a peer that sends beyond its
//   credit is a protocol error.
// - Half-close: EOF from the local socket becomes FIN; FIN from the peer shuts the local
//   socket's write side after the buffered bytes. The stream ends when both directions have.
// - Reset: ECONNRESET/EPIPE on the local socket becomes RST; RST from the peer resets the
//   local socket (SO_LINGER 0).
// - Idle streams are reset after `stream_idle_timeout`.
// - The client's local bytes flow at once after OPEN (no round trip): the server holds them,
//   within the window, until its application connection is up, and drops them on refusal.
//
// Per connection:
// - Frames the peer sends are parsed strictly; any violation (bad frame, unknown new stream,
//   credit exceeded, a server opening streams) closes the connection and resets every stream.
// - Output is queued in one buffer; above kOutHigh bytes the streams stop reading their local
//   sockets until it drains below kOutLow. Buffered input for all streams together is bounded
//   by `max_buffered`; above it the connection is not read (backpressure to the peer's TCP).
// - EOF, reset or an error on the connection resets every stream.
// - A connection with no stream for `idle_close` is closed (close_notify).
//
// Lifetime: the connection keeps itself alive until it closes; hooks run on the loop thread,
// never from inside Open/Accept/Refuse. All members must be called on the loop thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/owned_fd.h"
#include "common/result.h"
#include "dataplane/mux/byte_queue.h"
#include "dataplane/protocol/mux_frame.h"
#include "dataplane/relay/endpoint.h"
#include "dataplane/relay/event_loop.h"

namespace sigil::dataplane::mux {

struct MuxOptions {
  bool client = true;
  uint32_t max_streams = 256;  // open at once on this connection
  std::chrono::milliseconds stream_idle_timeout{std::chrono::minutes(10)};
  std::chrono::milliseconds idle_close{std::chrono::seconds(60)};  // <= 0: never
  size_t max_buffered = 32 * 1024 * 1024;  // received bytes not yet written, all streams
};

struct StreamEnd {
  uint32_t id = 0;
  uint64_t sent = 0;      // bytes from the local socket to the peer
  uint64_t received = 0;  // bytes from the peer to the local socket
  bool reset = false;     // ended by a reset (either side, or the connection ending)
  std::string error;      // why, when reset
};

struct MuxHooks {
  // Server: the peer opened stream `id` to `dst`; answer with Accept or Refuse, now or later.
  std::function<void(uint32_t id, const Destination& dst)> on_open;
  // Client: the reply for stream `id`. For a code other than 200 the stream is already gone
  // (its local socket reset).
  std::function<void(uint32_t id, int code, std::string_view reason)> on_reply;
  // Every stream that was opened or accepted, once, when it ends.
  std::function<void(const StreamEnd&)> on_stream_end;
  // Once, after every stream has ended.
  std::function<void(const std::string& why)> on_closed;
};

// Optional per-stream rewriting of what the peer sends to the local socket (e.g. an HTTP header
// carrying the peer's verified identity), with a view of what the local socket answers.
// Called on the loop thread.
class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  // Takes a prefix of `in` (returns its length) and appends what the local socket should get
  // to `out`. It must take nothing while it holds more than it wants to buffer; the stream
  // calls again when `out` has drained.
  virtual size_t ToLocal(std::string_view in, ByteQueue& out) = 0;
  // Bytes the local socket sent towards the peer (passed on unchanged). True: ToLocal may take
  // more now (e.g. the answer to an upgrade request has arrived).
  virtual bool FromLocal(std::string_view bytes) = 0;
  // Non-empty once the filter refuses the stream (malformed input, ...); the stream is then
  // reset both ways and nothing more is written locally.
  virtual std::string Failure() const = 0;
};

struct MuxCounters {
  uint64_t streams_opened = 0;
  uint64_t frames_in = 0, frames_out = 0;
};

class MuxConnection : public std::enable_shared_from_this<MuxConnection> {
 public:
  static constexpr size_t kOutHigh = 512 * 1024;
  static constexpr size_t kOutLow = 128 * 1024;

  // `ep` has finished its handshake; `leftover` are bytes already read from it.
  static std::shared_ptr<MuxConnection> Start(EventLoop& loop, std::unique_ptr<Endpoint> ep,
                                              MuxOptions options, MuxHooks hooks,
                                              std::string leftover = {});
  ~MuxConnection();
  MuxConnection(const MuxConnection&) = delete;
  MuxConnection& operator=(const MuxConnection&) = delete;

  // Client: a stream from local socket `fd` to `dst`. Unavailable when closed or full.
  Result<uint32_t> Open(OwnedFd fd, const Destination& dst);
  // Server: the answer to on_open. Accept sends REPLY 200 and relays `fd`, after `prefix`
  // (e.g. a PROXY v2 header). Both are no-ops (Accept closes `fd`) if the stream is gone.
  void Accept(uint32_t id, OwnedFd fd, std::string_view prefix,
              std::unique_ptr<StreamFilter> filter = nullptr);
  void Refuse(uint32_t id, int code, std::string_view reason);
  // Resets every stream and closes the connection (RST).
  void Close(const std::string& why);

  bool closed() const { return closed_; }
  bool CanOpen() const { return !closed_ && !draining_ && streams_.size() < options_.max_streams; }
  // No new streams; the connection closes when the last one ends.
  void Drain();
  size_t stream_count() const { return streams_.size(); }
  const MuxCounters& counters() const { return counters_; }

 private:
  struct Stream;
  MuxConnection(EventLoop& loop, std::unique_ptr<Endpoint> ep, MuxOptions options, MuxHooks hooks);

  void OnConnEvent(uint32_t events);
  void Pump();        // read frames, flush output, until blocked
  void PostPump();    // Pump() from the loop, once
  void PostFlush();   // Flush() after the current batch of events, once
  bool ReadFrames();  // false: the connection closed
  bool HandleFrame(const Frame& f);
  void Flush();
  void ProtocolError(const std::string& why);

  Stream* Find(uint32_t id);
  Stream& NewStream(uint32_t id);
  void WatchStream(Stream& s);
  void OnStreamEvent(uint32_t id, uint32_t events);
  void PumpStream(Stream& s);  // may end (and erase) the stream
  void PostStreamPump(uint32_t id);
  void EndStream(Stream& s, bool reset, const std::string& error, bool send_rst);
  void Queue(std::string_view frame);
  void ResumeBlocked();
  void Tick();
  void Finish(const std::string& why, bool graceful);

  EventLoop& loop_;
  std::unique_ptr<Endpoint> ep_;
  MuxOptions options_;
  MuxHooks hooks_;
  std::shared_ptr<MuxConnection> self_;  // until closed
  std::unordered_map<uint32_t, std::unique_ptr<Stream>> streams_;
  std::vector<uint32_t> blocked_;  // streams waiting for the output queue to drain
  ByteQueue in_, out_;
  size_t buffered_ = 0;       // sum of streams' to_local bytes
  uint32_t next_id_ = 1;      // client: next stream id to open
  uint32_t last_opened_ = 0;  // server: highest id the peer opened
  bool readable_ = true, writable_ = true;
  bool read_needs_write_ = false;  // an OpenSSL read waits for write readiness
  bool write_needs_read_ = false;
  bool reading_paused_ = false;  // max_buffered reached
  bool pump_posted_ = false;
  bool flush_posted_ = false;
  bool closed_ = false;
  bool draining_ = false;
  std::chrono::steady_clock::time_point idle_since_;
  EventLoop::TimerId tick_ = 0;
  EventLoop::HookId stop_hook_ = 0;
  MuxCounters counters_;
};

}  // namespace sigil::dataplane::mux
