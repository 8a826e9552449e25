// Shared fixtures for the store tests: a fresh temp directory per test, helpers to build
// writes and audit events, and the real sqlite3 CLI for tampering.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

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
