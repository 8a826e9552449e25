// EventLoop and LoopGroup: epoll + eventfd wakeups + an ordered timer map.
#include "dataplane/relay/event_loop.h"

#include <pthread.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <latch>
#include <string>

namespace sigil::dataplane {

namespace {

Error ErrnoError(std::string_view what, int err) {
  return Internal(std::string(what) + ": " + std::strerror(err));
}

void BlockSigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

}  // namespace

// ---- LoopRemote ----

bool LoopRemote::Post(std::function<void()> fn) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    wake = queue_.empty();
    queue_.push_back(std::move(fn));
  }
  if (wake) Wake();
  return true;
}

void LoopRemote::Wake() {
  uint64_t one = 1;
  // EAGAIN means the counter is saturated: the loop is awake anyway.
  [[maybe_unused]] ssize_t n = ::write(eventfd_.get(), &one, sizeof(one));
}

std::vector<std::function<void()>> LoopRemote::Take() {
  std::lock_guard lock(mu_);
  return std::exchange(queue_, {});
}

void LoopRemote::Close() {
  std::vector<std::function<void()>> dropped;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    dropped.swap(queue_);
  }
  // `dropped` is destroyed outside the lock: destructors may post (and fail) again.
}

// ---- EventLoop ----

Result<std::unique_ptr<EventLoop>> EventLoop::Create() {
  OwnedFd epfd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epfd.valid()) return ErrnoError("epoll_create1", errno);
  OwnedFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!efd.valid()) return ErrnoError("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  if (::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, efd.get(), &ev) != 0) {
    return ErrnoError("epoll_ctl(eventfd)", errno);
  }
  auto remote = std::make_shared<LoopRemote>(std::move(efd));
  return std::unique_ptr<EventLoop>(new EventLoop(std::move(epfd), std::move(remote)));
}

EventLoop::EventLoop(OwnedFd epfd, std::shared_ptr<LoopRemote> remote)
    : epfd_(std::move(epfd)),
      remote_(std::move(remote)),
      loop_thread_(std::this_thread::get_id()) {}

EventLoop::~EventLoop() {
  // Whoever destroys the loop acts as its thread from now on (the Run() thread has returned).
  loop_thread_.store(std::this_thread::get_id());
  RunStopHooks();
  remote_->Close();
  // Destroy callbacks outside the containers: a destructor must not see half-erased maps.
  auto watchers = std::exchange(watchers_, {});
  watches_.clear();
  auto timers = std::exchange(timers_, {});
  timer_deadlines_.clear();
  auto posts = std::exchange(local_posts_, {});
}

bool EventLoop::InLoopThread() const { return loop_thread_.load() == std::this_thread::get_id(); }

void EventLoop::Stop() {
  stop_.store(true, std::memory_order_release);
  remote_->Wake();
}

void EventLoop::Post(std::function<void()> fn) {
  if (InLoopThread()) {
    local_posts_.push_back(std::move(fn));
    return;
  }
  remote_->Post(std::move(fn));
}

void EventLoop::Run() {
  loop_thread_.store(std::this_thread::get_id());
  BlockSigpipe();
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  while (!stop_.load(std::memory_order_acquire)) {
    int n = ::epoll_wait(epfd_.get(), events, kMaxEvents, NextTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EBADF/EINVAL: unrecoverable, behave as stopped
    }
    for (int i = 0; i < n; ++i) {
      uint64_t token = events[i].data.u64;
      if (token == 0) {
        uint64_t count;
        while (::read(remote_->eventfd_.get(), &count, sizeof(count)) > 0) {
        }
        continue;
      }
      auto it = watchers_.find(token);
      if (it == watchers_.end()) continue;  // unwatched earlier in this batch
      // Hold the watcher: its callback may Unwatch (and so erase) itself.
      std::shared_ptr<Watcher> w = it->second;
      w->cb(events[i].events);
    }
    RunTimers();
    RunPosted();
  }
  RunStopHooks();
}

int EventLoop::NextTimeoutMs() const {
  if (!local_posts_.empty()) return 0;
  if (timers_.empty()) return -1;
  auto delta = timers_.begin()->first.first - Clock::now();
  if (delta <= Clock::duration::zero()) return 0;
  // Round up: waking early would only spin.
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(delta).count();
  return ms > 60'000 ? 60'000 : static_cast<int>(ms);
}

