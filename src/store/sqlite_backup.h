// Online copies of a SQLite store file, for `sigil server backup` and `sigil server restore
// --from` (docs/operations.md, "Backup and restore").
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace sigil::store {

struct SqliteBackupInfo {
  uint64_t bytes = 0;           // size of the copy
  int64_t schema_version = 0;   // PRAGMA user_version of the copy
  bool schema_current = false;  // the schema this Sigil writes: SqliteStore opens it unchanged
};

// Copies the SQLite store `source` into the new file `dest` as one consistent snapshot: the
// state of the last transaction committed before the copy started, whatever other processes
// (a running `sigil server`) write meanwhile. In WAL mode the copy only holds a read
// transaction, so writers are not blocked. `dest` is created 0600 and must not exist
// (AlreadyExists), nor its -wal/-journal companions; the copy is fsynced with its directory
// and checked (PRAGMA integrity_check). On any failure `dest` is removed again.
// FailedPrecondition if `source` does not exist or holds no Sigil schema.
Result<SqliteBackupInfo> SqliteOnlineBackup(const std::string& source, const std::string& dest);

}  // namespace sigil::store
