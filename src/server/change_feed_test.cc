// ChangeFeed over a real SQLite store: one reader, many waiters, bounded window.
#include "server/change_feed.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "store/sqlite_store.h"

namespace sigil::server {
namespace {

using namespace std::chrono_literals;

store::ResourceWrite Put(const std::string& name) {
  return {"Service", name, "{}", store::WriteOp::kUpsert, std::nullopt};
}

class ChangeFeedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::SqliteStore::Open(":memory:");
    ASSERT_TRUE(s.ok());
    store_ = std::move(s).value();
  }
  void Apply(const std::string& name) {
    auto w = Put(name);
    ASSERT_TRUE(store_->Apply(std::span(&w, 1), {}).ok());
  }
  std::unique_ptr<store::SqliteStore> store_;
  std::atomic<uint64_t> bundle_sequence_{1};
};

TEST_F(ChangeFeedTest, WakesEveryWaiterOnceAndServesChangesFromMemory) {
  Apply("before");  // revision 1, before the feed starts: outside its window
  ChangeFeed feed(*store_, [this] { return bundle_sequence_.load(); });
  ASSERT_TRUE(feed.Start().ok());
  EXPECT_TRUE(feed.running());
  constexpr int kWaiters = 200;
  std::atomic<int> woke{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&] {
      auto pos = feed.Wait({1, 1}, 10s);
      if (pos.revision == 2) ++woke;
    });
  }
  std::this_thread::sleep_for(50ms);
  Apply("a");  // revision 2
  for (auto& t : threads) t.join();
  EXPECT_EQ(woke.load(), kWaiters);

  auto page = feed.Since(1, 100);
  ASSERT_TRUE(page.ok()) << page.error().ToString();
  ASSERT_EQ(page->changes.size(), 1u);
  EXPECT_EQ(page->changes[0].name, "a");
  EXPECT_EQ(page->revision, 2u);
  EXPECT_FALSE(page->more);
  // Before the window, or ahead of the feed: the caller reads the store.
  EXPECT_EQ(feed.Since(0, 100).error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(feed.Since(9, 100).error().code(), ErrorCode::kFailedPrecondition);
}

TEST_F(ChangeFeedTest, ReportsBundleChangesAndStopWakesWaiters) {
  ChangeFeed feed(*store_, [this] { return bundle_sequence_.load(); });
  ASSERT_TRUE(feed.Start().ok());
  bundle_sequence_ = 2;
  auto pos = feed.Wait({0, 1}, 5s);
  EXPECT_EQ(pos.bundle_sequence, 2u);
  std::thread waiter([&] { (void)feed.Wait(feed.Current(), 30s); });
  auto start = std::chrono::steady_clock::now();
  feed.Stop();
  waiter.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_FALSE(feed.running());
  EXPECT_EQ(feed.Since(0, 10).error().code(), ErrorCode::kFailedPrecondition);
}

TEST_F(ChangeFeedTest, WindowDropsWholeOldRevisionsAndPagesSplitOnRevisions) {
  ChangeFeed feed(
      *store_, [] { return uint64_t{1}; }, /*window=*/4);
  ASSERT_TRUE(feed.Start().ok());
  for (int i = 0; i < 6; ++i) {
    std::vector<store::ResourceWrite> batch{Put("x" + std::to_string(i)),
                                            Put("y" + std::to_string(i))};
    ASSERT_TRUE(store_->Apply(batch, {}).ok());  // revision i+1, two changes each
  }
  ChangeFeed::Position pos;
  for (int i = 0; i < 50 && pos.revision < 6; ++i) pos = feed.Wait(pos, 1s);
  ASSERT_EQ(pos.revision, 6u);
  // Only the last two revisions (4 changes) are held.
  EXPECT_EQ(feed.Since(3, 100).error().code(), ErrorCode::kFailedPrecondition);
  auto page = feed.Since(4, 1);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->changes.size(), 2u);  // revision 5 is never split
  EXPECT_EQ(page->revision, 5u);
  EXPECT_TRUE(page->more);
  auto rest = feed.Since(5, 100);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->changes.size(), 2u);
  EXPECT_FALSE(rest->more);
}

}  // namespace
}  // namespace sigil::server