void EventLoop::RunTimers() {
  if (timers_.empty()) return;
  const auto now = Clock::now();
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    auto it = timers_.begin();
    std::function<void()> fn = std::move(it->second);
    timer_deadlines_.erase(it->first.second);
    timers_.erase(it);
    if (fn) fn();
  }
}

void EventLoop::RunPosted() {
  if (!local_posts_.empty()) {
    auto posts = std::exchange(local_posts_, {});
    for (auto& fn : posts) fn();
  }
  auto remote = remote_->Take();
  for (auto& fn : remote) fn();
}

void EventLoop::RunStopHooks() {
  // A hook may add or remove other hooks; take them one at a time.
  while (!stop_hooks_.empty()) {
    auto it = stop_hooks_.begin();
    std::function<void()> fn = std::move(it->second);
    stop_hooks_.erase(it);
    if (fn) fn();
  }
}

Result<void> EventLoop::Watch(int fd, uint32_t events, IoCallback cb) {
  if (fd < 0) return InvalidArgument("watch: negative fd");
  if (watches_.contains(fd))
    return AlreadyExists("watch: fd " + std::to_string(fd) + " already watched");
  uint64_t token = next_token_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return ErrnoError("epoll_ctl(ADD)", errno);
  }
  watches_.emplace(fd, token);
  watchers_.emplace(token, std::make_shared<Watcher>(Watcher{fd, std::move(cb)}));
  return Ok();
}

Result<void> EventLoop::Modify(int fd, uint32_t events) {
  auto it = watches_.find(fd);
  if (it == watches_.end()) return NotFound("modify: fd " + std::to_string(fd) + " not watched");
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = it->second;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev) != 0) {
    return ErrnoError("epoll_ctl(MOD)", errno);
  }
  return Ok();
}

void EventLoop::Unwatch(int fd) {
  auto it = watches_.find(fd);
  if (it == watches_.end()) return;
  ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);  // fails harmlessly if fd closed
  auto w = watchers_.extract(it->second);
  watches_.erase(it);
  // `w` (and the callback's captures) are destroyed here, after the maps are consistent.
}

EventLoop::TimerId EventLoop::AddTimer(std::chrono::milliseconds after, std::function<void()> fn) {
  TimerId id = next_timer_++;
  auto deadline = Clock::now() + after;
  timers_.emplace(std::make_pair(deadline, id), std::move(fn));
  timer_deadlines_.emplace(id, deadline);
  return id;
}

void EventLoop::CancelTimer(TimerId id) {
  auto it = timer_deadlines_.find(id);
  if (it == timer_deadlines_.end()) return;
  auto node = timers_.extract(std::make_pair(it->second, id));
  timer_deadlines_.erase(it);
}

EventLoop::HookId EventLoop::AddStopHook(std::function<void()> fn) {
  HookId id = next_hook_++;
  stop_hooks_.emplace(id, std::move(fn));
  return id;
}

void EventLoop::RemoveStopHook(HookId id) { auto node = stop_hooks_.extract(id); }

// ---- LoopGroup ----

Result<std::unique_ptr<LoopGroup>> LoopGroup::Start(size_t n) {
  if (n == 0) n = std::thread::hardware_concurrency();
  if (n == 0) n = 1;
  std::unique_ptr<LoopGroup> group(new LoopGroup());
  for (size_t i = 0; i < n; ++i) {
    SIGIL_ASSIGN_OR_RETURN(auto loop, EventLoop::Create());
    group->loops_.push_back(std::move(loop));
  }
  // Each thread claims its loop before Start returns, so that InLoopThread() is never true
  // for the creating thread of a loop that is already running elsewhere.
  std::latch bound(static_cast<std::ptrdiff_t>(n));
  for (auto& loop : group->loops_) {
    EventLoop* l = loop.get();
    group->threads_.emplace_back([l, &bound] {
      l->loop_thread_.store(std::this_thread::get_id());
      bound.count_down();
      l->Run();
    });
  }
  bound.wait();
  return group;
}

LoopGroup::~LoopGroup() {
  Stop();
  // Loops are destroyed on this thread after their threads have joined.
  loops_.clear();
}

EventLoop& LoopGroup::Next() {
  return *loops_[next_.fetch_add(1, std::memory_order_relaxed) % loops_.size()];
}

void LoopGroup::Stop() {
  std::lock_guard lock(stop_mu_);
  for (auto& loop : loops_) loop->Stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

}  // namespace sigil::dataplane
