// Versioned schema of the SQLite store. `PRAGMA user_version` holds the number of
// migrations applied; Open applies the missing ones in one transaction and refuses a
// database written by a newer Sigil (user_version greater than the migrations it knows).
//
// Rules for adding a migration: append to the list (never edit a shipped one), keep it
// forward-only, and make it valid SQL for a database at the previous version.
#pragma once

#include <span>
#include <string_view>

#include "common/result.h"
#include "store/sqlite_db.h"

namespace sigil::store::internal {

struct Migration {
  int version;  // user_version after this migration
  std::string_view description;
  const char* sql;
};

// All migrations, in order; SchemaMigrations().back().version is the current version.
std::span<const Migration> SchemaMigrations();
int LatestSchemaVersion();

// Brings the database to LatestSchemaVersion(), or fails (FailedPrecondition for a newer
// database) without changing anything.
Result<void> MigrateSchema(Connection& conn, std::string_view path_for_errors);

}  // namespace sigil::store::internal
