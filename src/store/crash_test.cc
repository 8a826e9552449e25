// Crash safety: a child process applies a stream of writes and reports each acknowledged
// one through a pipe; the parent SIGKILLs it mid-stream, many times, and checks after each
// restart that every acknowledged write is present, the file is intact and the audit chain
// verifies.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <string>

#include "store/sqlite_store.h"
#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::Event;
using testing::StoreTest;
using testing::Upsert;

struct Ack {
  uint64_t index;
  uint64_t version;  // resource_version of "item-<index>"
};

// Child body: never returns. Exit codes: 2 open failed, 3 apply failed, 4 pipe failed.
[[noreturn]] void WriteForever(const std::string& db_path, int ack_fd, uint64_t first) {
  auto store = SqliteStore::Open(db_path);
  if (!store.ok()) ::_exit(2);
  for (uint64_t i = first; i < first + 100000; ++i) {
    ResourceWrite w[] = {Upsert("WorkloadIdentity", "item-" + std::to_string(i),
                                R"({"i":)" + std::to_string(i) + "}"),
                         Upsert("Service", "counter", R"({"n":)" + std::to_string(i) + "}")};
    AuditEvent e[] = {Event("resource.apply", static_cast<int>(i))};
    auto r = (*store)->Apply(w, e);
    if (!r.ok()) ::_exit(3);
    Ack ack{i, r->writes[0].resource_version};
    // Pipe writes of <= PIPE_BUF bytes are atomic: the parent never sees half an Ack.
    if (::write(ack_fd, &ack, sizeof ack) != static_cast<ssize_t>(sizeof ack)) ::_exit(4);
  }
  ::_exit(0);
}

class CrashTest : public StoreTest {};

TEST_F(CrashTest, AcknowledgedWritesSurviveSigkill) {
  ASSERT_NE(OpenStore(), nullptr);     // create and migrate, then close
  std::map<uint64_t, uint64_t> acked;  // index -> version
  uint64_t next = 1;
  constexpr int kRounds = 8;
  for (int round = 0; round < kRounds; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      WriteForever(DbPath(), fds[1], next);
    }
    ::close(fds[1]);
    // Let the child get a varying number of writes acknowledged, then kill it mid-stream.
    const size_t kill_after = 5 + static_cast<size_t>(round) * 7;
    size_t seen = 0;
    Ack ack{};
    while (seen < kill_after && ::read(fds[0], &ack, sizeof ack) == sizeof ack) {
      acked[ack.index] = ack.version;
      ++seen;
    }
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with status " << status;
    // Acks already in the pipe were acknowledged before the kill: they count too.
    while (::read(fds[0], &ack, sizeof ack) == sizeof ack) acked[ack.index] = ack.version;
    ::close(fds[0]);
    ASSERT_FALSE(acked.empty());
    // A write the killed child committed but never reported is simply re-applied by the
    // next child (an identical upsert is a no-op that reports the stored version).
    next = acked.rbegin()->first + 1;

    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->IntegrityCheck().ok()) << "round " << round;
    for (const auto& [index, version] : acked) {
      auto got = store->Get("WorkloadIdentity", "item-" + std::to_string(index));
      ASSERT_TRUE(got.ok()) << "round " << round << ": acknowledged write " << index << " lost";
      EXPECT_EQ(got->resource_version, version);
      EXPECT_EQ(got->spec_json, R"({"i":)" + std::to_string(index) + "}");
    }
    auto report = store->VerifyAudit();
    ASSERT_TRUE(report.ok());
    EXPECT_TRUE(report->ok) << "round " << round << ": " << report->reason;
    EXPECT_GE(report->records_checked, acked.size());
    EXPECT_GE(*store->CurrentRevision(), acked.rbegin()->second);
  }
  EXPECT_GE(acked.size(), size_t{kRounds * 5});
}

}  // namespace
}  // namespace sigil::store
