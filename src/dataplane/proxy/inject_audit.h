// InjectAuditBatch: the requests one inject connection forwarded with its credential, collected
// for one `dataplane.inject` audit record per batch rather than one record per request.
//
// Every injected request is still in the hash-chained audit with its own time, method, host and
// path (without the query); what the requests of one connection share (binding, Service,
// identity, pid, exe, node) is written once per record. The record's details are
//   {"binding": ..., "service": ..., "requests": [{"time_unix_ms": ..., "method": ...,
//    "host": ..., "path": ...}, ...]}
// A batch is taken when it holds kMaxRequests requests or kMaxBytes of JSON, after at most a
// short delay chosen by the caller, and when the connection ends.
//
// Why: at tens of thousands of injected requests per second one record per request made the
// control plane's audit append the bottleneck of the whole path (docs/benchmarks.md).
//
// Peer-supplied strings are made printable (bytes outside 0x20-0x7e become '?') and bounded
// (kMaxField bytes for method and host, kMaxPath for the path, which is then marked
// "path_truncated"), so a record always fits the server's per-record limit. Not thread-safe.
//
// The batch is kept as JSON text, written as each request is added: building a document per
// request and serialising it at the flush cost ~5 % of the event loop's CPU at 40,000 injected
// requests/s (docs/benchmarks.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sigil::dataplane {

class InjectAuditBatch {
 public:
  static constexpr size_t kMaxRequests = 32;
  static constexpr size_t kMaxBytes = 8 * 1024;  // the server takes 16 KiB of details per record
  static constexpr size_t kMaxField = 255;
  static constexpr size_t kMaxPath = 1024;

  // Adds one request (`path` without its query); true when the batch is full: take it now.
  bool Add(int64_t time_unix_ms, std::string_view method, std::string_view host,
           std::string_view path);
  bool empty() const { return count_ == 0; }
  size_t size() const { return count_; }
  // The "requests" array as JSON text, oldest first; the batch is empty afterwards.
  std::string Take();

 private:
  std::string json_;  // the array's elements, comma-separated
  size_t count_ = 0;
};

}  // namespace sigil::dataplane
