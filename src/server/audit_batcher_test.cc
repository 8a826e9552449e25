// AuditBatcher over a real SQLite file: concurrent callers share transactions, every record
// is durable and in one valid chain.
#include "server/audit_batcher.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <thread>

#include "store/sqlite_store.h"

namespace sigil::server {
namespace {

TEST(AuditBatcherTest, ConcurrentAppendsShareCommitsAndKeepOneChain) {
  char tmpl[] = "/tmp/sigil-audit-batch-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  {
    auto store = store::SqliteStore::Open(dir + "/sigil.db");
    ASSERT_TRUE(store.ok());
    AuditBatcher batcher(**store);
    constexpr int kThreads = 16;
    constexpr int kEach = 40;
    std::vector<std::vector<uint64_t>> seqs(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          store::AuditEvent e;
          e.type = "svid.issue";
          e.actor = "test";
          e.pid = t * 1000 + i;
          auto seq = batcher.Append(std::move(e));
          ASSERT_TRUE(seq.ok()) << seq.error().ToString();
          seqs[t].push_back(*seq);
        }
      });
    }
    for (auto& th : threads) th.join();
    std::set<uint64_t> all;
    for (const auto& v : seqs) all.insert(v.begin(), v.end());
    EXPECT_EQ(all.size(), size_t{kThreads * kEach});
    EXPECT_EQ(*all.begin(), 1u);
    EXPECT_EQ(*all.rbegin(), uint64_t{kThreads * kEach});
    EXPECT_LT(batcher.batches(), uint64_t{kThreads * kEach}) << "no commit was shared";
    // Each caller's records are in its own call order, and the chain verifies.
    for (const auto& v : seqs) EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
    auto report = (*store)->VerifyAudit();
    ASSERT_TRUE(report.ok());
    EXPECT_TRUE(report->ok) << report->reason;
    EXPECT_EQ(report->records_checked, uint64_t{kThreads * kEach});
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sigil::server
