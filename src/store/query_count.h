// Statements the store has sent to its database, counted per process: every SQLite statement
// started (sqlite3_step on a statement at its beginning, and each sqlite3_exec: transaction
// control, pragmas) and every PostgreSQL query or command (PQexecPrepared, PQexec). Exported by
// the server as sigil_store_queries_total, so the database load of idle agents can be seen
// (docs/benchmarks.md, "Control plane at scale").
#pragma once

#include <atomic>
#include <cstdint>

namespace sigil::store {

namespace internal {
inline std::atomic<uint64_t> g_queries_executed{0};
}  // namespace internal

inline void CountQuery() { internal::g_queries_executed.fetch_add(1, std::memory_order_relaxed); }

// Total since the process started (all stores of the process together).
inline uint64_t QueriesExecuted() {
  return internal::g_queries_executed.load(std::memory_order_relaxed);
}

}  // namespace sigil::store
