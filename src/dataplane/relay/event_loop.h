// EventLoop: one epoll loop driven by one thread; LoopGroup: N loops on N threads.
//
// Threading: Post() and Stop() (and LoopRemote::Post) may be called from any thread; every
// other member runs on the loop thread only. Before Run() starts, the thread that created the
// loop counts as its loop thread, so a loop can be set up and then run on the same thread.
//
// Readiness: Watch() passes `events` to epoll_ctl unchanged, so the caller chooses level- or
// edge-triggering (add EPOLLET). Everything in this library (relay, async helpers) registers
// edge-triggered EPOLLIN|EPOLLOUT|EPOLLRDHUP once and tracks readiness itself.
//
// Stopping: Stop() is sticky (a stopped loop cannot run again). When Run() returns, and when
// a loop is destroyed, the stop hooks of everything still pending on the loop (relays, async
// connects, handshakes, ...) run on the loop's thread, so every completion callback still runs
// exactly once (with an error) and every relay is aborted. Posted functions and timers left
// over after that are destroyed without running.
//
// Run() blocks SIGPIPE in the calling thread: OpenSSL's socket BIO and splice() write to
// sockets without MSG_NOSIGNAL, and a peer reset must be an error, not a dead process.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/owned_fd.h"
#include "common/result.h"

namespace sigil::dataplane {

// The thread-safe part of a loop: a queue of functions and the eventfd that wakes the loop.
// It outlives the loop when something (a RelayHandle) holds it; Post() then returns false.
class LoopRemote {
 public:
  explicit LoopRemote(OwnedFd eventfd) : eventfd_(std::move(eventfd)) {}
  // Queues `fn` to run on the loop thread. Returns false (and drops fn) if the loop is gone.
  bool Post(std::function<void()> fn);
  void Wake();

 private:
  friend class EventLoop;
  std::vector<std::function<void()>> Take();
  void Close();

  std::mutex mu_;
  std::vector<std::function<void()>> queue_;  // guarded by mu_
  bool closed_ = false;                       // guarded by mu_
  OwnedFd eventfd_;
};

class EventLoop {
 public:
  static Result<std::unique_ptr<EventLoop>> Create();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs until Stop(), then runs the stop hooks.
  void Run();
  // Thread-safe, sticky.
  void Stop();
  bool stopped() const { return stop_.load(std::memory_order_acquire); }
  // Thread-safe. From the loop thread the function runs after the current event batch
  // without a wakeup syscall.
  void Post(std::function<void()> fn);
  bool InLoopThread() const;
  // A handle that can post to this loop from any thread for as long as the loop exists.
  std::shared_ptr<LoopRemote> remote() const { return remote_; }

  using IoCallback = std::function<void(uint32_t epoll_events)>;
  // Registers `fd` (not owned). Events are passed to epoll unchanged (see the header comment).
  // A callback may Unwatch any fd, including its own; events already collected for an fd that
  // has been unwatched are dropped, even if the fd number is reused in the same batch.
  Result<void> Watch(int fd, uint32_t events, IoCallback cb);
  Result<void> Modify(int fd, uint32_t events);
  void Unwatch(int fd);  // no-op if not watched
  bool Watching(int fd) const { return watches_.contains(fd); }

  using TimerId = uint64_t;  // never 0
  TimerId AddTimer(std::chrono::milliseconds after, std::function<void()> fn);
  void CancelTimer(TimerId id);  // no-op if already run or cancelled

  // Stop hooks: run once on the loop thread when the loop stops (see the header comment).
  using HookId = uint64_t;
  HookId AddStopHook(std::function<void()> fn);
  void RemoveStopHook(HookId id);

  size_t watch_count() const { return watches_.size(); }
  size_t timer_count() const { return timers_.size(); }

 private:
  friend class LoopGroup;
  using Clock = std::chrono::steady_clock;
  struct Watcher {
    int fd;
    IoCallback cb;
  };

  EventLoop(OwnedFd epfd, std::shared_ptr<LoopRemote> remote);
  int NextTimeoutMs() const;
  void RunTimers();
  void RunPosted();
  void RunStopHooks();

  OwnedFd epfd_;
  std::shared_ptr<LoopRemote> remote_;
  std::atomic<bool> stop_{false};
  std::atomic<std::thread::id> loop_thread_;

  uint64_t next_token_ = 1;                                          // 0 is the eventfd
  std::unordered_map<int, uint64_t> watches_;                        // fd -> token
  std::unordered_map<uint64_t, std::shared_ptr<Watcher>> watchers_;  // token -> watcher

  TimerId next_timer_ = 1;
  std::map<std::pair<Clock::time_point, TimerId>, std::function<void()>> timers_;
  std::unordered_map<TimerId, Clock::time_point> timer_deadlines_;

  std::vector<std::function<void()>> local_posts_;

  HookId next_hook_ = 1;
  std::map<HookId, std::function<void()>> stop_hooks_;
};

// N loops on N threads. Next() is thread-safe (round-robin).
class LoopGroup {
 public:
  // n == 0: one loop per core.
  static Result<std::unique_ptr<LoopGroup>> Start(size_t n);
  ~LoopGroup();
  LoopGroup(const LoopGroup&) = delete;
  LoopGroup& operator=(const LoopGroup&) = delete;

  EventLoop& Next();
  EventLoop& at(size_t i) { return *loops_[i]; }
  size_t size() const { return loops_.size(); }
  // Stops every loop and joins its thread; live relays are aborted by their stop hooks.
  // Idempotent. Must not be called from one of the group's own loop threads.
  void Stop();

 private:
  LoopGroup() = default;
  std::vector<std::unique_ptr<EventLoop>> loops_;
  std::vector<std::thread> threads_;
  std::atomic<size_t> next_{0};
  std::mutex stop_mu_;
};

}  // namespace sigil::dataplane
