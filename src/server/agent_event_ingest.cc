#include "server/agent_event_ingest.h"

#include "common/thread_util.h"

namespace sigil::server {

AgentEventIngest::AgentEventIngest(store::Store& store, Options options)
    : store_(store), options_(options) {
  thread_ = std::thread([this] { Run(); });
}

AgentEventIngest::~AgentEventIngest() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Result<std::vector<uint64_t>> AgentEventIngest::Append(std::vector<store::AuditEvent> events) {
  auto job = std::make_shared<Job>();
  job->events = std::move(events);
  std::unique_lock lock(mu_);
  if (stopping_) return Unavailable("audit ingest: the server is stopping");
  queue_.push_back(job);
  work_cv_.notify_one();
  done_cv_.wait(lock, [&] { return job->result.has_value(); });
  return std::move(*job->result);
}

uint64_t AgentEventIngest::transactions() const {
  std::lock_guard lock(mu_);
  return transactions_;
}

void AgentEventIngest::Run() {
  ConfigureThisThread("sigil-audit-in", options_.nice);
  for (;;) {
    std::vector<std::shared_ptr<Job>> jobs;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      size_t n = 0;
      while (!queue_.empty() &&
             (jobs.empty() || n + queue_.front()->events.size() <= options_.max_batch)) {
        n += queue_.front()->events.size();
        jobs.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    Commit(jobs);
    {
      std::lock_guard lock(mu_);
      ++transactions_;
    }
    done_cv_.notify_all();
  }
}

void AgentEventIngest::Commit(std::vector<std::shared_ptr<Job>>& jobs) {
  auto finish = [this](Job& job, Result<std::vector<uint64_t>> r) {
    std::lock_guard lock(mu_);
    job.result = std::move(r);
  };
  if (jobs.size() == 1) return finish(*jobs[0], store_.AppendAudit(jobs[0]->events));
  std::vector<store::AuditEvent> all;
  for (const auto& j : jobs) all.insert(all.end(), j->events.begin(), j->events.end());
  auto seqs = store_.AppendAudit(all);
  if (!seqs.ok()) {
    // One report's records may be what the store refused: each on its own, so the others
    // still land.
    for (auto& j : jobs) finish(*j, store_.AppendAudit(j->events));
    return;
  }
  size_t at = 0;
  for (auto& j : jobs) {
    const size_t n = j->events.size();
    finish(*j, std::vector<uint64_t>(seqs->begin() + static_cast<std::ptrdiff_t>(at),
                                     seqs->begin() + static_cast<std::ptrdiff_t>(at + n)));
    at += n;
  }
}

}  // namespace sigil::server
