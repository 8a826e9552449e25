#include "server/audit_batcher.h"

namespace sigil::server {

Result<uint64_t> AuditBatcher::Append(store::AuditEvent event) {
  auto me = std::make_shared<Waiter>();
  me->event = std::move(event);
  std::unique_lock lock(mu_);
  queue_.push_back(me);
  while (!me->result) {
    if (!leader_active_) {
      // Lead: commit everything queued so far (including our own event) in one transaction.
      leader_active_ = true;
      std::vector<std::shared_ptr<Waiter>> batch;
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      lock.unlock();
      std::vector<store::AuditEvent> events;
      events.reserve(batch.size());
      for (const auto& w : batch) events.push_back(w->event);
      auto seqs = store_.AppendAudit(events);
      lock.lock();
      for (size_t i = 0; i < batch.size(); ++i) {
        if (seqs.ok() && i < seqs->size()) {
          batch[i]->result = (*seqs)[i];
        } else {
          batch[i]->result = seqs.ok() ? Result<uint64_t>(Internal("audit: no seq returned"))
                                       : Result<uint64_t>(seqs.error());
        }
      }
      ++batches_;
      leader_active_ = false;
      cv_.notify_all();
    } else {
      cv_.wait(lock);
    }
  }
  return *me->result;
}

uint64_t AuditBatcher::batches() const {
  std::lock_guard lock(mu_);
  return batches_;
}

}  // namespace sigil::server
