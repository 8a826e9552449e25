// SHA-256 of executables, cached by file identity.
//
// The key is (mount id, st_dev, st_ino, size, mtime, ctime) of the *open* file (statx on
// the fd, never a path), so a different file, a replaced file or an in-place rewrite is a
// different key. Two rules keep a stale hash from ever being served:
//  - ctime cannot be set from user space, but it has the kernel's coarse clock resolution,
//    so a rewrite within the same tick could keep the same key. Like git's "racily clean"
//    rule, a hash is only cached when the file's ctime is at least `min_ctime_age` older
//    than the clock at the start of hashing; any later change then gets a newer ctime.
//  - the file is stat'ed before and after hashing; if anything changed the result is
//    Aborted (the bytes read may be a mix of versions), never returned or cached.
// The mount id (never reused since Linux 6.8; the 32-bit one before that) stops a reused
// st_dev of an unmounted file system from aliasing an old entry.
//
// Thread-safety: all methods may be called concurrently. The lock is held only for lookup
// and insertion; two threads missing on the same file both hash it (no single-flight).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/result.h"

namespace sigil::agent::attest {

class ExeHashCache {
 public:
  struct Options {
    size_t max_entries = 1024;                    // LRU bound; 0 disables caching
    uint64_t max_file_bytes = uint64_t{1} << 30;  // larger files are ResourceExhausted
    std::chrono::nanoseconds min_ctime_age = std::chrono::seconds(2);
  };
  struct Stats {
    uint64_t hits = 0;
    uint64_t misses = 0;  // every hash computed, whether or not it was then cached
    size_t entries = 0;
  };

  explicit ExeHashCache(Options options);

  // Lowercase hex SHA-256 of the regular file open at `fd` (borrowed; read with pread, so
  // its offset is untouched), streamed in 64 KiB blocks. `display` names the file in
  // errors. With `cacheable` false the cache is neither consulted nor filled.
  Result<std::string> Sha256Hex(int fd, std::string_view display, bool cacheable = true);

  Stats stats() const;

 private:
  struct Key {
    uint64_t mnt_id;
    uint64_t dev;
    uint64_t ino;
    uint64_t size;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
    int64_t ctime_sec;
    uint32_t ctime_nsec;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  struct Entry {
    Key key;
    std::string sha256;
  };

  static Result<Key> StatKey(int fd, std::string_view display);
  bool Cacheable(const Key& key, std::chrono::nanoseconds start) const;
  Result<std::string> Hash(int fd, const Key& before, std::string_view display) const;
  bool Lookup(const Key& key, std::string& sha256);
  void Insert(const Key& key, const std::string& sha256);

  const Options options_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // guarded by mu_; front = most recently used
  std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> index_;  // guarded by mu_
  Stats stats_;                                                         // guarded by mu_
};

}  // namespace sigil::agent::attest
