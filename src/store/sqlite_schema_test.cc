// Schema migrations and per-connection settings.
#include "store/sqlite_schema.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <string>

#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::Event;
using testing::RunSqliteCli;
using testing::StoreTest;
using testing::Upsert;

// Runs one SQL script on a raw connection, outside SqliteStore.
void RawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err != nullptr ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

int64_t RawQueryInt(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
  int64_t v = sqlite3_step(stmt) == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : -1;
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return v;
}

class SchemaTest : public StoreTest {};

TEST_F(SchemaTest, FreshDatabaseIsAtLatestVersionWithDurableSettings) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->IntegrityCheck().ok());
  EXPECT_GE(internal::LatestSchemaVersion(), 2);
  EXPECT_EQ(RawQueryInt(DbPath(), "PRAGMA user_version"), internal::LatestSchemaVersion());
  struct stat st {};
  ASSERT_EQ(::stat(DbPath().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  store.reset();
  // journal_mode=WAL is persistent in the file.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(DbPath().c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST_F(SchemaTest, DatabaseAtPreviousVersionIsMigratedKeepingData) {
  const auto migrations = internal::SchemaMigrations();
  const int previous = migrations.back().version - 1;
  // Build the database exactly as the previous release left it, with some data in it.
  std::string script = "BEGIN;";
  for (const auto& m : migrations) {
    if (m.version <= previous) script += m.sql;
  }
  script += "PRAGMA user_version=" + std::to_string(previous) + "; COMMIT;";
  RawExec(DbPath(), script);
  RawExec(DbPath(),
          "INSERT INTO resources VALUES ('WorkloadIdentity', 'old', 7, '{}', 1, 1);"
          "UPDATE meta SET value = 7 WHERE key = 'revision';");
  ASSERT_EQ(RawQueryInt(DbPath(), "PRAGMA user_version"), previous);

  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(RawQueryInt(DbPath(), "PRAGMA user_version"), internal::LatestSchemaVersion());
  auto old = store->Get("WorkloadIdentity", "old");
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->resource_version, 7u);
  ResourceWrite w[] = {Upsert("WorkloadIdentity", "old", R"({"x":1})", 7)};
  EXPECT_EQ(store->Apply(w, {})->revision, 8u);
  // Version 2 made the audit table append-only.
  AuditEvent e[] = {Event("resource.apply")};
  ASSERT_TRUE(store->AppendAudit(e).ok());
  store.reset();
  EXPECT_NE(RunSqliteCli(DbPath(), "UPDATE audit SET actor = 'x';"), 0);
  EXPECT_NE(RunSqliteCli(DbPath(), "DELETE FROM audit;"), 0);
  EXPECT_EQ(RawQueryInt(DbPath(), "SELECT count(*) FROM audit"), 1);
}

TEST_F(SchemaTest, DatabaseFromNewerSigilIsRefused) {
  ASSERT_NE(OpenStore(), nullptr);
  const int newer = internal::LatestSchemaVersion() + 1;
  RawExec(DbPath(), "PRAGMA user_version=" + std::to_string(newer));
  auto store = SqliteStore::Open(DbPath());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(store.error().message().find("newer than this Sigil supports"), std::string::npos)
      << store.error().message();
  // Refusing changed nothing.
  EXPECT_EQ(RawQueryInt(DbPath(), "PRAGMA user_version"), newer);
}

TEST_F(SchemaTest, FailedMigrationLeavesDatabaseUntouched) {
  // A table the initial migration would create already exists: migration 1 fails midway.
  RawExec(DbPath(), "CREATE TABLE audit (x INTEGER);");
  auto store = SqliteStore::Open(DbPath());
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.error().message().find("migration 1"), std::string::npos);
  EXPECT_EQ(RawQueryInt(DbPath(), "PRAGMA user_version"), 0);
  EXPECT_EQ(RawQueryInt(DbPath(), "SELECT count(*) FROM sqlite_master WHERE name = 'meta'"), 0);
}

TEST_F(SchemaTest, InMemoryDatabaseWorks) {
  auto store = SqliteStore::Open(":memory:");
  ASSERT_TRUE(store.ok()) << store.error().ToString();
  ResourceWrite w[] = {Upsert("WorkloadIdentity", "x", "{}")};
  ASSERT_TRUE((*store)->Apply(w, {}).ok());
  EXPECT_EQ(*(*store)->CurrentRevision(), 1u);
}

TEST_F(SchemaTest, UnopenablePathIsAnError) {
  auto store = SqliteStore::Open(dir_ + "/missing-dir/sigil.db");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.error().message().find("missing-dir"), std::string::npos);
}

}  // namespace
}  // namespace sigil::store
