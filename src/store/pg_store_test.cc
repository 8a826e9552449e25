// PostgresStore behaviour that has no SQLite counterpart: change notification between
// handles, connection loss and reconnection, lock timeouts, the server-side append-only
// guard and tamper detection, text the database cannot hold, selection by URL.
#include "store/pg_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "common/encoding.h"
#include "store/sqlite_store.h"
#include "store/store_test_util.h"
#include "store/store_url.h"

namespace sigil::store {
namespace {

using testing::AnyStoreTest;
using testing::Event;
using testing::PgExec;
using testing::PgQueryText;
using testing::PgRawSession;
using testing::Upsert;

constexpr char kWI[] = "WorkloadIdentity";

class PostgresStoreTest : public AnyStoreTest {
 protected:
  // Ends every session on this test's database except the caller's own.
  void TerminateSessions() {
    auto r = PgQueryText(location(),
                         "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                         " WHERE datname = current_database() AND pid <> pg_backend_pid()");
    ASSERT_TRUE(r.ok()) << r.error().ToString();
  }
};
SIGIL_POSTGRES_ONLY(PostgresStoreTest);

TEST_P(PostgresStoreTest, WaitForChangeIsWokenByAnotherHandlesCommitThroughNotify) {
  // An hour of poll interval: only the notification can wake the waiter in time.
  auto waiter = OpenStore({.change_poll_interval = std::chrono::hours(1)});
  auto writer = OpenStore();
  ASSERT_NE(waiter, nullptr);
  ASSERT_NE(writer, nullptr);
  for (uint64_t rev = 1; rev <= 3; ++rev) {
    std::atomic<bool> started{false};
    std::thread t([&] {
      started = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ResourceWrite w[] = {Upsert(kWI, "r" + std::to_string(rev), "{}")};
      ASSERT_TRUE(writer->Apply(w, {}).ok());
    });
    const auto begin = std::chrono::steady_clock::now();
    auto seen = waiter->WaitForChange(rev - 1, std::chrono::seconds(30));
    const auto took = std::chrono::steady_clock::now() - begin;
    t.join();
    ASSERT_TRUE(seen.ok()) << seen.error().ToString();
    EXPECT_EQ(*seen, rev);
    EXPECT_LT(took, std::chrono::seconds(5));
  }
  // Audit-only writes do not move the revision and wake nobody.
  AuditEvent e[] = {Event("svid.issue")};
  ASSERT_TRUE(writer->AppendAudit(e).ok());
  auto idle = waiter->WaitForChange(3, std::chrono::milliseconds(300));
  ASSERT_TRUE(idle.ok());
  EXPECT_EQ(*idle, 3u);
}

TEST_P(PostgresStoreTest, PooledConnectionsKilledByTheServerAreReplacedTransparently) {
  auto store = OpenStore({.change_poll_interval = std::chrono::hours(1)});
  ASSERT_NE(store, nullptr);
  ResourceWrite w1[] = {Upsert(kWI, "a", "{}")};
  ASSERT_TRUE(store->Apply(w1, {}).ok());
  ASSERT_EQ(*store->WaitForChange(0, std::chrono::seconds(1)), 1u);  // starts the listener
  TerminateSessions();
  // The pooled connection died while idle: the call reconnects and succeeds.
  auto got = store->Get(kWI, "a");
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  ResourceWrite w2[] = {Upsert(kWI, "b", "{}")};
  auto applied = store->Apply(w2, {});
  ASSERT_TRUE(applied.ok()) << applied.error().ToString();
  EXPECT_EQ(applied->revision, 2u);
  // The LISTEN connection comes back too: another handle's commit still wakes the waiter.
  auto other = OpenStore();
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ResourceWrite w3[] = {Upsert(kWI, "c", "{}")};
    ASSERT_TRUE(other->Apply(w3, {}).ok());
  });
  auto seen = store->WaitForChange(2, std::chrono::seconds(20));
  t.join();
  ASSERT_TRUE(seen.ok()) << seen.error().ToString();
  EXPECT_EQ(*seen, 3u);
}

TEST_P(PostgresStoreTest, UnavailableWhileTheServerIsDownThenReconnects) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ResourceWrite w1[] = {Upsert(kWI, "a", "{}")};
  ASSERT_TRUE(store->Apply(w1, {}).ok());
  ASSERT_TRUE(cluster_->Stop().ok());
  auto rev = store->CurrentRevision();
  ASSERT_FALSE(rev.ok());
  EXPECT_EQ(rev.error().code(), ErrorCode::kUnavailable) << rev.error().ToString();
  ResourceWrite w2[] = {Upsert(kWI, "b", "{}")};
  auto refused = store->Apply(w2, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable) << refused.error().ToString();
  auto waited = store->WaitForChange(1, std::chrono::milliseconds(100));
  ASSERT_FALSE(waited.ok());
  EXPECT_EQ(waited.error().code(), ErrorCode::kUnavailable);
  ASSERT_TRUE(cluster_->Start().ok()) << cluster_->ServerLogTail();
  auto applied = store->Apply(w2, {});
  ASSERT_TRUE(applied.ok()) << applied.error().ToString();
  EXPECT_EQ(applied->revision, 2u);  // the refused write changed nothing
  EXPECT_TRUE(store->VerifyAudit()->ok);
}

