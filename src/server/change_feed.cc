#include "server/change_feed.h"

#include <algorithm>

namespace sigil::server {
namespace {

constexpr std::chrono::milliseconds kFeedWait{500};
constexpr uint32_t kFeedPage = 1000;

}  // namespace

ChangeFeed::ChangeFeed(store::Store& store, std::function<uint64_t()> bundle_sequence,
                       size_t window, Observer observer)
    : store_(store),
      bundle_sequence_(std::move(bundle_sequence)),
      window_(window),
      observer_(std::move(observer)) {}

ChangeFeed::~ChangeFeed() { Stop(); }

Result<void> ChangeFeed::Start() {
  SIGIL_ASSIGN_OR_RETURN(uint64_t revision, store_.CurrentRevision());
  {
    std::lock_guard lock(mu_);
    position_ = {revision, bundle_sequence_()};
    window_start_ = revision;
    started_ = true;
  }
  thread_ = std::thread([this] { Run(); });
  return Ok();
}

void ChangeFeed::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool ChangeFeed::running() const {
  std::lock_guard lock(mu_);
  return started_ && !stop_;
}

bool ChangeFeed::stopped() const {
  std::lock_guard lock(mu_);
  return stop_;
}

ChangeFeed::Position ChangeFeed::Current() const {
  std::lock_guard lock(mu_);
  return position_;
}

ChangeFeed::Position ChangeFeed::Wait(const Position& seen,
                                      std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] {
    return stop_ || position_.revision > seen.revision ||
           position_.bundle_sequence != seen.bundle_sequence;
  });
  return position_;
}

Result<store::ChangePage> ChangeFeed::Since(uint64_t after, uint32_t limit) const {
  std::lock_guard lock(mu_);
  if (!started_ || stop_ || after < window_start_ || after > position_.revision) {
    return FailedPrecondition("change feed: revision " + std::to_string(after) +
                              " is older than the in-memory window");
  }
  store::ChangePage page;
  page.revision = position_.revision;
  auto it = std::upper_bound(changes_.begin(), changes_.end(), after,
                             [](uint64_t rev, const store::Change& c) { return rev < c.revision; });
  for (; it != changes_.end(); ++it) {
    if (page.changes.size() >= limit && it->revision != page.changes.back().revision) {
      page.revision = page.changes.back().revision;
      page.more = true;
      break;
    }
    page.changes.push_back(*it);
  }
  return page;
}

void ChangeFeed::Append(std::vector<store::Change> changes, uint64_t revision) {
  {
    std::lock_guard lock(mu_);
    for (auto& c : changes) changes_.push_back(std::move(c));
    position_.revision = revision;
    // Trim whole revisions from the front once over the window.
    while (changes_.size() > window_) {
      const uint64_t dropped = changes_.front().revision;
      while (!changes_.empty() && changes_.front().revision == dropped) changes_.pop_front();
      window_start_ = dropped;
    }
  }
  cv_.notify_all();
}

void ChangeFeed::Run() {
  uint64_t revision = Current().revision;
  while (!stopped()) {
    auto current = store_.WaitForChange(revision, kFeedWait);
    if (current.ok() && *current > revision) {
      bool more = true;
      while (more && !stopped()) {
        auto page = store_.ChangesSince(revision, kFeedPage);
        if (!page.ok()) {
          if (page.error().code() == ErrorCode::kFailedPrecondition) {
            // Compacted past the feed (should not happen: compaction keeps recent history).
            // Restart the window at the store's revision; streams behind it read the store.
            std::lock_guard lock(mu_);
            changes_.clear();
            window_start_ = *current;
            position_.revision = *current;
            revision = *current;
          }
          cv_.notify_all();
          break;
        }
        revision = page->revision;
        more = page->more;
        if (observer_) observer_(page->changes);
        Append(std::move(page->changes), revision);
      }
    }
    const uint64_t sequence = bundle_sequence_();
    bool changed = false;
    {
      std::lock_guard lock(mu_);
      if (position_.bundle_sequence != sequence) {
        position_.bundle_sequence = sequence;
        changed = true;
      }
    }
    if (changed) cv_.notify_all();
  }
}

}  // namespace sigil::server
