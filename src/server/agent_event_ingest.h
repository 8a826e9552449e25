// AgentEventIngest: the thread that appends what agents report (ReportEvents) to the audit
// trail.
//
// Agents report in the background (a data plane denial, a credential use, a connection's batch
// of injected requests), and nothing waits on these records but the agent's reporter. So the
// work runs on one thread of its own at a lower CPU priority (nice +10 by default) than the
// server's request paths and whatever shares the node with it: on a node that also runs an
// agent and its workloads, ingesting a report no longer competes on equal terms with the
// requests being proxied (docs/benchmarks.md, "Credential injection"). Reports that arrive
// together share one transaction (group commit), so many agents cost one fsync per round
// rather than one each.
//
// Append returns only once the records are durable (or failed), so an agent drops an event
// from its queue only after the server committed it. A shared transaction that fails is
// retried report by report, so one report the store refuses cannot fail another agent's.
//
// The thread holds the store's write lock while it appends, at its lower priority: another
// writer (an issuance audit) may wait for one such transaction plus the time this thread waits
// for a CPU. On a busy node that can be a few milliseconds; a report is at most 256 records.
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/result.h"
#include "store/store.h"

namespace sigil::server {

class AgentEventIngest {
 public:
  struct Options {
    int nice = 10;            // added to the thread's nice value (best effort; 0: unchanged)
    size_t max_batch = 4096;  // records per shared transaction (whole reports only)
  };
  AgentEventIngest(store::Store& store, Options options);
  ~AgentEventIngest();  // appends what is queued, then joins the thread
  AgentEventIngest(const AgentEventIngest&) = delete;
  AgentEventIngest& operator=(const AgentEventIngest&) = delete;

  // Appends `events` (one report) and returns their seqs once durable.
  Result<std::vector<uint64_t>> Append(std::vector<store::AuditEvent> events);

  uint64_t transactions() const;  // rounds of the ingest thread, each one shared transaction
                                  // (committed or not; for tests)

 private:
  struct Job {
    std::vector<store::AuditEvent> events;
    std::optional<Result<std::vector<uint64_t>>> result;  // set by the thread
  };
  void Run();
  void Commit(std::vector<std::shared_ptr<Job>>& jobs);

  store::Store& store_;
  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::shared_ptr<Job>> queue_;  // guarded by mu_
  bool stopping_ = false;                   // guarded by mu_
  uint64_t transactions_ = 0;               // guarded by mu_
  std::thread thread_;
};

}  // namespace sigil::server