TEST_P(PostgresStoreTest, LockWaitsAreBoundedAndOnlyWritersOfTheRevisionWait) {
  auto store = OpenStore({.lock_timeout = std::chrono::milliseconds(200)});
  ASSERT_NE(store, nullptr);
  ResourceWrite w1[] = {Upsert(kWI, "a", "{}")};
  ASSERT_TRUE(store->Apply(w1, {}).ok());
  // Another session (a stuck replica) holds the revision row.
  auto holder = PgRawSession::Connect(location());
  ASSERT_TRUE(holder.ok());
  ASSERT_TRUE((*holder)->Exec("BEGIN").ok());
  ASSERT_TRUE((*holder)->Exec("SELECT value FROM meta WHERE key = 'revision' FOR UPDATE").ok());
  ResourceWrite w2[] = {Upsert(kWI, "b", "{}")};
  const auto begin = std::chrono::steady_clock::now();
  auto blocked = store->Apply(w2, {});
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.error().code(), ErrorCode::kUnavailable) << blocked.error().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
  // Reads, audit appends, tokens and nodes do not need that row.
  EXPECT_TRUE(store->Get(kWI, "a").ok());
  EXPECT_TRUE(store->List(kWI).ok());
  AuditEvent e[] = {Event("svid.issue")};
  EXPECT_TRUE(store->AppendAudit(e).ok());
  ASSERT_TRUE((*holder)->Exec("COMMIT").ok());
  auto applied = store->Apply(w2, {});
  ASSERT_TRUE(applied.ok()) << applied.error().ToString();
  EXPECT_EQ(applied->revision, 2u);
}

TEST_P(PostgresStoreTest, AppendOnlyGuardAndTamperDetection) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::vector<AuditEvent> events;
  for (int i = 1; i <= 20; ++i) events.push_back(Event("svid.issue", i));
  ASSERT_TRUE(store->AppendAudit(events).ok());
  EXPECT_FALSE(PgExec(location(), "UPDATE audit SET actor = 'x' WHERE seq = 7").ok());
  EXPECT_FALSE(PgExec(location(), "DELETE FROM audit WHERE seq = 7").ok());
  EXPECT_FALSE(PgExec(location(), "TRUNCATE audit").ok());
  ASSERT_TRUE(store->VerifyAudit()->ok);

  // An attacker with table-owner rights drops the guard and edits a record.
  ASSERT_TRUE(PgExec(location(),
                     "DROP TRIGGER audit_no_update ON audit; DROP TRIGGER audit_no_delete ON audit;"
                     " UPDATE audit SET identity = 'spiffe://example.org/admin' WHERE seq = 7")
                  .ok());
  auto report = store->VerifyAudit();
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->ok);
  EXPECT_EQ(report->first_bad_seq, 7u);
  EXPECT_NE(report->reason.find("altered"), std::string::npos) << report->reason;
  EXPECT_TRUE(store->IntegrityCheck().ok());  // the counters still agree: only the chain knows

  // Removing the newest record is invisible to the bare chain, but not to the counter the
  // appenders lock: the integrity check reports it and appending refuses to fork the chain.
  ASSERT_TRUE(PgExec(location(), "DELETE FROM audit WHERE seq = 20").ok());
  auto integrity = store->IntegrityCheck();
  ASSERT_FALSE(integrity.ok());
  EXPECT_EQ(integrity.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(integrity.error().message().find("audit counter is 20"), std::string::npos)
      << integrity.error().message();
  AuditEvent more[] = {Event("svid.issue", 21)};
  auto appended = store->AppendAudit(more);
  ASSERT_FALSE(appended.ok());
  EXPECT_EQ(appended.error().code(), ErrorCode::kInternal);
  EXPECT_NE(appended.error().message().find("chain head"), std::string::npos);
}

