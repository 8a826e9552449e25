// ByteQueue: a FIFO of bytes in one heap block that grows on demand and is freed when it
// drains, so an idle stream or connection holds no buffer. Single-threaded.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>

namespace sigil::dataplane::mux {

class ByteQueue {
 public:
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
    auto fresh = std::make_unique_for_overwrite<char[]>(bytes.size() + size() + 1024);
    std::memcpy(fresh.get(), bytes.data(), bytes.size());
    if (size() > 0) std::memcpy(fresh.get() + bytes.size(), data_.get() + begin_, size());
    end_ = bytes.size() + size();
    begin_ = 0;
    cap_ = end_ + 1024;
    data_ = std::move(fresh);
  }
  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) Release();
  }
  void Release() {
    data_.reset();
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
    auto fresh = std::make_unique_for_overwrite<char[]>(cap);
    if (used > 0) std::memcpy(fresh.get(), data_.get() + begin_, used);
    data_ = std::move(fresh);
    cap_ = cap;
    begin_ = 0;
    end_ = used;
  }

  std::unique_ptr<char[]> data_;
  size_t cap_ = 0, begin_ = 0, end_ = 0;
};

}  // namespace sigil::dataplane::mux
