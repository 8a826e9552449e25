#include "store/pg_pool.h"

#include <utility>

namespace sigil::store::internal {

PgPool::PgPool(std::string conninfo, std::string display, PgSessionSettings settings,
               size_t max_size, std::chrono::milliseconds acquire_timeout)
    : conninfo_(std::move(conninfo)),
      display_(std::move(display)),
      settings_(settings),
      max_size_(max_size == 0 ? 1 : max_size),
      acquire_timeout_(acquire_timeout) {}

PgPool::~PgPool() = default;  // every Lease has been returned by then (the store owns both)

PgPool::Lease::Lease(Lease&& other) noexcept
    : pool_(other.pool_),
      conn_(std::move(other.conn_)),
      generation_(other.generation_),
      reused_(other.reused_) {
  other.pool_ = nullptr;
}

PgPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->Return(std::move(conn_), generation_);
}

Result<PgPool::Lease> PgPool::Acquire() {
  uint64_t generation = 0;
  {
    std::unique_lock lock(mu_);
    const bool ready =
        cv_.wait_for(lock, acquire_timeout_, [&] { return !idle_.empty() || open_ < max_size_; });
    if (!ready) {
      return Unavailable("postgres: " + display_ + ": all " + std::to_string(max_size_) +
                         " pooled connections stayed busy for " +
                         std::to_string(acquire_timeout_.count()) + " ms");
    }
    generation = generation_;
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(conn), generation, /*reused=*/true);
    }
    ++open_;  // reserve the slot; connect without holding the lock
  }
  auto conn = PgConnection::Connect(conninfo_, display_, settings_);
  if (!conn.ok()) {
    {
      std::lock_guard lock(mu_);
      --open_;
    }
    cv_.notify_one();
    return std::move(conn).error();
  }
  return Lease(this, std::move(*conn), generation, /*reused=*/false);
}

void PgPool::Return(std::unique_ptr<PgConnection> conn, uint64_t generation) {
  std::unique_ptr<PgConnection> close;  // destroyed (PQfinish) outside the lock
  {
    std::lock_guard lock(mu_);
    if (conn && conn->healthy() && generation == generation_) {
      idle_.push_back(std::move(conn));
    } else {
      close = std::move(conn);
      --open_;
    }
  }
  cv_.notify_one();
}

void PgPool::Invalidate() {
  std::vector<std::unique_ptr<PgConnection>> close;
  {
    std::lock_guard lock(mu_);
    ++generation_;
    open_ -= idle_.size();
    close.swap(idle_);
  }
  cv_.notify_all();
}

}  // namespace sigil::store::internal
