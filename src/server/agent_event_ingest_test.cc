// AgentEventIngest over a real SQLite file: reports from many agents share transactions, each
// report's records are contiguous and durable, one report the store refuses fails alone, and
// the work runs on a thread of lower priority.
#include "server/agent_event_ingest.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "store/sqlite_store.h"

namespace sigil::server {
namespace {

class AgentEventIngestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sigil-agent-ingest-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto store = store::SqliteStore::Open(dir_ + "/sigil.db");
    ASSERT_TRUE(store.ok()) << store.error().ToString();
    store_ = std::move(*store);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  static std::vector<store::AuditEvent> Report(int agent, int n) {
    std::vector<store::AuditEvent> out;
    for (int i = 0; i < n; ++i) {
      store::AuditEvent e;
      e.type = "dataplane.inject";
      e.actor = "agent:node-" + std::to_string(agent);
      e.node = "node-" + std::to_string(agent);
      e.pid = agent * 1000 + i;
      out.push_back(std::move(e));
    }
    return out;
  }
  std::string dir_;
  std::unique_ptr<store::Store> store_;
};

TEST_F(AgentEventIngestTest, ConcurrentReportsShareTransactionsAndStayContiguous) {
  constexpr int kAgents = 12, kReports = 15, kEach = 8;
  std::vector<std::vector<std::vector<uint64_t>>> seqs(kAgents);
  uint64_t transactions = 0;
  {
    AgentEventIngest ingest(*store_, {});
    std::vector<std::thread> threads;
    for (int a = 0; a < kAgents; ++a) {
      threads.emplace_back([&, a] {
        for (int r = 0; r < kReports; ++r) {
          auto got = ingest.Append(Report(a, kEach));
          ASSERT_TRUE(got.ok()) << got.error().ToString();
          seqs[a].push_back(*got);
        }
      });
    }
    for (auto& t : threads) t.join();
    transactions = ingest.transactions();
  }
  std::set<uint64_t> all;
  for (const auto& agent : seqs) {
    uint64_t last = 0;
    for (const auto& report : agent) {
      ASSERT_EQ(report.size(), size_t{kEach});
      for (size_t i = 1; i < report.size(); ++i) EXPECT_EQ(report[i], report[i - 1] + 1);
      EXPECT_GT(report.front(), last);  // an agent's reports in its call order
      last = report.back();
      all.insert(report.begin(), report.end());
    }
  }
  EXPECT_EQ(all.size(), size_t{kAgents * kReports * kEach});
  EXPECT_EQ(*all.rbegin(), uint64_t{kAgents * kReports * kEach});
  EXPECT_LT(transactions, uint64_t{kAgents * kReports}) << "no transaction was shared";
  auto verify = store_->VerifyAudit();
  ASSERT_TRUE(verify.ok());
  EXPECT_TRUE(verify->ok) << verify->reason;
}

TEST_F(AgentEventIngestTest, AReportTheStoreRefusesFailsAlone) {
  AgentEventIngest ingest(*store_, {});
  std::vector<Result<std::vector<uint64_t>>> results(8, Internal("not run"));
  std::vector<std::thread> threads;
  for (int a = 0; a < 8; ++a) {
    threads.emplace_back([&, a] {
      auto report = Report(a, 4);
      if (a == 3) report[2].type = std::string(100, 'x');  // the store refuses the type
      results[static_cast<size_t>(a)] = ingest.Append(std::move(report));
    });
  }
  for (auto& t : threads) t.join();
  for (int a = 0; a < 8; ++a) {
    EXPECT_EQ(results[static_cast<size_t>(a)].ok(), a != 3) << a;
  }
  EXPECT_EQ(results[3].error().code(), ErrorCode::kInvalidArgument);
  auto records = store_->QueryAudit({});
  ASSERT_TRUE(records.ok());
  EXPECT_EQ(records->size(), 7u * 4u);  // nothing of the refused report
}

TEST_F(AgentEventIngestTest, RunsAtLowerPriorityAndFinishesQueuedWorkOnDestruction) {
  auto ingest = std::make_unique<AgentEventIngest>(*store_, AgentEventIngest::Options{.nice = 7});
  ASSERT_TRUE(ingest->Append(Report(1, 1)).ok());
  int nice = -100;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(t.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name != "sigil-audit-in") continue;
    std::ifstream stat(t.path() / "stat");
    std::string line;
    std::getline(stat, line);
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    std::string f;
    for (int i = 0; i < 17; ++i) fields >> f;  // fields 3..19: the 17th is nice
    nice = std::stoi(f);
  }
  EXPECT_EQ(nice, getpriority(PRIO_PROCESS, 0) + 7);
  std::vector<std::thread> threads;
  for (int a = 0; a < 4; ++a) {
    threads.emplace_back([&, a] { EXPECT_TRUE(ingest->Append(Report(a, 3)).ok()); });
  }
  for (auto& t : threads) t.join();
  ingest.reset();
  auto records = store_->QueryAudit({});
  ASSERT_TRUE(records.ok());
  EXPECT_EQ(records->size(), 1u + 4u * 3u);
}

}  // namespace
}  // namespace sigil::server
