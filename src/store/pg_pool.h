// PgPool: a small, thread-safe pool of PostgreSQL connections for PostgresStore.
//
// Connections are opened lazily (at most `max_size`), handed out one caller at a time and
// returned when the Lease goes out of scope. A connection that broke (server restart,
// network loss, pg_terminate_backend) is closed instead of returned, and Invalidate() closes
// the idle ones too, since they very likely broke with it: the next Acquire connects anew.
//
// Internal to sigil_store.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"
#include "store/pg_conn.h"

namespace sigil::store::internal {

class PgPool {
 public:
  PgPool(std::string conninfo, std::string display, PgSessionSettings settings, size_t max_size,
         std::chrono::milliseconds acquire_timeout);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();
    PgConnection& operator*() const { return *conn_; }
    PgConnection* operator->() const { return conn_.get(); }
    // True if the connection was used before (it may have died while idle).
    bool reused() const { return reused_; }

   private:
    friend class PgPool;
    Lease(PgPool* pool, std::unique_ptr<PgConnection> conn, uint64_t generation, bool reused)
        : pool_(pool), conn_(std::move(conn)), generation_(generation), reused_(reused) {}
    PgPool* pool_;
    std::unique_ptr<PgConnection> conn_;
    uint64_t generation_;
    bool reused_;
  };

  // An idle connection, or a new one while fewer than max_size are open; otherwise waits up
  // to acquire_timeout. Unavailable if the database cannot be reached.
  Result<Lease> Acquire();
  // Closes every idle connection and marks the leased ones to be closed on return.
  void Invalidate();

  const std::string& display() const { return display_; }
  const std::string& conninfo() const { return conninfo_; }
  const PgSessionSettings& settings() const { return settings_; }

 private:
  void Return(std::unique_ptr<PgConnection> conn, uint64_t generation);

  const std::string conninfo_;
  const std::string display_;
  const PgSessionSettings settings_;
  const size_t max_size_;
  const std::chrono::milliseconds acquire_timeout_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<PgConnection>> idle_;  // guarded by mu_
  size_t open_ = 0;                                  // idle + leased + connecting; guarded by mu_
  uint64_t generation_ = 0;                          // bumped by Invalidate; guarded by mu_
};

}  // namespace sigil::store::internal
