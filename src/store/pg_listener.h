// PgChangeListener: a thread holding one extra connection that LISTENs on the store's
// change channel, so PostgresStore::WaitForChange learns about commits of other replicas
// within milliseconds instead of polling.
//
// Every write transaction that moves the store revision runs pg_notify(kPgChangeChannel,
// '<revision>'); PostgreSQL delivers the notification at commit, in commit order, to every
// listening session of the database. The listener reports each revision and every change of
// its own health (connected and listening, or not). While it is down, waiters poll; after a
// reconnect they re-read the revision, since notifications sent meanwhile are lost.
//
// Thread-safe. Internal to sigil_store.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "common/owned_fd.h"
#include "store/pg_conn.h"

namespace sigil::store::internal {

inline constexpr char kPgChangeChannel[] = "sigil_changes";

class PgChangeListener {
 public:
  struct Callbacks {
    std::function<void(uint64_t revision)> on_revision;
    std::function<void(bool listening)> on_health;
  };
  // Starts the thread; it connects in the background.
  PgChangeListener(std::string conninfo, std::string display, PgSessionSettings settings,
                   Callbacks callbacks);
  ~PgChangeListener();  // stops and joins the thread
  PgChangeListener(const PgChangeListener&) = delete;
  PgChangeListener& operator=(const PgChangeListener&) = delete;

  // How long an idle listener waits before checking its connection with a query (a peer
  // that vanished without closing the TCP connection is otherwise noticed only by keepalive).
  static constexpr std::chrono::seconds kIdleCheck{30};

 private:
  void Run();
  // Listens on one connection until it fails or Stop; returns normally in both cases.
  void Serve(PgConnection& conn);
  bool Drain(PgConnection& conn);  // delivers pending notifications; false if the link broke
  bool SleepUnlessStopped(std::chrono::milliseconds d);

  const std::string conninfo_;
  const std::string display_;
  const PgSessionSettings settings_;
  const Callbacks callbacks_;
  OwnedFd wake_;  // eventfd: written by the destructor to interrupt poll()
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace sigil::store::internal
