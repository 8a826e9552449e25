// PostgreSQL schema migrations: version table, idempotence, concurrent openers, upgrades,
// refusal of newer databases, atomic failure.
#include "store/pg_schema.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "store/sqlite_schema.h"
#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::AnyStoreTest;
using testing::Event;
using testing::PgExec;
using testing::PgQueryText;
using testing::PgRawSession;
using testing::Upsert;

class PostgresSchemaTest : public AnyStoreTest {
 protected:
  std::string Query(const std::string& sql) {
    auto r = PgQueryText(location(), sql);
    EXPECT_TRUE(r.ok()) << sql << ": " << r.error().ToString();
    return r.ok() ? *r : std::string("<error>");
  }
};
SIGIL_POSTGRES_ONLY(PostgresSchemaTest);

TEST_P(PostgresSchemaTest, FreshDatabaseIsAtLatestVersion) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->IntegrityCheck().ok());
  const int latest = internal::PgLatestSchemaVersion();
  EXPECT_EQ(latest, internal::LatestSchemaVersion());  // the SQLite schema's twin
  EXPECT_EQ(Query("SELECT max(version) FROM sigil_schema_version"), std::to_string(latest));
  EXPECT_EQ(Query("SELECT count(*) FROM sigil_schema_version"), std::to_string(latest));
  EXPECT_EQ(Query("SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM meta"),
            "audit_seq=0,compacted_revision=0,revision=0");
  // Keys sort bytewise whatever the database's locale.
  EXPECT_EQ(Query("SELECT collation_name FROM information_schema.columns"
                  " WHERE table_name = 'resources' AND column_name = 'name'"),
            "C");
}

TEST_P(PostgresSchemaTest, ReopeningIsIdempotentAndKeepsData) {
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ResourceWrite w[] = {Upsert("WorkloadIdentity", "a", "{}")};
    ASSERT_TRUE(store->Apply(w, {}).ok());
  }
  for (int i = 0; i < 3; ++i) {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(*store->CurrentRevision(), 1u);
  }
  EXPECT_EQ(Query("SELECT count(*) FROM sigil_schema_version"),
            std::to_string(internal::PgLatestSchemaVersion()));
}

TEST_P(PostgresSchemaTest, ARoleWithoutCreateCanUseAMigratedDatabase) {
  ASSERT_NE(OpenStore(), nullptr);  // first start: migrated by the owner
  // Replicas may then run as a role that can only read and write rows.
  const std::string role = database_ + "_app";
  ASSERT_TRUE(PgExec(location(), "CREATE ROLE " + role +
                                     " LOGIN; GRANT USAGE ON SCHEMA public TO " + role +
                                     "; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES" +
                                     " IN SCHEMA public TO " + role)
                  .ok());
  std::string url = location();
  url.replace(url.find("user=postgres"), std::string("user=postgres").size(), "user=" + role);
  {
    auto store = PostgresStore::Open(url);
    ASSERT_TRUE(store.ok()) << store.error().ToString();
    ResourceWrite w[] = {Upsert("WorkloadIdentity", "a", "{}")};
    AuditEvent e[] = {Event("resource.apply")};
    auto applied = (*store)->Apply(w, e);
    ASSERT_TRUE(applied.ok()) << applied.error().ToString();
    EXPECT_TRUE((*store)->VerifyAudit()->ok);
    // That role cannot remove the append-only guard, nor create tables.
    EXPECT_FALSE(PgExec(url, "DROP TRIGGER audit_no_update ON audit").ok());
    EXPECT_FALSE(PgExec(url, "CREATE TABLE x (i integer)").ok());
  }
  EXPECT_TRUE(PgExec(location(), "DROP OWNED BY " + role).ok());
  EXPECT_TRUE(PgExec(cluster_->UrlFor("postgres"), "DROP ROLE " + role).ok());
}

TEST_P(PostgresSchemaTest, ConcurrentOpenersOfAFreshDatabaseMigrateOnce) {
  constexpr int kThreads = 8;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      auto store = TryOpenStore();
      if (!store.ok()) {
        ADD_FAILURE() << store.error().ToString();
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Query("SELECT count(*) FROM sigil_schema_version"),
            std::to_string(internal::PgLatestSchemaVersion()));
  EXPECT_EQ(Query("SELECT count(*) FROM meta"), "3");
}

