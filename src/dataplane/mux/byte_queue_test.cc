// ByteQueue (FIFO, prepend, compaction, release on drain) and the per-thread BlockCache that
// keeps large drained blocks for reuse.
#include "dataplane/mux/byte_queue.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>

namespace sigil::dataplane::mux {
namespace {

std::string Text(const ByteQueue& q) {
  auto r = q.readable();
  return std::string(r.data(), r.size());
}

TEST(ByteQueueTest, KeepsOrderAcrossGrowthCompactionAndPrepend) {
  ByteQueue q;
  std::string want;
  for (int i = 0; i < 5000; ++i) {
    std::string chunk = std::to_string(i) + ",";
    q.Append(chunk);
    want += chunk;
    if (i % 7 == 0 && q.size() > 3) {  // drain a little from the front now and then
      q.Consume(3);
      want.erase(0, 3);
    }
  }
  EXPECT_EQ(Text(q), want);
  q.Prepend("head:");
  EXPECT_EQ(Text(q), "head:" + want);
  q.Consume(q.size());
  EXPECT_TRUE(q.empty());
  q.Append("again");
  EXPECT_EQ(Text(q), "again");
}

TEST(ByteQueueTest, TailAndCommitWriteInPlace) {
  ByteQueue q;
  auto tail = q.Tail(10);
  ASSERT_GE(tail.size(), 10u);
  std::memcpy(tail.data(), "0123456789", 10);
  q.Commit(4);
  EXPECT_EQ(Text(q), "0123");
}

TEST(ByteQueueTest, LargeDrainedBlocksAreReusedNotFreed) {
  // A fresh thread: its own, empty cache.
  std::thread([] {
    BlockCache& cache = BlockCache::ForThisThread();
    ASSERT_EQ(cache.held_bytes(), 0u);
    const std::string big(300 * 1024, 'x');  // grows the queue to a 512 KiB block
    const char* first_block = nullptr;
    {
      ByteQueue q;
      q.Append(big);
      first_block = q.readable().data();
      q.Consume(q.size());  // drained: the block goes to the cache
      EXPECT_EQ(cache.held_bytes(), size_t{512} * 1024);
      q.Append(big);  // and comes back from it
      EXPECT_EQ(q.readable().data(), first_block);
      EXPECT_EQ(cache.held_bytes(), 0u);
    }  // destroyed while holding it: back to the cache
    EXPECT_EQ(cache.held_bytes(), size_t{512} * 1024);
    // Small blocks are left to malloc.
    ByteQueue small;
    small.Append("tiny");
    small.Consume(4);
    EXPECT_EQ(cache.held_bytes(), size_t{512} * 1024);
  }).join();
}

TEST(ByteQueueTest, TheCacheIsBounded) {
  std::thread([] {
    BlockCache& cache = BlockCache::ForThisThread();
    std::vector<ByteQueue> queues(8);
    for (auto& q : queues) q.Append(std::string(kCachedBlockMax / 2 + 1, 'y'));  // 8 MiB blocks
    queues.clear();
    EXPECT_LE(cache.held_bytes(), kBlockCacheBytes);
    EXPECT_EQ(cache.held_bytes(), kBlockCacheBytes);  // two 8 MiB blocks kept, the rest freed
  }).join();
}

}  // namespace
}  // namespace sigil::dataplane::mux