TEST_P(PostgresStoreTest, TextTheDatabaseCannotHoldIsInvalidArgument) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  AuditEvent bad = Event("svid.issue");
  bad.exe = "/tmp/\xff\xfe-not-utf8";
  AuditEvent with_nul = Event("svid.issue");
  with_nul.actor = std::string("ad\0min", 6);
  for (const AuditEvent& e : {bad, with_nul}) {
    auto r = store->AppendAudit(std::span(&e, 1));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << r.error().ToString();
    EXPECT_EQ(r.error().message().find("\xff"), std::string::npos);
  }
  EXPECT_EQ(store->GetAuditHead()->seq, 0u);
  EXPECT_TRUE(store->IntegrityCheck().ok());
}

TEST_P(PostgresStoreTest, ConcurrentExpirySweepsFromTwoHandlesAuditEachTokenOnce) {
  const TimePoint t0 = FromUnixSeconds(1700000000);
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 40; ++i) {
      JoinTokenRecord t{.token_hash = Sha256Hex(AsBytes("tok" + std::to_string(i))),
                        .node_name = "node-" + std::to_string(i),
                        .created_by = "admin",
                        .created_at = t0,
                        .expires_at = t0 + Seconds(i % 4),
                        .used_at = {},
                        .expired_at = {}};
      ASSERT_TRUE(store->CreateJoinToken(t, {}).ok());
    }
  }
  ExpiryAuditFn audit_for = [](const JoinTokenRecord& t) {
    return AuditEvent{.type = "token.expire", .actor = "server", .node = t.node_name};
  };
  std::atomic<size_t> expired{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> sweepers;
  for (int s = 0; s < 4; ++s) {
    sweepers.emplace_back([&] {
      auto store = TryOpenStore();
      if (!store.ok()) {
        ++failures;
        return;
      }
      for (int step = 0; step <= 4; ++step) {
        auto r = (*store)->ExpireJoinTokens(t0 + Seconds(step), audit_for);
        if (!r.ok()) {
          ++failures;
          return;
        }
        expired += r->size();
      }
    });
  }
  for (auto& t : sweepers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(expired.load(), 40u);
  auto store = OpenStore();
  AuditFilter filter{.type = "token.expire"};
  EXPECT_EQ(store->QueryAudit(filter)->size(), 40u);
  EXPECT_TRUE(store->VerifyAudit()->ok);
}

TEST_P(PostgresStoreTest, ASmallPoolServesManyThreads) {
  PostgresOptions options;
  options.pool_size = 2;
  auto store = PostgresStore::Open(location(), options);
  ASSERT_TRUE(store.ok()) << store.error().ToString();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        ResourceWrite w[] = {Upsert(kWI, std::to_string(t) + "-" + std::to_string(i), "{}")};
        if (!(*store)->Apply(w, {}).ok()) ++failures;
        if (!(*store)->List(kWI).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(*(*store)->CurrentRevision(), 160u);
}

TEST_P(PostgresStoreTest, StoreUrlSelectsTheImplementation) {
  auto pg = OpenStoreUrl(location());
  ASSERT_TRUE(pg.ok()) << pg.error().ToString();
  EXPECT_NE(dynamic_cast<PostgresStore*>(pg->get()), nullptr);
  EXPECT_TRUE(IsPostgresUrl("postgres://db/sigil"));
  EXPECT_TRUE(IsPostgresUrl("postgresql://db/sigil"));
  EXPECT_FALSE(IsPostgresUrl("/var/lib/sigil/sigil.db"));

  char tmpl[] = "/tmp/sigil-store-url-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto by_scheme = OpenStoreUrl("sqlite://" + dir + "/a.db");
  ASSERT_TRUE(by_scheme.ok()) << by_scheme.error().ToString();
  EXPECT_NE(dynamic_cast<SqliteStore*>(by_scheme->get()), nullptr);
  auto by_path = OpenStoreUrl(dir + "/b.db");
  ASSERT_TRUE(by_path.ok()) << by_path.error().ToString();
  EXPECT_NE(dynamic_cast<SqliteStore*>(by_path->get()), nullptr);
  by_scheme->reset();
  by_path->reset();
  std::filesystem::remove_all(dir);

  const std::string with_password = "postgres://sigil:s3cr3t-pw@db.example:5433/sigil";
  EXPECT_EQ(StoreDisplayName(with_password), "postgres://sigil@db.example:5433/sigil");
  // Nothing listens there: a prompt Unavailable that names the target, never the password.
  auto unreachable = OpenStoreUrl("postgresql://sigil:s3cr3t-pw@/sigil?host=" + dir);
  ASSERT_FALSE(unreachable.ok());
  EXPECT_EQ(unreachable.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(unreachable.error().message().find("s3cr3t"), std::string::npos)
      << unreachable.error().message();
}

}  // namespace
}  // namespace sigil::store