TEST_P(PostgresSchemaTest, MigrationWaitsForTheAdvisoryLock) {
  auto holder = PgRawSession::Connect(location());
  ASSERT_TRUE(holder.ok()) << holder.error().ToString();
  ASSERT_TRUE(
      (*holder)
          ->Exec("SELECT pg_advisory_lock(" + std::to_string(internal::kPgMigrationLockKey) + ")")
          .ok());
  std::atomic<bool> opened{false};
  std::thread opener([&] {
    auto store = TryOpenStore();
    EXPECT_TRUE(store.ok()) << store.error().ToString();
    opened = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(opened.load()) << "Open migrated without taking the migration lock";
  ASSERT_TRUE(
      (*holder)
          ->Exec("SELECT pg_advisory_unlock(" + std::to_string(internal::kPgMigrationLockKey) + ")")
          .ok());
  opener.join();
  EXPECT_TRUE(opened.load());
}

TEST_P(PostgresSchemaTest, DatabaseAtPreviousVersionIsMigratedKeepingData) {
  const auto migrations = internal::PgSchemaMigrations();
  const int previous = migrations.back().version - 1;
  // The database as the previous release left it, with some data in it.
  std::string script =
      "BEGIN; CREATE TABLE sigil_schema_version (version integer PRIMARY KEY,"
      " description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());";
  for (const auto& m : migrations) {
    if (m.version > previous) continue;
    script += m.sql;
    script += "; INSERT INTO sigil_schema_version (version, description) VALUES (" +
              std::to_string(m.version) + ", 'old');";
  }
  script +=
      "INSERT INTO resources VALUES ('WorkloadIdentity', 'old', 7, '{}', now(), now());"
      "UPDATE meta SET value = 7 WHERE key = 'revision'; COMMIT;";
  ASSERT_TRUE(PgExec(location(), script).ok());

  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Query("SELECT max(version) FROM sigil_schema_version"),
            std::to_string(internal::PgLatestSchemaVersion()));
  auto old = store->Get("WorkloadIdentity", "old");
  ASSERT_TRUE(old.ok()) << old.error().ToString();
  EXPECT_EQ(old->resource_version, 7u);
  ResourceWrite w[] = {Upsert("WorkloadIdentity", "old", R"({"x":1})", 7)};
  EXPECT_EQ(store->Apply(w, {})->revision, 8u);
  // Version 2 made the audit table append-only.
  AuditEvent e[] = {Event("resource.apply")};
  ASSERT_TRUE(store->AppendAudit(e).ok());
  EXPECT_FALSE(PgExec(location(), "UPDATE audit SET actor = 'x'").ok());
  EXPECT_FALSE(PgExec(location(), "DELETE FROM audit").ok());
  EXPECT_FALSE(PgExec(location(), "TRUNCATE audit").ok());
  EXPECT_EQ(Query("SELECT count(*) FROM audit"), "1");
}

TEST_P(PostgresSchemaTest, DatabaseFromNewerSigilIsRefused) {
  ASSERT_NE(OpenStore(), nullptr);
  const int newer = internal::PgLatestSchemaVersion() + 1;
  ASSERT_TRUE(
      PgExec(location(), "INSERT INTO sigil_schema_version (version, description) VALUES (" +
                             std::to_string(newer) + ", 'from the future')")
          .ok());
  auto store = TryOpenStore();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(store.error().message().find("newer than this Sigil supports"), std::string::npos)
      << store.error().message();
  EXPECT_EQ(Query("SELECT max(version) FROM sigil_schema_version"), std::to_string(newer));
}

TEST_P(PostgresSchemaTest, FailedMigrationLeavesDatabaseUntouched) {
  // A table the initial migration would create already exists: migration 1 fails midway.
  ASSERT_TRUE(PgExec(location(), "CREATE TABLE audit (x integer)").ok());
  auto store = TryOpenStore();
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.error().message().find("migration 1"), std::string::npos)
      << store.error().message();
  // DDL is transactional: not even the version table or the first tables remain.
  EXPECT_EQ(Query("SELECT coalesce(to_regclass('sigil_schema_version')::text, 'none')"), "none");
  EXPECT_EQ(Query("SELECT coalesce(to_regclass('meta')::text, 'none')"), "none");
  EXPECT_EQ(Query("SELECT count(*) FROM information_schema.columns WHERE table_name = 'audit'"),
            "1");
}

}  // namespace
}  // namespace sigil::store
