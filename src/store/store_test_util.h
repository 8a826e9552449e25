// Shared fixtures for the store tests: a fresh temp directory per test (SQLite-only tests),
// a fixture parameterized over both Store implementations (a fresh SQLite file or a fresh
// database in the process's throwaway PostgreSQL cluster), helpers to build writes and audit
// events, and the real sqlite3 CLI for tampering.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "store/pg_store.h"
#include "store/pg_test_cluster.h"
#include "store/sqlite_store.h"

namespace sigil::store::testing {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sigil-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string DbPath() const { return dir_ + "/sigil.db"; }

  std::unique_ptr<SqliteStore> OpenStore(const SqliteOptions& options = {}) {
    auto store = SqliteStore::Open(DbPath(), options);
    EXPECT_TRUE(store.ok()) << store.error().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  std::string dir_;
};

enum class StoreBackend { kSqlite, kPostgres };
inline void PrintTo(StoreBackend b, std::ostream* os) {
  *os << (b == StoreBackend::kSqlite ? "sqlite" : "postgres");
}

// The options a test may set, mapped onto SqliteOptions or PostgresOptions.
struct TestStoreOptions {
  const Clock* clock = &Clock::System();
  std::chrono::milliseconds change_poll_interval{250};
  std::chrono::milliseconds lock_timeout{10000};  // SQLite: busy_timeout
};

// Parameterized over StoreBackend; instantiate with SIGIL_STORE_BACKENDS(Suite). Every test
// gets its own empty store location; OpenStore() opens a new handle on it (call it again
// for a second handle, as a second server replica would).
class AnyStoreTest : public ::testing::TestWithParam<StoreBackend> {
 protected:
  void SetUp() override {
    if (GetParam() == StoreBackend::kSqlite) {
      char tmpl[] = "/tmp/sigil-store-test-XXXXXX";
      ASSERT_NE(::mkdtemp(tmpl), nullptr);
      dir_ = tmpl;
      location_ = dir_ + "/sigil.db";
      return;
    }
    auto cluster = PgTestCluster::Shared();
    ASSERT_TRUE(cluster.ok()) << cluster.error().ToString();
    cluster_ = *cluster;
    auto url = cluster_->CreateDatabase(&database_);
    ASSERT_TRUE(url.ok()) << url.error().ToString();
    location_ = *url;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
    if (cluster_ != nullptr && !cluster_->running()) {
      // A fault test stopped the shared server and failed before starting it again.
      auto started = cluster_->Start();
      EXPECT_TRUE(started.ok()) << started.error().ToString();
    }
    if (!database_.empty() && cluster_->running()) {
      auto dropped = cluster_->DropDatabase(database_);
      EXPECT_TRUE(dropped.ok()) << dropped.error().ToString();
    }
  }

  bool postgres() const { return GetParam() == StoreBackend::kPostgres; }
  // The SQLite file path or the PostgreSQL URL.
  const std::string& location() const { return location_; }

  Result<std::unique_ptr<Store>> TryOpenStore(const TestStoreOptions& o = {}) const {
    if (postgres()) {
      PostgresOptions options;
      options.clock = o.clock;
      options.change_poll_interval = o.change_poll_interval;
      options.lock_timeout = o.lock_timeout;
      SIGIL_ASSIGN_OR_RETURN(auto pg, PostgresStore::Open(location_, options));
      return std::unique_ptr<Store>(std::move(pg));
    }
    SqliteOptions options;
    options.clock = o.clock;
    options.change_poll_interval = o.change_poll_interval;
    options.busy_timeout = o.lock_timeout;
    SIGIL_ASSIGN_OR_RETURN(auto sqlite, SqliteStore::Open(location_, options));
    return std::unique_ptr<Store>(std::move(sqlite));
  }
  std::unique_ptr<Store> OpenStore(const TestStoreOptions& o = {}) const {
    auto store = TryOpenStore(o);
    EXPECT_TRUE(store.ok()) << store.error().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  std::string dir_;       // SQLite
  std::string database_;  // PostgreSQL
  PgTestCluster* cluster_ = nullptr;
  std::string location_;
};

inline std::string StoreBackendName(const ::testing::TestParamInfo<StoreBackend>& info) {
  return info.param == StoreBackend::kSqlite ? "sqlite" : "postgres";
}

// Test names end in /sqlite or /postgres; CMake runs every .../postgres test (and the
// Postgres* suites) in one process, so they share one cluster.
#define SIGIL_STORE_BACKENDS(suite)                                                             \
  INSTANTIATE_TEST_SUITE_P(Stores, suite,                                                       \
                           ::testing::Values(::sigil::store::testing::StoreBackend::kSqlite,    \
                                             ::sigil::store::testing::StoreBackend::kPostgres), \
                           ::sigil::store::testing::StoreBackendName)

// PostgreSQL-only suites (schema, faults, notification): named Postgres/Suite.Test/postgres.
#define SIGIL_POSTGRES_ONLY(suite)                                                              \
  INSTANTIATE_TEST_SUITE_P(Postgres, suite,                                                     \
                           ::testing::Values(::sigil::store::testing::StoreBackend::kPostgres), \
                           ::sigil::store::testing::StoreBackendName)

inline ResourceWrite Upsert(std::string kind, std::string name, std::string spec,
                            std::optional<uint64_t> expected = std::nullopt) {
  return ResourceWrite{.kind = std::move(kind),
                       .name = std::move(name),
                       .spec_json = std::move(spec),
                       .op = WriteOp::kUpsert,
                       .expected_version = expected};
}

inline ResourceWrite Delete(std::string kind, std::string name,
                            std::optional<uint64_t> expected = std::nullopt) {
  return ResourceWrite{.kind = std::move(kind),
                       .name = std::move(name),
                       .spec_json = {},
                       .op = WriteOp::kDelete,
                       .expected_version = expected};
}

inline AuditEvent Event(std::string type, int i = 0) {
  return AuditEvent{.time = FromUnixSeconds(1700000000 + i),
                    .type = std::move(type),
                    .actor = "admin",
                    .node = "node-" + std::to_string(i % 7),
                    .identity = "spiffe://example.org/w/" + std::to_string(i % 5),
                    .pid = i % 3 == 0 ? std::nullopt : std::optional<int64_t>(1000 + i),
                    .exe = "/usr/bin/app",
                    .details_json = R"({"i":)" + std::to_string(i) + "}"};
}

// Feeds `sql` to the real sqlite3 CLI on `db_path` (with -bail). Returns its exit status.
inline int RunSqliteCli(const std::string& db_path, const std::string& sql) {
  std::string cmd = "sqlite3 -bail '" + db_path + "' >/dev/null 2>&1";
  FILE* p = ::popen(cmd.c_str(), "w");
  if (p == nullptr) return -1;
  std::fputs(sql.c_str(), p);
  int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace sigil::store::testing
