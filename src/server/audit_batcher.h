// AuditBatcher: group commit for audit records on the issuance path.
//
// Every SVID, JWT and credential grant is audited before it is returned, and each audit append
// is a durable (fsynced) store transaction. One transaction per issuance capped throughput at
// the disk's fsync rate. The batcher lets concurrent callers share a transaction: a caller
// queues its event and waits; the first waiting caller becomes the leader, takes every queued
// event, appends them with one Store::AppendAudit call and wakes the others with the outcome.
// Callers still return only after their record is durable, so "nothing leaves unaudited"
// holds. With one caller at a time it degenerates to one append per call (no added latency).
//
// Thread-safe. No thread of its own.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "common/result.h"
#include "store/store.h"

namespace sigil::server {

class AuditBatcher {
 public:
  explicit AuditBatcher(store::Store& store, size_t max_batch = 256)
      : store_(store), max_batch_(max_batch) {}

  // Appends `event`; returns once it is durably committed (or the batch failed). Returns the
  // record's seq.
  Result<uint64_t> Append(store::AuditEvent event);

  uint64_t batches() const;  // transactions committed (for tests)

 private:
  struct Waiter {
    store::AuditEvent event;
    std::optional<Result<uint64_t>> result;  // set by the leader
  };

  store::Store& store_;
  const size_t max_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Waiter>> queue_;  // guarded by mu_
  bool leader_active_ = false;                 // guarded by mu_
  uint64_t batches_ = 0;                       // guarded by mu_
};

}  // namespace sigil::server
