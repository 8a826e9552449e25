// EventLoop / LoopGroup: posting across threads, timers, watch/unwatch from callbacks, stop
// hooks; KernelTlsAvailable probe.
#include "dataplane/relay/event_loop.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "dataplane/relay/ktls.h"
#include "dataplane/relay/test_util.h"

namespace sigil::dataplane {
namespace {

using namespace std::chrono_literals;

TEST(EventLoopTest, PostFromManyThreadsRunsEverythingOnLoopThread) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok()) << loop.error().ToString();
  EventLoop& l = **loop;
  std::thread runner;
  std::atomic<bool> started{false};
  runner = std::thread([&] {
    started = true;
    l.Run();
  });
  while (!started) std::this_thread::yield();
  std::atomic<int> count{0};
  std::atomic<int> wrong_thread{0};
  std::vector<std::thread> posters;
  for (int t = 0; t < 4; ++t) {
    posters.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        l.Post([&] {
          if (!l.InLoopThread()) ++wrong_thread;
          ++count;
        });
      }
    });
  }
  for (auto& t : posters) t.join();
  testing::RunOn(l, [] {});
  EXPECT_EQ(count.load(), 40000);
  EXPECT_EQ(wrong_thread.load(), 0);
  EXPECT_FALSE(l.InLoopThread());
  l.Stop();
  runner.join();
}

TEST(EventLoopTest, TimersFireInOrderAndCancelWorks) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  EventLoop& l = **loop;
  std::vector<int> order;
  l.AddTimer(30ms, [&] { order.push_back(3); });
  l.AddTimer(10ms, [&] { order.push_back(1); });
  auto cancelled = l.AddTimer(20ms, [&] { order.push_back(99); });
  l.AddTimer(20ms, [&] { order.push_back(2); });
  l.CancelTimer(cancelled);
  l.CancelTimer(cancelled);  // twice is fine
  l.AddTimer(50ms, [&] { l.Stop(); });
  auto start = std::chrono::steady_clock::now();
  l.Run();  // same thread that created it
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_GE(elapsed, 50ms);
  EXPECT_LT(elapsed, 5s);
}

TEST(EventLoopTest, WatchLevelAndEdgeTriggeredAndUnwatchInsideCallback) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  EventLoop& l = **loop;
  OwnedFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  OwnedFd efd2(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  int level_calls = 0;
  int edge_calls = 0;
  uint64_t one = 1;
  ASSERT_EQ(::write(efd.get(), &one, sizeof(one)), 8);
  ASSERT_EQ(::write(efd2.get(), &one, sizeof(one)), 8);
  // Level-triggered, never drained: fires every iteration until it unwatches itself.
  ASSERT_TRUE(l.Watch(efd.get(), EPOLLIN, [&](uint32_t ev) {
                 EXPECT_TRUE(ev & EPOLLIN);
                 if (++level_calls == 3) l.Unwatch(efd.get());
               }).ok());
  // Edge-triggered, never drained: fires once.
  ASSERT_TRUE(l.Watch(efd2.get(), EPOLLIN | EPOLLET, [&](uint32_t) { ++edge_calls; }).ok());
  EXPECT_FALSE(l.Watch(efd2.get(), EPOLLIN, [](uint32_t) {}).ok());  // already watched
  EXPECT_TRUE(l.Modify(efd2.get(), EPOLLIN | EPOLLET).ok());
  EXPECT_FALSE(l.Modify(12345, EPOLLIN).ok());
  l.AddTimer(100ms, [&] { l.Stop(); });
  l.Run();
  EXPECT_EQ(level_calls, 3);
  EXPECT_GE(edge_calls, 1);
  EXPECT_LE(edge_calls, 2);  // the Modify may re-report the ready state once
  EXPECT_FALSE(l.Watching(efd.get()));
  l.Unwatch(efd2.get());
  l.Unwatch(efd2.get());
  EXPECT_EQ(l.watch_count(), 0u);
}

TEST(EventLoopTest, StopHooksRunOnStopAndOnDestruction) {
  int ran = 0;
  {
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok());
    EventLoop& l = **loop;
    l.AddStopHook([&] { ++ran; });
    auto removed = l.AddStopHook([&] { ran += 100; });
    l.RemoveStopHook(removed);
    l.Post([&] { l.Stop(); });
    l.Run();
    EXPECT_EQ(ran, 1);
    l.AddStopHook([&] { ran += 10; });  // after Run: runs at destruction
  }
  EXPECT_EQ(ran, 11);
}

TEST(EventLoopTest, PostAfterLoopGoneIsDropped) {
  std::shared_ptr<LoopRemote> remote;
  {
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok());
    remote = (*loop)->remote();
    EXPECT_TRUE(remote->Post([] {}));
  }
  EXPECT_FALSE(remote->Post([] { ADD_FAILURE() << "ran after loop destruction"; }));
}

TEST(LoopGroupTest, RoundRobinAcrossThreads) {
  auto group = LoopGroup::Start(3);
  ASSERT_TRUE(group.ok());
  EXPECT_EQ((*group)->size(), 3u);
  EventLoop* first = &(*group)->Next();
  EventLoop* second = &(*group)->Next();
  EventLoop* third = &(*group)->Next();
  EXPECT_NE(first, second);
  EXPECT_NE(second, third);
  EXPECT_EQ(first, &(*group)->Next());
  std::atomic<int> n{0};
  for (int i = 0; i < 3; ++i) {
    EventLoop& l = (*group)->Next();
    testing::RunOn(l, [&] {
      EXPECT_TRUE(l.InLoopThread());
      ++n;
    });
  }
  EXPECT_EQ(n.load(), 3);
  (*group)->Stop();
  (*group)->Stop();  // idempotent
  auto def = LoopGroup::Start(0);
  ASSERT_TRUE(def.ok());
  EXPECT_EQ((*def)->size(), std::max(1u, std::thread::hardware_concurrency()));
}

TEST(KernelTlsTest, ProbeIsStable) {
  bool available = KernelTlsAvailable();
  EXPECT_EQ(available, KernelTlsAvailable());
  std::printf("[ INFO ] kernel TLS (TCP_ULP tls) available: %s\n", available ? "yes" : "no");
}

}  // namespace
}  // namespace sigil::dataplane
