// EventReporter: a bounded queue of audit events the agent witnessed (data plane denials, later
// credential uses), sent to the server in batches (ReportEvents) from one thread. Events are
// kept while the server is unreachable; when the queue is full the oldest are dropped and
// counted, so a long outage costs bounded memory and the operator sees how much was lost.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "common/result.h"
#include "proto/agent.pb.h"

namespace sigil::agent {

class EventReporter {
 public:
  using SendFn = std::function<Result<void>(const sigil::agent::v1::ReportEventsRequest&)>;
  struct Options {
    // Bounds of the queue; the oldest events are dropped (and counted) beyond either.
    size_t max_queued = 16384;
    size_t max_queued_bytes = size_t{8} << 20;
    // Bounds of one report: the server takes 256 events, and gRPC 4 MiB per message.
    size_t max_batch = 256;
    size_t max_batch_bytes = size_t{1} << 20;
    // Queued events, or bytes of them, that make a report go at once; less waits at most
    // `interval`. Larger reports cost the server less per event (one commit each) but arrive
    // as longer bursts of work, which on a node shared with the server shows up in request
    // latency. An inject record (a connection's batch of up to 32 requests) is 1-9 KiB, so
    // such records go one or two per report: in the inject benchmark 4 KiB gave the lowest
    // p99 (docs/benchmarks.md), for ~0.02 CPU more on the server than 64 KiB.
    size_t send_at = 32;
    size_t send_at_bytes = 4 * 1024;
    std::chrono::milliseconds interval{500};
    // Added to the sending thread's nice value (best effort): reports are background work
    // and must not compete on equal terms with the data plane's event loops.
    int nice = 10;
  };
  // What an event counts for against the byte bounds (its strings, plus framing).
  static size_t EventBytes(const sigil::agent::v1::AgentEvent& e);

  EventReporter(SendFn send, Logger& log) : EventReporter(std::move(send), log, Options{}) {}
  EventReporter(SendFn send, Logger& log, Options options);
  ~EventReporter();

  void Report(sigil::agent::v1::AgentEvent event);  // thread-safe, never blocks on the network
  // Sends what is queued (one last attempt) and stops the thread.
  void Stop();

  uint64_t sent() const;
  uint64_t dropped() const;

 private:
  void Run();
  bool SendSome();              // false when the server could not take them
  void DropOverBoundsLocked();  // mu_ held: the oldest go until the queue is within bounds
  size_t SendAt() const { return std::clamp<size_t>(options_.send_at, 1, options_.max_batch); }
  bool ReportDue() const {  // mu_ held
    return queue_.size() >= SendAt() || queued_bytes_ >= options_.send_at_bytes;
  }

  const SendFn send_;
  Logger& log_;
  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<sigil::agent::v1::AgentEvent> queue_;
  size_t queued_bytes_ = 0;  // EventBytes of queue_
  uint64_t sent_ = 0, dropped_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace sigil::agent
