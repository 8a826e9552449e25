#include "agent/attest/exe_hash_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "agent/attest/proc_reader.h"
#include "agent/attest/test_process.h"
#include "common/encoding.h"

namespace sigil::agent::attest {
namespace {

using testing::kSleep;
using testing::Sha256OfFile;
using testing::TempDir;

void WriteFile(const std::string& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(fd);
}

UniqueFd Open(const std::string& path) {
  return UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
}

ExeHashCache::Options NoAgeLimit(size_t entries = 16) {
  ExeHashCache::Options o;
  o.max_entries = entries;
  o.min_ctime_age = std::chrono::nanoseconds(0);
  return o;
}

TEST(ExeHashCacheTest, HashesContent) {
  TempDir dir;
  std::string path = dir.path() + "/f";
  WriteFile(path, "abc");
  ExeHashCache cache(NoAgeLimit());
  UniqueFd fd = Open(path);
  auto h = cache.Sha256Hex(fd.get(), path);
  ASSERT_TRUE(h.ok()) << h.error().ToString();
  EXPECT_EQ(*h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Large file across many 64 KiB blocks, and an empty one.
  std::string big(5 * 65536 + 17, 'x');
  WriteFile(path + "2", big);
  UniqueFd fd2 = Open(path + "2");
  auto h2 = cache.Sha256Hex(fd2.get(), path);
  ASSERT_TRUE(h2.ok());
  EXPECT_EQ(*h2, Sha256Hex(AsBytes(big)));
  WriteFile(path + "3", "");
  UniqueFd fd3 = Open(path + "3");
  auto h3 = cache.Sha256Hex(fd3.get(), path);
  ASSERT_TRUE(h3.ok());
  EXPECT_EQ(*h3, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(ExeHashCacheTest, SecondLookupIsAHitAndOffsetIsUntouched) {
  TempDir dir;
  std::string path = dir.path() + "/f";
  WriteFile(path, "hello");
  ExeHashCache cache(NoAgeLimit());
  UniqueFd fd = Open(path);
  ASSERT_TRUE(cache.Sha256Hex(fd.get(), path).ok());
  UniqueFd again = Open(path);  // another open of the same file: same key
  ASSERT_TRUE(cache.Sha256Hex(again.get(), path).ok());
  auto s = cache.stats();
  EXPECT_EQ(s.misses, 1U);
  EXPECT_EQ(s.hits, 1U);
  EXPECT_EQ(s.entries, 1U);
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_CUR), 0);
}

TEST(ExeHashCacheTest, InPlaceRewriteIsAMiss) {
  TempDir dir;
  std::string path = dir.path() + "/f";
  WriteFile(path, "version-1");
  ExeHashCache cache(NoAgeLimit());
  UniqueFd fd = Open(path);
  auto first = cache.Sha256Hex(fd.get(), path);
  ASSERT_TRUE(first.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // past the ctime tick
  WriteFile(path, "version-2");                                // same inode, same size
  auto second = cache.Sha256Hex(fd.get(), path);
  ASSERT_TRUE(second.ok());
  EXPECT_NE(*first, *second);
  EXPECT_EQ(*second, Sha256Hex(AsBytes(std::string_view("version-2"))));
  EXPECT_EQ(cache.stats().misses, 2U);
  EXPECT_EQ(cache.stats().hits, 0U);
}

TEST(ExeHashCacheTest, RecentlyChangedFilesAreNotCached) {
  TempDir dir;
  std::string path = dir.path() + "/f";
  WriteFile(path, "fresh");
  ExeHashCache::Options o;
  o.min_ctime_age = std::chrono::hours(1);  // the file's ctime is seconds old
  ExeHashCache cache(o);
  UniqueFd fd = Open(path);
  ASSERT_TRUE(cache.Sha256Hex(fd.get(), path).ok());
  ASSERT_TRUE(cache.Sha256Hex(fd.get(), path).ok());
  EXPECT_EQ(cache.stats().misses, 2U);
  EXPECT_EQ(cache.stats().hits, 0U);
  EXPECT_EQ(cache.stats().entries, 0U);
}

TEST(ExeHashCacheTest, OldSystemBinaryIsCachedWithDefaults) {
  ExeHashCache cache(ExeHashCache::Options{});
  UniqueFd fd = Open(kSleep);
  auto a = cache.Sha256Hex(fd.get(), kSleep);
  auto b = cache.Sha256Hex(fd.get(), kSleep);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, Sha256OfFile(kSleep));
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(cache.stats().hits, 1U);
}

TEST(ExeHashCacheTest, UncacheableCallBypassesTheCache) {
  ExeHashCache cache(ExeHashCache::Options{});
  UniqueFd fd = Open(kSleep);
  ASSERT_TRUE(cache.Sha256Hex(fd.get(), kSleep, /*cacheable=*/false).ok());
  ASSERT_TRUE(cache.Sha256Hex(fd.get(), kSleep, /*cacheable=*/false).ok());
  EXPECT_EQ(cache.stats().hits, 0U);
  EXPECT_EQ(cache.stats().entries, 0U);
}

TEST(ExeHashCacheTest, LruIsBounded) {
  TempDir dir;
  ExeHashCache cache(NoAgeLimit(/*entries=*/2));
  std::vector<UniqueFd> fds;
  for (int i = 0; i < 3; ++i) {
    std::string path = dir.path() + "/f" + std::to_string(i);
    WriteFile(path, "content " + std::to_string(i));
    fds.push_back(Open(path));
    ASSERT_TRUE(cache.Sha256Hex(fds.back().get(), path).ok());
  }
  EXPECT_EQ(cache.stats().entries, 2U);
  EXPECT_EQ(cache.stats().misses, 3U);
  ASSERT_TRUE(cache.Sha256Hex(fds[2].get(), "f2").ok());  // most recent: hit
  EXPECT_EQ(cache.stats().hits, 1U);
  ASSERT_TRUE(cache.Sha256Hex(fds[0].get(), "f0").ok());  // evicted: miss
  EXPECT_EQ(cache.stats().misses, 4U);
  EXPECT_EQ(cache.stats().entries, 2U);
}

TEST(ExeHashCacheTest, ZeroEntriesDisablesCaching) {
  ExeHashCache cache(NoAgeLimit(/*entries=*/0));
  UniqueFd fd = Open(kSleep);
  ASSERT_TRUE(cache.Sha256Hex(fd.get(), kSleep).ok());
  ASSERT_TRUE(cache.Sha256Hex(fd.get(), kSleep).ok());
  EXPECT_EQ(cache.stats().hits, 0U);
  EXPECT_EQ(cache.stats().entries, 0U);
}

TEST(ExeHashCacheTest, SizeLimit) {
  TempDir dir;
  std::string path = dir.path() + "/big";
  WriteFile(path, std::string(1000, 'a'));
  ExeHashCache::Options o = NoAgeLimit();
  o.max_file_bytes = 999;
  ExeHashCache cache(o);
  UniqueFd fd = Open(path);
  auto h = cache.Sha256Hex(fd.get(), path);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(h.error().message().find(path), std::string::npos);
}

TEST(ExeHashCacheTest, RejectsNonRegularFiles) {
  ExeHashCache cache(NoAgeLimit());
  UniqueFd dir = Open("/tmp");
  auto h = cache.Sha256Hex(dir.get(), "/tmp");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.error().code(), ErrorCode::kFailedPrecondition);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  EXPECT_FALSE(cache.Sha256Hex(r.get(), "pipe").ok());
}

TEST(ExeHashCacheTest, ConcurrentUse) {
  TempDir dir;
  std::vector<std::string> paths, expected;
  for (int i = 0; i < 3; ++i) {
    paths.push_back(dir.path() + "/c" + std::to_string(i));
    WriteFile(paths.back(),
              std::string(70000 + static_cast<size_t>(i), static_cast<char>('a' + i)));
    expected.push_back(Sha256OfFile(paths.back()));
  }
  ExeHashCache cache(NoAgeLimit(/*entries=*/2));  // smaller than the working set: evictions
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  constexpr int kThreads = 4, kRounds = 60;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        size_t i = static_cast<size_t>(r + t) % paths.size();
        UniqueFd fd = Open(paths[i]);
        auto h = cache.Sha256Hex(fd.get(), paths[i]);
        if (!h.ok() || *h != expected[i]) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  auto s = cache.stats();
  EXPECT_EQ(s.hits + s.misses, uint64_t{kThreads} * kRounds);
  EXPECT_LE(s.entries, 2U);
}

}  // namespace
}  // namespace sigil::agent::attest
