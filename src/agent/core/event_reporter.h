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
    size_t max_queued = 16384;  // ~4 MiB; the oldest are dropped (and counted) beyond
    size_t max_batch = 256;     // the server's limit per report
    // Queued events that make a report go at once; fewer wait at most `interval`. Larger
    // batches cost the server less per event (one commit each) but arrive as longer bursts of
    // work, which on a node shared with the server shows up in request latency.
    size_t send_at = 32;
    std::chrono::milliseconds interval{500};
  };

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
  bool SendSome();  // false when the server could not take them
  size_t SendAt() const { return std::clamp<size_t>(options_.send_at, 1, options_.max_batch); }

  const SendFn send_;
  Logger& log_;
  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<sigil::agent::v1::AgentEvent> queue_;
  uint64_t sent_ = 0, dropped_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace sigil::agent
