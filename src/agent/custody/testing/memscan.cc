#include "agent/custody/testing/memscan.h"

#include <cstdio>
#include <fstream>
#include <sstream>

namespace sigil::agent::custody::testing {
namespace {

struct MapLine {
  AddressRange range;
  std::string perms;
  std::string path;
  std::string text;
};

std::vector<MapLine> ReadMaps() {
  // Read everything first: the scan itself must not allocate while it walks the mappings.
  std::ifstream in("/proc/self/maps");
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<MapLine> out;
  std::string line;
  while (std::getline(ss, line)) {
    MapLine m;
    unsigned long start = 0;
    unsigned long end = 0;
    char perms[8] = {};
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %*s %*s %*s %n", &start, &end, perms, &path_at) <
        3) {
      continue;
    }
    m.range = {start, end};
    m.perms = perms;
    if (path_at > 0 && static_cast<size_t>(path_at) <= line.size()) m.path = line.substr(path_at);
    m.text = line;
    out.push_back(std::move(m));
  }
  return out;
}

// Plain loops: ASan would flag memmem() reading freed or redzone bytes, which is exactly what
// this scan must look at. Candidates are filtered on their first two bytes.
__attribute__((no_sanitize("address", "undefined"))) __attribute__((noinline)) bool Matches(
    const volatile uint8_t* p, const uint8_t* needle, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    if (p[i] != needle[i]) return false;
  }
  return true;
}

class Scanner {
 public:
  explicit Scanner(std::span<const std::span<const uint8_t>> needles)
      : needles_(needles), first_(65536, 0) {
    for (const auto& n : needles_) {
      if (n.size() >= 2) first_[Key(n.data())] = 1;
    }
  }

  __attribute__((no_sanitize("address", "undefined"))) void Scan(
      AddressRange r, std::span<const AddressRange> skip, const std::string& desc,
      std::vector<MemoryHit>& hits) const {
    // Split `r` around the skipped ranges.
    std::vector<AddressRange> parts = {r};
    for (const auto& s : skip) {
      std::vector<AddressRange> next;
      for (const auto& p : parts) {
        if (s.end <= p.start || s.start >= p.end) {
          next.push_back(p);
          continue;
        }
        if (s.start > p.start) next.push_back({p.start, s.start});
        if (s.end < p.end) next.push_back({s.end, p.end});
      }
      parts = std::move(next);
    }
    for (const auto& p : parts) {
      if (p.end - p.start < 2) continue;
      for (uintptr_t a = p.start; a + 1 < p.end; ++a) {
        const volatile uint8_t* b = reinterpret_cast<const volatile uint8_t*>(a);
        if (first_[static_cast<size_t>(b[0]) | (static_cast<size_t>(b[1]) << 8)] == 0) continue;
        for (size_t n = 0; n < needles_.size(); ++n) {
          const auto& needle = needles_[n];
          if (needle.size() < 2 || p.end - a < needle.size()) continue;
          if (Matches(b, needle.data(), needle.size())) hits.push_back({a, n, desc});
        }
      }
    }
  }

 private:
  static size_t Key(const uint8_t* p) {
    return static_cast<size_t>(p[0]) | (static_cast<size_t>(p[1]) << 8);
  }
  std::span<const std::span<const uint8_t>> needles_;
  std::vector<uint8_t> first_;
};

}  // namespace

std::vector<MemoryHit> FindInWritableMemory(std::span<const std::span<const uint8_t>> needles,
                                            std::span<const AddressRange> skip,
                                            size_t max_mapping_bytes) {
  std::vector<MapLine> maps = ReadMaps();
  Scanner scanner(needles);
  std::vector<MemoryHit> hits;
  for (const auto& m : maps) {
    if (m.perms.size() < 2 || m.perms[0] != 'r' || m.perms[1] != 'w') continue;
    if (m.range.end - m.range.start > max_mapping_bytes) continue;
    if (m.path.starts_with("/dev/") && !m.path.starts_with("/dev/zero") &&
        !m.path.starts_with("/dev/shm/")) {
      continue;
    }
    if (m.path.starts_with("[vvar") || m.path == "[vsyscall]") continue;
    scanner.Scan(m.range, skip, m.text, hits);
  }
  return hits;
}

AddressRange MappingOf(const void* address) {
  auto a = reinterpret_cast<uintptr_t>(address);
  for (const auto& m : ReadMaps()) {
    if (m.range.Contains(a)) return m.range;
  }
  return {};
}

std::vector<MemoryHit> FindInRange(AddressRange range,
                                   std::span<const std::span<const uint8_t>> needles,
                                   std::span<const AddressRange> skip) {
  std::vector<MemoryHit> hits;
  Scanner(needles).Scan(range, skip, "range", hits);
  return hits;
}

}  // namespace sigil::agent::custody::testing
