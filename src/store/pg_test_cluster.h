// A throwaway PostgreSQL 15 cluster for the store tests.
//
// The first test that needs PostgreSQL starts one cluster for the whole test process:
// initdb and `pg_ctl start` in a fresh /tmp/sigil-pg-XXXXXX directory, listening only on a
// Unix socket in that directory (no TCP port, so parallel test processes never collide),
// trust authentication (only the owner can reach the 0700 directory). PostgreSQL refuses
// to run as root, so when the tests run as root the server runs as the `postgres` system
// user (created by Debian's postgresql-15 package). Each test gets its own database.
//
// Cleanup: a gtest Environment stops the cluster and removes the directory at the end of
// the run. A watchdog process (its own session, blocked reading a pipe whose only writer is
// this test process) does the same if the process dies first (crash, abort, SIGKILL from a
// ctest timeout). A missing postgres installation is an error, never a skip.
//
// Binaries: $SIGIL_PG_BINDIR, else /usr/lib/postgresql/15/bin.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/owned_fd.h"
#include "common/result.h"

namespace sigil::store::testing {

class PgTestCluster {
 public:
  // The process's cluster, started on first call. Thread-safe.
  static Result<PgTestCluster*> Shared();
  // Stops and removes the shared cluster, if one was started (Environment::TearDown).
  static void ShutdownShared();

  ~PgTestCluster();
  PgTestCluster(const PgTestCluster&) = delete;
  PgTestCluster& operator=(const PgTestCluster&) = delete;

  // A new empty database; returns its connection URL. `name` is set to the database name.
  Result<std::string> CreateDatabase(std::string* name = nullptr);
  // DROP DATABASE ... WITH (FORCE): also ends sessions still connected to it.
  Result<void> DropDatabase(const std::string& name);
  std::string UrlFor(const std::string& database) const;

  // Server control, for fault tests.
  Result<void> Stop();   // pg_ctl stop -m fast (clean shutdown)
  Result<void> Crash();  // pg_ctl stop -m immediate: no shutdown checkpoint, as a power cut
  Result<void> Start();  // pg_ctl start (crash recovery after Crash)
  bool running() const { return running_; }

  const std::string& dir() const { return dir_; }
  std::string data_dir() const { return dir_ + "/data"; }
  // The server log: its end for failure messages, or all of it.
  std::string ServerLogTail() const;
  std::string ServerLog() const;

 private:
  PgTestCluster() = default;
  static Result<std::unique_ptr<PgTestCluster>> Create();
  Result<void> RunPgCommand(const std::vector<std::string>& args, const std::string& log,
                            std::chrono::seconds timeout) const;
  Result<void> StartWatchdog();
  void Destroy();

  std::string bindir_;
  std::string dir_;
  bool as_postgres_ = false;  // the test runs as root: run the server as `postgres`
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  bool running_ = false;
  int next_db_ = 0;
  std::mutex db_mu_;  // guards next_db_
  OwnedFd watchdog_pipe_;
  pid_t watchdog_pid_ = -1;
};

// A plain libpq session that stays open (to hold locks across calls in lock tests).
class PgRawSession {
 public:
  static Result<std::unique_ptr<PgRawSession>> Connect(const std::string& url);
  ~PgRawSession();
  PgRawSession(const PgRawSession&) = delete;
  PgRawSession& operator=(const PgRawSession&) = delete;
  Result<void> Exec(const std::string& sql);

 private:
  explicit PgRawSession(void* conn) : conn_(conn) {}
  void* conn_;  // PGconn*; libpq stays out of this header
};

// Runs SQL on `url` with a plain libpq connection (no Sigil code involved).
Result<void> PgExec(const std::string& url, const std::string& sql);
// The first column of the first row, as text ("" for NULL); NotFound without rows.
Result<std::string> PgQueryText(const std::string& url, const std::string& sql);

}  // namespace sigil::store::testing
