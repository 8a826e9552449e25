// Private to the PostgresStore translation units: the transaction runner (retry rules are
// described in pg_store.h).
#pragma once

#include <random>
#include <string>
#include <thread>

#include "store/pg_conn.h"
#include "store/pg_pool.h"
#include "store/pg_store.h"
#include "store/store_common.h"

namespace sigil::store {

namespace internal {

// A few milliseconds, growing with the attempt and jittered, so two replicas that collided
// do not collide again in lockstep.
inline void RetryBackoff(int attempt) {
  thread_local std::minstd_rand rng(std::random_device{}());
  std::uniform_int_distribution<int> ms(1, 4 * attempt);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms(rng)));
}

}  // namespace internal

template <class T>
Result<T> PostgresStore::Run(std::string_view what, TxnMode mode, const Body<T>& body) {
  bool reconnected = false;
  for (int attempt = 1;; ++attempt) {
    if (attempt > 1) internal::RetryBackoff(attempt);
    SIGIL_ASSIGN_OR_RETURN(auto lease, pool_->Acquire());
    internal::PgConnection& c = *lease;
    Result<void> begun = Ok();
    if (mode == TxnMode::kWrite) begun = c.Exec(what, "BEGIN");
    if (mode == TxnMode::kSnapshot) {
      begun = c.Exec(what, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    }
    Result<T> result = begun.ok() ? body(c) : Result<T>(std::move(begun).error());
    if (result.ok() && mode != TxnMode::kAutocommit) {
      auto committed = c.Exec(what, "COMMIT");
      if (committed.ok()) return result;
      if (!c.healthy()) {
        pool_->Invalidate();
        return Unavailable(committed.error().message() +
                           " (during COMMIT: the change may or may not have been committed)");
      }
      if (c.last_error_retryable() && attempt < kMaxAttempts) continue;
      return std::move(committed).error();
    }
    if (result.ok()) return result;
    // Failed before COMMIT was sent: nothing was committed.
    if (!c.healthy()) {
      pool_->Invalidate();
      // A pooled connection may have died while idle (server restart, terminated backend):
      // one more try on a fresh connection. A fresh connection failing means the server is
      // really unreachable.
      if (lease.reused() && !reconnected) {
        reconnected = true;
        continue;
      }
      return result;
    }
    if (mode != TxnMode::kAutocommit) (void)c.Exec("rollback", "ROLLBACK");
    if (c.last_error_retryable() && attempt < kMaxAttempts) continue;
    return result;
  }
}

}  // namespace sigil::store
