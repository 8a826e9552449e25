// ByteQueue: a FIFO of bytes in one heap block that grows on demand and is given back when it
// drains, so an idle stream or connection holds no buffer. Single-threaded.
//
// Blocks of kCachedBlockMin bytes and more go back to a per-thread cache (BlockCache) instead
// of to malloc: a streaming transfer fills and drains its queues thousands of times a second,
// and glibc hands such blocks back to the kernel on free (mmap threshold, heap trimming), so
// every refill page-faulted fresh zero pages in. That cost half of an agent's CPU on a one-stream
// transfer (docs/benchmarks.md, "Data plane"). Small blocks stay with malloc, whose bins reuse
// them without faults.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace sigil::dataplane::mux {

inline constexpr size_t kCachedBlockMin = size_t{64} * 1024;
inline constexpr size_t kCachedBlockMax = size_t{8} * 1024 * 1024;
// What one thread (one event loop) keeps at most in free blocks.
inline constexpr size_t kBlockCacheBytes = size_t{16} * 1024 * 1024;

// Free power-of-two blocks of kCachedBlockMin..kCachedBlockMax bytes, per thread.
class BlockCache {
 public:
  static BlockCache& ForThisThread() {
    thread_local BlockCache cache;
    return cache;
  }
  BlockCache() = default;
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A block of exactly `size` bytes (contents unspecified).
  std::unique_ptr<char[]> Take(size_t size) {
    if (auto* bucket = Bucket(size); bucket != nullptr && !bucket->empty()) {
      std::unique_ptr<char[]> block = std::move(bucket->back());
      bucket->pop_back();
      held_ -= size;
      return block;
    }
    return std::make_unique_for_overwrite<char[]>(size);
  }
  // Gives back a block of `size` bytes; freed at once when it is not cacheable or the cache is
  // full.
  void Give(std::unique_ptr<char[]> block, size_t size) {
    auto* bucket = Bucket(size);
    if (bucket == nullptr || held_ + size > kBlockCacheBytes) return;  // `block` frees itself
    bucket->push_back(std::move(block));
    held_ += size;
  }
  size_t held_bytes() const { return held_; }

 private:
  static constexpr size_t kBuckets =
      std::countr_zero(kCachedBlockMax) - std::countr_zero(kCachedBlockMin) + 1;
  std::vector<std::unique_ptr<char[]>>* Bucket(size_t size) {
    if (size < kCachedBlockMin || size > kCachedBlockMax || !std::has_single_bit(size)) {
      return nullptr;
    }
    return &buckets_[std::countr_zero(size) - std::countr_zero(kCachedBlockMin)];
  }
  std::array<std::vector<std::unique_ptr<char[]>>, kBuckets> buckets_;
  size_t held_ = 0;
};

class ByteQueue {
 public:
  ByteQueue() = default;
  ~ByteQueue() { Release(); }
  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;
  ByteQueue(ByteQueue&& other) noexcept
      : data_(std::move(other.data_)), cap_(other.cap_), begin_(other.begin_), end_(other.end_) {
    other.cap_ = other.begin_ = other.end_ = 0;
  }
  ByteQueue& operator=(ByteQueue&& other) noexcept {
    if (this != &other) {
      Release();
      data_ = std::move(other.data_);
      cap_ = other.cap_;
      begin_ = other.begin_;
      end_ = other.end_;
      other.cap_ = other.begin_ = other.end_ = 0;
    }
    return *this;
  }

  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  std::span<const char> readable() const { return {data_.get() + begin_, size()}; }

  // At least `room` writable bytes after the queued ones; Commit() what was written.
  std::span<char> Tail(size_t room) {
    if (cap_ - end_ < room) Reserve(room);
    return {data_.get() + end_, cap_ - end_};
  }
  void Commit(size_t n) { end_ += n; }
  void Append(std::string_view bytes) {
    if (bytes.empty()) return;
    auto tail = Tail(bytes.size());
    std::memcpy(tail.data(), bytes.data(), bytes.size());
    Commit(bytes.size());
  }
  // Puts `bytes` in front of what is queued.
  void Prepend(std::string_view bytes) {
    if (bytes.empty()) return;
    if (begin_ >= bytes.size()) {
      begin_ -= bytes.size();
      std::memcpy(data_.get() + begin_, bytes.data(), bytes.size());
      return;
    }
    const size_t used = size();
    const size_t cap = std::bit_ceil(bytes.size() + used + 1024);
    std::unique_ptr<char[]> fresh = BlockCache::ForThisThread().Take(cap);
    std::memcpy(fresh.get(), bytes.data(), bytes.size());
    if (used > 0) std::memcpy(fresh.get() + bytes.size(), data_.get() + begin_, used);
    Replace(std::move(fresh), cap, bytes.size() + used);
  }
  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) Release();
  }
  void Release() {
    if (data_) BlockCache::ForThisThread().Give(std::move(data_), cap_);
    cap_ = begin_ = end_ = 0;
  }

 private:
  void Reserve(size_t room) {
    const size_t used = size();
    if (data_ && cap_ - used >= room && begin_ >= used) {
      // Compacting in place frees enough, and moves no more bytes than were consumed since the
      // last move (amortised O(1) per byte; compacting whenever possible made a large queue
      // fed at the back and drained at the front copy itself over and over).
      std::memmove(data_.get(), data_.get() + begin_, used);
      begin_ = 0;
      end_ = used;
      return;
    }
    size_t cap = cap_ == 0 ? 4096 : cap_;
    while (cap < used + room) cap *= 2;
    std::unique_ptr<char[]> fresh = BlockCache::ForThisThread().Take(cap);
    if (used > 0) std::memcpy(fresh.get(), data_.get() + begin_, used);
    Replace(std::move(fresh), cap, used);
  }
  // Installs `fresh` (of `cap` bytes, `used` of them queued from its start) and gives the old
  // block back.
  void Replace(std::unique_ptr<char[]> fresh, size_t cap, size_t used) {
    if (data_) BlockCache::ForThisThread().Give(std::move(data_), cap_);
    data_ = std::move(fresh);
    cap_ = cap;
    begin_ = 0;
    end_ = used;
  }

  std::unique_ptr<char[]> data_;
  size_t cap_ = 0, begin_ = 0, end_ = 0;
};

}  // namespace sigil::dataplane::mux
