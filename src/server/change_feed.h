// ChangeFeed: one reader of the store's change log, shared by every Sync stream.
//
// Without it each open Sync stream polled the store and re-read the change log itself, so one
// policy change cost N store queries for N connected agents, and idle agents cost N revision
// reads per poll interval. The feed runs one thread that waits for commits
// (Store::WaitForChange), reads each new page of changes once, keeps the most recent
// `window` changes in memory and wakes the streams; a stream then copies its delta out of
// memory. A stream whose position is older than the window (a slow consumer, or one resuming
// from an old revision) reads the store directly, as before.
//
// The feed also watches the trust bundle's sequence number, so streams learn about a CA
// rotation without serialising the bundle on every wake-up. An optional observer sees every
// page of changes before the streams do (the control plane re-reads its authority set when
// another server replica changed it; the bundle check that follows then wakes the streams).
//
// Thread-safe. Start() once; Stop() (or the destructor) wakes every waiter.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/result.h"
#include "store/store.h"

namespace sigil::server {

// Changes held in memory: enough for a burst of policy edits while some streams lag.
inline constexpr size_t kDefaultFeedWindow = 16384;

class ChangeFeed {
 public:
  struct Position {
    uint64_t revision = 0;
    uint64_t bundle_sequence = 0;
    bool operator==(const Position&) const = default;
  };

  // `bundle_sequence` reports the current trust bundle sequence (cheap; called by the feed
  // thread once per wake-up).
  using Observer = std::function<void(const std::vector<store::Change>& changes)>;
  ChangeFeed(store::Store& store, std::function<uint64_t()> bundle_sequence,
             size_t window = kDefaultFeedWindow, Observer observer = {});
  ~ChangeFeed();
  ChangeFeed(const ChangeFeed&) = delete;
  ChangeFeed& operator=(const ChangeFeed&) = delete;

  Result<void> Start();
  void Stop();
  bool stopped() const;

  // Started and not stopped.
  bool running() const;
  // Blocks until the feed is past `seen.revision` or its bundle sequence differs, `timeout` passes
  // or Stop(); returns the feed's position then.
  Position Wait(const Position& seen, std::chrono::milliseconds timeout) const;
  Position Current() const;

  // Changes with revision > `after` held in memory, at most about `limit` (whole revisions).
  // FailedPrecondition when `after` is outside the window (older, or newer than the feed has
  // read) or the feed is not running: read the store instead.
  Result<store::ChangePage> Since(uint64_t after, uint32_t limit) const;

 private:
  void Run();
  void Append(std::vector<store::Change> changes, uint64_t revision);

  store::Store& store_;
  const std::function<uint64_t()> bundle_sequence_;
  const size_t window_;
  const Observer observer_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Position position_;                  // guarded by mu_
  uint64_t window_start_ = 0;          // guarded by mu_: all changes > this are in changes_
  std::deque<store::Change> changes_;  // guarded by mu_, ordered by revision
  bool started_ = false;               // guarded by mu_
  bool stop_ = false;                  // guarded by mu_
  std::thread thread_;
};

}  // namespace sigil::server
