#include "store/pg_schema.h"

#include <string>

namespace sigil::store::internal {
namespace {

// The SQLite schema in PostgreSQL types: times are timestamptz (microsecond precision, as
// the SQLite INTEGER microseconds), blobs bytea, booleans boolean. Names, kinds and other
// keys that the store orders by are COLLATE "C", so ORDER BY is bytewise as in SQLite and
// does not depend on the database's locale. Specs and audit details stay text, not jsonb:
// the store keeps the caller's exact bytes (no-op detection, hashing).
//
// meta has one row more than in SQLite: audit_seq, the number of audit records. Appenders
// advance it with UPDATE ... RETURNING, which takes its row lock until commit, so appenders
// from every replica extend one chain one at a time without gaps.
constexpr const char* kV1Initial = R"sql(
CREATE TABLE meta (
  key   text COLLATE "C" PRIMARY KEY,
  value bigint NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revision', 0), ('compacted_revision', 0), ('audit_seq', 0);

CREATE TABLE resources (
  kind             text COLLATE "C" NOT NULL,
  name             text COLLATE "C" NOT NULL,
  resource_version bigint NOT NULL CHECK (resource_version > 0),
  spec_json        text NOT NULL,
  created_at       timestamptz NOT NULL,
  updated_at       timestamptz NOT NULL,
  PRIMARY KEY (kind, name)
);

CREATE TABLE changes (
  revision         bigint NOT NULL,
  kind             text COLLATE "C" NOT NULL,
  name             text COLLATE "C" NOT NULL,
  op               smallint NOT NULL CHECK (op IN (0, 1)),
  resource_version bigint NOT NULL,
  spec_json        text NOT NULL,
  changed_at       timestamptz NOT NULL,
  PRIMARY KEY (revision, kind, name)
);

CREATE TABLE join_tokens (
  token_hash text COLLATE "C" PRIMARY KEY CHECK (length(token_hash) = 64),
  node_name  text COLLATE "C" NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at    timestamptz,
  expired_at timestamptz
);

CREATE TABLE nodes (
  name              text COLLATE "C" PRIMARY KEY,
  spiffe_id         text NOT NULL,
  svid_serial       text NOT NULL,
  svid_expiry       timestamptz NOT NULL,
  joined_at         timestamptz NOT NULL,
  last_seen         timestamptz NOT NULL,
  revoked           boolean NOT NULL,
  revocation_reason text NOT NULL
);

CREATE TABLE blobs (
  name       text COLLATE "C" PRIMARY KEY,
  data       bytea NOT NULL,
  updated_at timestamptz NOT NULL
);
-- Sealed blobs are ciphertext: do not spend time trying to compress them.
ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE audit (
  seq        bigint PRIMARY KEY CHECK (seq > 0),
  event_time timestamptz NOT NULL,
  type       text NOT NULL,
  actor      text NOT NULL,
  node       text NOT NULL,
  identity   text NOT NULL,
  pid        bigint,
  exe        text NOT NULL,
  details    text NOT NULL,
  prev_hash  text NOT NULL,
  hash       text NOT NULL
);
)sql";

// As SQLite's version 2; PostgreSQL also has TRUNCATE, which row triggers do not see.
constexpr const char* kV2AuditIndexesAppendOnly = R"sql(
CREATE INDEX audit_by_identity ON audit (identity, seq);
CREATE INDEX audit_by_node ON audit (node, seq);
CREATE INDEX audit_by_pid ON audit (pid, seq) WHERE pid IS NOT NULL;
CREATE INDEX audit_by_time ON audit (event_time);
CREATE INDEX join_tokens_pending ON join_tokens (expires_at)
  WHERE used_at IS NULL AND expired_at IS NULL;
CREATE FUNCTION sigil_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit log is append-only';
END
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  FOR EACH ROW EXECUTE FUNCTION sigil_audit_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION sigil_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION sigil_audit_append_only();
)sql";

constexpr PgMigration kMigrations[] = {
    {1, "initial schema", kV1Initial},
    {2, "audit query indexes, append-only audit triggers", kV2AuditIndexesAppendOnly},
};

}  // namespace

std::span<const PgMigration> PgSchemaMigrations() { return kMigrations; }
int PgLatestSchemaVersion() { return PgSchemaMigrations().back().version; }

Result<void> MigratePgSchema(PgConnection& conn, std::string_view display) {
  const std::string where = "store: " + std::string(display);
  SIGIL_TRY(conn.Exec("migrate: begin", "BEGIN"));
  auto body = [&]() -> Result<void> {
    // Replicas starting together queue here; the lock ends with the transaction. A slow
    // migration elsewhere may hold it for a while: wait longer than for a row lock.
    SIGIL_TRY(conn.Exec("migrate: lock timeout", "SET LOCAL lock_timeout = '120s'"));
    SIGIL_TRY(conn.Query("migrate: lock", "SELECT pg_advisory_xact_lock($1)",
                         PgParams().Int(kPgMigrationLockKey)));
    // Look before creating: CREATE TABLE IF NOT EXISTS needs the CREATE privilege even when
    // the table exists, and replicas may run as a role without it once the schema is there.
    SIGIL_ASSIGN_OR_RETURN(auto exists,
                           conn.Query("migrate: version table",
                                      "SELECT to_regclass('sigil_schema_version') IS NOT NULL"));
    if (!exists.Bool(0, 0)) {
      SIGIL_TRY(conn.Exec("migrate: version table",
                          "CREATE TABLE sigil_schema_version ("
                          " version integer PRIMARY KEY,"
                          " description text NOT NULL,"
                          " applied_at timestamptz NOT NULL DEFAULT now())"));
    }
    SIGIL_ASSIGN_OR_RETURN(
        auto current,
        conn.Query("migrate: read version",
                   "SELECT coalesce(max(version), 0)::bigint FROM sigil_schema_version"));
    const int64_t version = current.Int(0, 0);
    const int latest = PgLatestSchemaVersion();
    if (version > latest) {
      return FailedPrecondition(where + ": schema version " + std::to_string(version) +
                                " is newer than this Sigil supports (" + std::to_string(latest) +
                                "); refusing to open it (upgrade Sigil)");
    }
    for (const PgMigration& m : PgSchemaMigrations()) {
      if (m.version <= version) continue;
      const std::string what =
          "migration " + std::to_string(m.version) + " (" + std::string(m.description) + ")";
      auto applied = conn.Exec(what, m.sql);
      if (!applied.ok()) return std::move(applied).error().WithContext("store");
      SIGIL_TRY(conn.Query(
          what, "INSERT INTO sigil_schema_version (version, description) VALUES ($1, $2)",
          PgParams().Int(m.version).Text(m.description)));
    }
    return Ok();
  };
  auto result = body();
  if (!result.ok()) {
    if (conn.healthy()) (void)conn.Exec("migrate: rollback", "ROLLBACK");
    return result;
  }
  return conn.Exec("migrate: commit", "COMMIT");
}

}  // namespace sigil::store::internal
