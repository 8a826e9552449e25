#include "store/pg_listener.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>

namespace sigil::store::internal {

PgChangeListener::PgChangeListener(std::string conninfo, std::string display,
                                   PgSessionSettings settings, Callbacks callbacks)
    : conninfo_(std::move(conninfo)),
      display_(std::move(display)),
      settings_(settings),
      callbacks_(std::move(callbacks)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  thread_ = std::thread([this] { Run(); });
}

PgChangeListener::~PgChangeListener() {
  stop_.store(true);
  {
    std::lock_guard lock(mu_);  // pairs with SleepUnlessStopped's predicate check
  }
  cv_.notify_all();
  if (wake_.valid()) {
    const uint64_t one = 1;
    (void)::write(wake_.get(), &one, sizeof one);
  }
  thread_.join();
}

bool PgChangeListener::SleepUnlessStopped(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stop_.load(); });
}

void PgChangeListener::Run() {
  // Reconnect backoff: 100 ms doubling to 2 s, reset after a successful connection.
  std::chrono::milliseconds backoff{100};
  while (!stop_.load()) {
    auto conn = PgConnection::Connect(conninfo_, display_, settings_);
    if (conn.ok()) {
      const std::string listen = std::string("LISTEN ") + kPgChangeChannel;
      if ((*conn)->Exec("listen", listen.c_str()).ok()) {
        backoff = std::chrono::milliseconds(100);
        callbacks_.on_health(true);
        Serve(**conn);
        callbacks_.on_health(false);
      }
    }
    if (!SleepUnlessStopped(backoff)) break;
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
}

bool PgChangeListener::Drain(PgConnection& conn) {
  if (PQconsumeInput(conn.raw()) == 0) return false;
  while (PGnotify* n = PQnotifies(conn.raw())) {
    uint64_t revision = 0;
    const char* p = n->extra != nullptr ? n->extra : "";
    const char* end = p + std::strlen(p);
    auto [ptr, ec] = std::from_chars(p, end, revision);
    const bool parsed = ec == std::errc() && ptr == end;
    PQfreemem(n);
    if (parsed) callbacks_.on_revision(revision);
  }
  return conn.healthy();
}

void PgChangeListener::Serve(PgConnection& conn) {
  const int sock = PQsocket(conn.raw());
  if (sock < 0) return;
  // LISTEN's own round trip may already have queued notifications inside libpq.
  if (!Drain(conn)) return;
  auto last_check = std::chrono::steady_clock::now();
  while (!stop_.load()) {
    pollfd fds[2] = {{sock, POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    const int nfds = wake_.valid() ? 2 : 1;
    const int rc = ::poll(fds, nfds, 1000);
    if (rc < 0 && errno != EINTR) return;
    if (stop_.load()) return;
    if (rc > 0 && (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
      if (!Drain(conn)) return;
      last_check = std::chrono::steady_clock::now();
    }
    if (std::chrono::steady_clock::now() - last_check >= kIdleCheck) {
      // A round trip proves the link; notifications that arrived with it are delivered.
      if (!conn.Exec("listener check", "SELECT 1").ok() || !Drain(conn)) return;
      last_check = std::chrono::steady_clock::now();
    }
  }
}

}  // namespace sigil::store::internal
