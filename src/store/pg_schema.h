// Versioned schema of the PostgreSQL store: the same logical schema as the SQLite store
// (sqlite_schema.h), migration for migration, in PostgreSQL types.
//
// Table sigil_schema_version holds one row per applied migration. PostgresStore::Open
// applies the missing ones in one transaction (PostgreSQL DDL is transactional, so a failed
// migration leaves nothing behind) under a transaction-scoped advisory lock, so replicas
// starting together migrate one at a time and the later ones find the work done. A database
// written by a newer Sigil is refused.
//
// Rules for adding a migration: as for SQLite, append, never edit a shipped one, and add
// the SQLite counterpart with the same version number.
#pragma once

#include <span>
#include <string_view>

#include "common/result.h"
#include "store/pg_conn.h"

namespace sigil::store::internal {

struct PgMigration {
  int version;
  std::string_view description;
  const char* sql;
};

std::span<const PgMigration> PgSchemaMigrations();
int PgLatestSchemaVersion();

// The advisory lock key that serialises migrations (also taken by tests).
inline constexpr int64_t kPgMigrationLockKey = 0x5349474c4d494752;  // "SIGLMIGR"

// Brings the database to PgLatestSchemaVersion(), or fails without changing anything.
Result<void> MigratePgSchema(PgConnection& conn, std::string_view display);

}  // namespace sigil::store::internal
