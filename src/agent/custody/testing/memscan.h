// Test-only: searches this process's own memory for secret bytes.
//
// Scans every readable+writable mapping (a copy of a secret can only have been written into
// writable memory) except the ranges in `skip`, mappings larger than `max_mapping_bytes`
// (ASan's shadow regions: 256 MiB and 14 TiB) and device mappings. Reads memory directly with
// an uninstrumented loop, so it works under ASan too. Call it while no other thread runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace sigil::agent::custody::testing {

struct AddressRange {
  uintptr_t start = 0;
  uintptr_t end = 0;
  bool Contains(uintptr_t a) const { return a >= start && a < end; }
};

struct MemoryHit {
  uintptr_t address;
  size_t needle;        // index into the needles (each needle must be >= 2 bytes)
  std::string mapping;  // the /proc/self/maps line
};

std::vector<MemoryHit> FindInWritableMemory(std::span<const std::span<const uint8_t>> needles,
                                            std::span<const AddressRange> skip,
                                            size_t max_mapping_bytes = size_t{64} << 20);

// The mapping that contains `address` (from /proc/self/maps); {0,0} if none.
AddressRange MappingOf(const void* address);

// Same search within one range (e.g. the secure-heap arena), skipping `skip`.
std::vector<MemoryHit> FindInRange(AddressRange range,
                                   std::span<const std::span<const uint8_t>> needles,
                                   std::span<const AddressRange> skip);

}  // namespace sigil::agent::custody::testing
