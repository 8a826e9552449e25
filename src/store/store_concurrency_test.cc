// Concurrent writers on one store from several handles (as several server replicas) in
// threads and in separate processes: the store revision must stay one sequence without gaps
// or duplicates, the audit chain one valid chain, and every change must be in the log once.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::AnyStoreTest;
using testing::Event;
using testing::TestStoreOptions;
using testing::Upsert;

constexpr char kWI[] = "WorkloadIdentity";
const TestStoreOptions kPatient{.lock_timeout = std::chrono::seconds(60)};

class StoreConcurrencyTest : public AnyStoreTest {
 protected:
  // What one writer did: the revision of each of its applies and the seq of each audit
  // record it appended.
  struct Log {
    std::vector<uint64_t> revisions;
    std::vector<uint64_t> seqs;
  };

  // `iterations` times: apply one new resource with one audit event, then append one more
  // audit event on its own. Returns false on the first failure.
  static bool Write(Store& store, const std::string& writer, int iterations, Log& log) {
    for (int i = 0; i < iterations; ++i) {
      ResourceWrite w[] = {
          Upsert(kWI, writer + "-" + std::to_string(i), R"({"i":)" + std::to_string(i) + "}")};
      AuditEvent e[] = {Event("resource.apply", i)};
      auto applied = store.Apply(w, e);
      if (!applied.ok() || applied->audit_seqs.size() != 1) return false;
      log.revisions.push_back(applied->revision);
      log.seqs.push_back(applied->audit_seqs[0]);
      AuditEvent s[] = {Event("svid.issue", i)};
      auto appended = store.AppendAudit(s);
      if (!appended.ok() || appended->size() != 1) return false;
      log.seqs.push_back((*appended)[0]);
    }
    return true;
  }

  // Everything the writers saw, and the store itself, forms one gapless sequence.
  void CheckOneSequence(const Log& all, uint64_t applies, uint64_t records) {
    std::vector<uint64_t> revisions = all.revisions, seqs = all.seqs;
    std::sort(revisions.begin(), revisions.end());
    std::sort(seqs.begin(), seqs.end());
    ASSERT_EQ(revisions.size(), applies);
    ASSERT_EQ(seqs.size(), records);
    for (uint64_t i = 0; i < applies; ++i) {
      ASSERT_EQ(revisions[i], i + 1) << "revision sequence has a gap or a duplicate";
    }
    for (uint64_t i = 0; i < records; ++i) {
      ASSERT_EQ(seqs[i], i + 1) << "audit seq sequence has a gap or a duplicate";
    }
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(*store->CurrentRevision(), applies);
    EXPECT_EQ(store->List(kWI)->items.size(), applies);
    auto changes = store->ChangesSince(0, internal::kMaxChangesPage);
    ASSERT_TRUE(changes.ok()) << changes.error().ToString();
    ASSERT_EQ(changes->changes.size(), applies);
    for (uint64_t i = 0; i < applies; ++i) EXPECT_EQ(changes->changes[i].revision, i + 1);
    auto report = store->VerifyAudit();
    ASSERT_TRUE(report.ok()) << report.error().ToString();
    EXPECT_TRUE(report->ok) << report->reason;
    EXPECT_EQ(report->records_checked, records);
    EXPECT_EQ(store->GetAuditHead()->seq, records);
    EXPECT_TRUE(store->IntegrityCheck().ok());
  }
};
SIGIL_STORE_BACKENDS(StoreConcurrencyTest);

TEST_P(StoreConcurrencyTest, FourHandlesAppendingFormOneChain) {
  ASSERT_NE(OpenStore(), nullptr);  // create and migrate once
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto store = TryOpenStore(kPatient);
      if (!store.ok()) {
        ++failures;
        return;
      }
      for (int i = 0; i < kPerThread; ++i) {
        AuditEvent e[] = {Event("svid.issue", t * 1000 + i)};
        if (!(*store)->AppendAudit(e).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto store = OpenStore();
  auto report = store->VerifyAudit();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->reason;
  EXPECT_EQ(report->records_checked, uint64_t{kThreads * kPerThread});
  EXPECT_EQ(store->GetAuditHead()->seq, uint64_t{kThreads * kPerThread});
}

TEST_P(StoreConcurrencyTest, ThreadsWithOwnHandlesKeepOneRevisionSequenceAndOneChain) {
  ASSERT_NE(OpenStore(), nullptr);
  constexpr int kThreads = 4;
  constexpr int kIterations = 25;
  std::mutex mu;
  Log all;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto store = TryOpenStore(kPatient);
      Log log;
      if (!store.ok() || !Write(**store, "t" + std::to_string(t), kIterations, log)) ++failures;
      std::lock_guard lock(mu);
      all.revisions.insert(all.revisions.end(), log.revisions.begin(), log.revisions.end());
      all.seqs.insert(all.seqs.end(), log.seqs.begin(), log.seqs.end());
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  CheckOneSequence(all, kThreads * kIterations, 2 * kThreads * kIterations);
}

TEST_P(StoreConcurrencyTest, ProcessesKeepOneRevisionSequenceAndOneChain) {
  // The children open the fresh store together, so they also race the schema migration.
  constexpr int kProcesses = 4;
  constexpr int kIterations = 25;
  struct Record {
    uint64_t is_seq;  // 0: a revision, 1: an audit seq
    uint64_t value;
  };
  std::vector<pid_t> pids;
  std::vector<int> pipes;
  for (int p = 0; p < kProcesses; ++p) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: no gtest assertions; the exit code reports. 2: open, 3: write, 4: pipe.
      ::close(fds[0]);
      auto store = TryOpenStore(kPatient);
      if (!store.ok()) {
        std::fprintf(stderr, "child %d: open: %s\n", p, store.error().ToString().c_str());
        ::_exit(2);
      }
      Log log;
      if (!Write(**store, "p" + std::to_string(p), kIterations, log)) ::_exit(3);
      for (uint64_t r : log.revisions) {
        Record rec{0, r};
        if (::write(fds[1], &rec, sizeof rec) != static_cast<ssize_t>(sizeof rec)) ::_exit(4);
      }
      for (uint64_t s : log.seqs) {
        Record rec{1, s};
        if (::write(fds[1], &rec, sizeof rec) != static_cast<ssize_t>(sizeof rec)) ::_exit(4);
      }
      store->reset();
      ::_exit(0);
    }
    ::close(fds[1]);
    pids.push_back(pid);
    pipes.push_back(fds[0]);
  }
  Log all;
  for (int fd : pipes) {  // a child writes only after its writes committed: no lock is held
    Record rec{};
    while (::read(fd, &rec, sizeof rec) == static_cast<ssize_t>(sizeof rec)) {
      (rec.is_seq != 0 ? all.seqs : all.revisions).push_back(rec.value);
    }
    ::close(fd);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
  CheckOneSequence(all, kProcesses * kIterations, 2 * kProcesses * kIterations);
}

}  // namespace
}  // namespace sigil::store
