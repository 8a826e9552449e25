// Crash safety with PostgreSQL. A child process applies a stream of writes and reports each
// acknowledged one through a pipe; the parent SIGKILLs the child mid-stream (a replica
// dying), or crashes the database server under it (immediate shutdown: no checkpoint,
// recovery from the WAL at the next start), and checks that every acknowledged write is
// present, the store is consistent and the audit chain verifies.
#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>
#include <thread>

#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::AnyStoreTest;
using testing::Event;
using testing::Upsert;

struct Ack {
  uint64_t index;
  uint64_t version;  // resource_version of "item-<index>"
};

// Reads one Ack, waiting at most `timeout`; false on EOF, error or timeout.
bool ReadAck(int fd, Ack* ack, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
  return ::read(fd, ack, sizeof *ack) == static_cast<ssize_t>(sizeof *ack);
}

// Kills and reaps the child when the test leaves early.
struct ChildGuard {
  pid_t pid = -1;
  ~ChildGuard() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// Child body: never returns. With `ride_out_outages`, Unavailable (the server is down or
// restarting) is retried every 50 ms for up to 60 s; a write whose COMMIT was cut off is
// simply applied again (an identical upsert reports the stored version). Exit codes: 2 open
// failed, 3 apply failed, 4 pipe failed, 5 outage too long.
[[noreturn]] void WriteForever(const std::string& url, int ack_fd, uint64_t first,
                               bool ride_out_outages) {
  PostgresOptions options;
  options.connect_timeout = std::chrono::seconds(2);
  constexpr int kTries = 1200;
  std::unique_ptr<PostgresStore> store;
  for (int t = 0; t < kTries && !store; ++t) {
    auto opened = PostgresStore::Open(url, options);
    if (opened.ok()) {
      store = std::move(*opened);
    } else if (!ride_out_outages || opened.error().code() != ErrorCode::kUnavailable) {
      ::_exit(2);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (!store) ::_exit(5);
  for (uint64_t i = first; i < first + 100000; ++i) {
    ResourceWrite w[] = {Upsert("WorkloadIdentity", "item-" + std::to_string(i),
                                R"({"i":)" + std::to_string(i) + "}"),
                         Upsert("Service", "counter", R"({"n":)" + std::to_string(i) + "}")};
    AuditEvent e[] = {Event("resource.apply", static_cast<int>(i))};
    std::optional<Result<ApplyResult>> r;
    for (int t = 0; t < kTries; ++t) {
      r = store->Apply(w, e);
      if (r->ok()) break;
      // Unavailable (the server is down or restarting) and Aborted (a conflict the store
      // already retried) are the two errors the contract says to retry.
      const ErrorCode code = r->error().code();
      if (!ride_out_outages || (code != ErrorCode::kUnavailable && code != ErrorCode::kAborted)) {
        std::fprintf(stderr, "writer: apply %llu: %s\n", static_cast<unsigned long long>(i),
                     r->error().ToString().c_str());
        ::_exit(3);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!r->ok()) ::_exit(5);
    Ack ack{i, (*r)->writes[0].resource_version};
    // Pipe writes of <= PIPE_BUF bytes are atomic: the parent never sees half an Ack.
    if (::write(ack_fd, &ack, sizeof ack) != static_cast<ssize_t>(sizeof ack)) ::_exit(4);
  }
  ::_exit(0);
}

class PostgresCrashTest : public AnyStoreTest {
 protected:
  // Every acknowledged write is present with its version, and the store is consistent.
  void CheckAcked(const std::map<uint64_t, uint64_t>& acked, const std::string& when) {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr) << when;
    auto integrity = store->IntegrityCheck();
    ASSERT_TRUE(integrity.ok()) << when << ": " << integrity.error().ToString();
    for (const auto& [index, version] : acked) {
      auto got = store->Get("WorkloadIdentity", "item-" + std::to_string(index));
      ASSERT_TRUE(got.ok()) << when << ": acknowledged write " << index << " lost";
      EXPECT_EQ(got->resource_version, version);
      EXPECT_EQ(got->spec_json, R"({"i":)" + std::to_string(index) + "}");
    }
    auto report = store->VerifyAudit();
    ASSERT_TRUE(report.ok()) << report.error().ToString();
    EXPECT_TRUE(report->ok) << when << ": " << report->reason;
    EXPECT_GE(report->records_checked, acked.size());
    EXPECT_GE(*store->CurrentRevision(), acked.rbegin()->second);
  }
};
SIGIL_POSTGRES_ONLY(PostgresCrashTest);

TEST_P(PostgresCrashTest, AcknowledgedWritesSurviveSigkillOfTheWriter) {
  ASSERT_NE(OpenStore(), nullptr);     // create and migrate, then close
  std::map<uint64_t, uint64_t> acked;  // index -> version
  uint64_t next = 1;
  constexpr int kRounds = 6;
  for (int round = 0; round < kRounds; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    ChildGuard child{::fork()};
    ASSERT_GE(child.pid, 0);
    if (child.pid == 0) {
      ::close(fds[0]);
      WriteForever(location(), fds[1], next, /*ride_out_outages=*/false);
    }
    ::close(fds[1]);
    const size_t kill_after = 5 + static_cast<size_t>(round) * 7;
    size_t seen = 0;
    Ack ack{};
    while (seen < kill_after && ReadAck(fds[0], &ack, std::chrono::seconds(30))) {
      acked[ack.index] = ack.version;
      ++seen;
    }
    ASSERT_EQ(seen, kill_after) << "round " << round << ": the writer stopped early";
    ASSERT_EQ(::kill(child.pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child.pid, &status, 0), child.pid);
    child.pid = -1;
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with status " << status;
    // Acks already in the pipe were acknowledged before the kill: they count too.
    while (ReadAck(fds[0], &ack, std::chrono::milliseconds(0))) acked[ack.index] = ack.version;
    ::close(fds[0]);
    next = acked.rbegin()->first + 1;
    CheckAcked(acked, "round " + std::to_string(round));
  }
  EXPECT_GE(acked.size(), size_t{kRounds * 5});
}

TEST_P(PostgresCrashTest, AcknowledgedWritesSurviveDatabaseServerCrashes) {
  ASSERT_NE(OpenStore(), nullptr);
  std::map<uint64_t, uint64_t> acked;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ChildGuard child{::fork()};
  ASSERT_GE(child.pid, 0);
  if (child.pid == 0) {
    ::close(fds[0]);
    WriteForever(location(), fds[1], 1, /*ride_out_outages=*/true);
  }
  ::close(fds[1]);
  auto collect = [&](size_t n, const std::string& phase) {
    Ack ack{};
    for (size_t i = 0; i < n; ++i) {
      ASSERT_TRUE(ReadAck(fds[0], &ack, std::chrono::seconds(60)))
          << phase << ": the writer made no progress; server log:\n"
          << cluster_->ServerLogTail();
      acked[ack.index] = ack.version;
    }
  };
  // PostgreSQL logs this line when it starts on a data directory that was not shut down
  // cleanly: proof that each restart below really recovers from a crash.
  constexpr std::string_view kRecovery = "automatic recovery in progress";
  auto recoveries = [&] {
    const std::string log = cluster_->ServerLog();
    size_t n = 0;
    for (size_t at = log.find(kRecovery); at != std::string::npos;
         at = log.find(kRecovery, at + 1)) {
      ++n;
    }
    return n;
  };
  const size_t recoveries_before = recoveries();
  constexpr int kCrashes = 3;
  for (int crash = 0; crash < kCrashes; ++crash) {
    collect(15, "before crash " + std::to_string(crash));
    ASSERT_TRUE(cluster_->Crash().ok());  // mid-stream: commits in flight are cut off
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto started = cluster_->Start();
    ASSERT_TRUE(started.ok()) << started.error().ToString();
  }
  collect(15, "after the last restart");  // the writer reconnected by itself
  EXPECT_EQ(recoveries() - recoveries_before, size_t{kCrashes});
  ASSERT_EQ(::kill(child.pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child.pid, &status, 0), child.pid);
  child.pid = -1;
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with status " << status;
  Ack ack{};
  while (ReadAck(fds[0], &ack, std::chrono::milliseconds(0))) acked[ack.index] = ack.version;
  ::close(fds[0]);
  CheckAcked(acked, "after " + std::to_string(kCrashes) + " server crashes");
}

}  // namespace
}  // namespace sigil::store
