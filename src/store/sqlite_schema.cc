#include "store/sqlite_schema.h"

#include <string>

namespace sigil::store::internal {
namespace {

// Times are INTEGER Unix microseconds. Hashes are lowercase hex TEXT.
constexpr const char* kV1Initial = R"sql(
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('revision', 0), ('compacted_revision', 0);

CREATE TABLE resources (
  kind             TEXT NOT NULL,
  name             TEXT NOT NULL,
  resource_version INTEGER NOT NULL CHECK (resource_version > 0),
  spec_json        TEXT NOT NULL,
  created_us       INTEGER NOT NULL,
  updated_us       INTEGER NOT NULL,
  PRIMARY KEY (kind, name)
) WITHOUT ROWID;

-- The change log: one row per changed resource per revision; deletes are tombstones.
CREATE TABLE changes (
  revision         INTEGER NOT NULL,
  kind             TEXT NOT NULL,
  name             TEXT NOT NULL,
  op               INTEGER NOT NULL CHECK (op IN (0, 1)),  -- 0 upsert, 1 delete
  resource_version INTEGER NOT NULL,
  spec_json        TEXT NOT NULL,
  time_us          INTEGER NOT NULL,
  PRIMARY KEY (revision, kind, name)
) WITHOUT ROWID;

CREATE TABLE join_tokens (
  token_hash TEXT PRIMARY KEY CHECK (length(token_hash) = 64),
  node_name  TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_us INTEGER NOT NULL,
  expires_us INTEGER NOT NULL,
  used_us    INTEGER,
  expired_us INTEGER
) WITHOUT ROWID;

CREATE TABLE nodes (
  name              TEXT PRIMARY KEY,
  spiffe_id         TEXT NOT NULL,
  svid_serial       TEXT NOT NULL,
  svid_expiry_us    INTEGER NOT NULL,
  joined_us         INTEGER NOT NULL,
  last_seen_us      INTEGER NOT NULL,
  revoked           INTEGER NOT NULL CHECK (revoked IN (0, 1)),
  revocation_reason TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE blobs (
  name       TEXT PRIMARY KEY,
  data       BLOB NOT NULL,
  updated_us INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE audit (
  seq       INTEGER PRIMARY KEY CHECK (seq > 0),
  time_us   INTEGER NOT NULL,
  type      TEXT NOT NULL,
  actor     TEXT NOT NULL,
  node      TEXT NOT NULL,
  identity  TEXT NOT NULL,
  pid       INTEGER,
  exe       TEXT NOT NULL,
  details   TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash      TEXT NOT NULL
);
)sql";

// Query indexes for `sigil audit` filters and token expiry, and append-only enforcement:
// the application can only INSERT audit rows. (Anyone with write access to the file can
// drop the triggers; the hash chain is what detects that kind of tampering.)
constexpr const char* kV2AuditIndexesAppendOnly = R"sql(
CREATE INDEX audit_by_identity ON audit (identity, seq);
CREATE INDEX audit_by_node ON audit (node, seq);
CREATE INDEX audit_by_pid ON audit (pid, seq) WHERE pid IS NOT NULL;
CREATE INDEX audit_by_time ON audit (time_us);
CREATE INDEX join_tokens_pending ON join_tokens (expires_us)
  WHERE used_us IS NULL AND expired_us IS NULL;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
)sql";

constexpr Migration kMigrations[] = {
    {1, "initial schema", kV1Initial},
    {2, "audit query indexes, append-only audit triggers", kV2AuditIndexesAppendOnly},
};

}  // namespace

std::span<const Migration> SchemaMigrations() { return kMigrations; }
int LatestSchemaVersion() { return SchemaMigrations().back().version; }

Result<void> MigrateSchema(Connection& conn, std::string_view path_for_errors) {
  // The write transaction makes concurrent openers of a fresh file migrate one at a time;
  // the second sees the first one's user_version.
  SIGIL_ASSIGN_OR_RETURN(auto tx, Transaction::Begin(conn, Transaction::Mode::kWrite));
  SIGIL_ASSIGN_OR_RETURN(int64_t version, conn.QueryInt("PRAGMA user_version"));
  const int latest = LatestSchemaVersion();
  if (version > latest) {
    return FailedPrecondition("store: " + std::string(path_for_errors) + ": schema version " +
                              std::to_string(version) + " is newer than this Sigil supports (" +
                              std::to_string(latest) + "); refusing to open it (upgrade Sigil)");
  }
  if (version < 0) {
    return FailedPrecondition("store: " + std::string(path_for_errors) +
                              ": invalid schema version " + std::to_string(version));
  }
  if (version == latest) return tx.Commit();
  for (const Migration& m : SchemaMigrations()) {
    if (m.version <= version) continue;
    auto applied = conn.Exec(m.sql);
    if (!applied.ok()) {
      return std::move(applied).error().WithContext("store: migration " +
                                                    std::to_string(m.version) + " (" +
                                                    std::string(m.description) + ")");
    }
  }
  // PRAGMA cannot take a bound parameter; the value is our own integer constant.
  std::string set_version = "PRAGMA user_version=" + std::to_string(latest);
  SIGIL_TRY(conn.Exec(set_version.c_str()));
  return tx.Commit();
}

}  // namespace sigil::store::internal
