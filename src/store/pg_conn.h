// Thin RAII layer over libpq for PostgresStore: one connection with a prepared-statement
// cache, typed parameters and results in PostgreSQL's binary format, and the mapping of
// SQLSTATEs to Sigil errors.
//
// Binary format everywhere: integers, timestamps and bytea cross the wire without text
// conversion or escaping, and every parameter carries its type OID, so the SQL needs no casts.
//
// Internal to sigil_store. Thread-compatible: a connection is used by one thread at a time
// (PgPool hands it out).
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace sigil::store::internal {

// Per-session settings applied right after connecting.
struct PgSessionSettings {
  // How long a statement waits for a row lock (another writer's transaction) before it
  // fails with Unavailable. 0 waits forever.
  std::chrono::milliseconds lock_timeout{10000};
  // The server ends a session that sits idle inside a transaction this long (a frozen
  // replica cannot hold the store's write locks forever). 0 disables.
  std::chrono::milliseconds idle_in_transaction_timeout{60000};
  std::chrono::seconds connect_timeout{10};
};

// Query parameters, in binary format, each with its type.
class PgParams {
 public:
  PgParams& Int(int64_t v);
  PgParams& Text(std::string_view s);
  PgParams& Bytes(std::span<const uint8_t> b);
  PgParams& Time(TimePoint t);  // timestamptz, truncated to µs
  PgParams& Bool(bool b);
  // SQL NULL when absent.
  PgParams& OptInt(std::optional<int64_t> v);
  PgParams& OptText(const std::optional<std::string>& s);
  PgParams& OptTime(std::optional<TimePoint> t);

  size_t size() const { return types_.size(); }

 private:
  friend class PgConnection;
  void Add(unsigned int type, std::string bytes, bool null);
  std::vector<unsigned int> types_;  // Oid
  std::vector<std::string> values_;
  std::vector<bool> nulls_;
};

// A query result in binary format. Column accessors decode by the column's type OID;
// row and column indexes are 0-based.
class PgResult {
 public:
  explicit PgResult(PGresult* res) : res_(res) {}
  int rows() const;
  bool IsNull(int row, int col) const;
  int64_t Int(int row, int col) const;  // int2, int4, int8
  std::string Text(int row, int col) const;
  std::vector<uint8_t> Bytes(int row, int col) const;
  TimePoint Time(int row, int col) const;  // timestamptz
  bool Bool(int row, int col) const;
  std::optional<int64_t> OptInt(int row, int col) const;
  std::optional<TimePoint> OptTime(int row, int col) const;
  // Rows affected by an INSERT/UPDATE/DELETE.
  int64_t Affected() const;

 private:
  struct Clear {
    void operator()(PGresult* r) const { PQclear(r); }
  };
  std::unique_ptr<PGresult, Clear> res_;
};

class PgConnection {
 public:
  // `conninfo` is a libpq URL or key=value string; `display` names the database in errors
  // (never the password).
  static Result<std::unique_ptr<PgConnection>> Connect(const std::string& conninfo,
                                                       const std::string& display,
                                                       const PgSessionSettings& settings);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs `sql` as a prepared statement (prepared on first use and cached by its text; the
  // same text must always come with the same parameter types). `what` names the step in
  // errors.
  Result<PgResult> Query(std::string_view what, const std::string& sql,
                         const PgParams& params = PgParams());
  // Runs parameterless SQL with the simple protocol (transaction control, DDL; may hold
  // several statements).
  Result<void> Exec(std::string_view what, const char* sql);

  // The connection is usable (false after the server or the network dropped it).
  bool healthy() const;
  // The last failure was a serialization failure or a deadlock (SQLSTATE 40001 / 40P01):
  // the transaction can be retried as a whole.
  bool last_error_retryable() const { return last_retryable_; }
  // Reset by every Query/Exec.
  const std::string& last_sqlstate() const { return last_sqlstate_; }
  PGconn* raw() const { return conn_; }

 private:
  PgConnection(PGconn* conn, std::string display) : conn_(conn), display_(std::move(display)) {}
  Error Fail(std::string_view what, const PGresult* res);
  Result<PgResult> Check(std::string_view what, PGresult* res);

  PGconn* conn_;
  const std::string display_;
  std::unordered_map<std::string, std::string> prepared_;  // sql -> statement name
  std::string last_sqlstate_;
  bool last_retryable_ = false;
};

// "postgres://user@host:port/db" without the password or other secrets, for messages.
std::string PgDisplayName(const std::string& conninfo);

}  // namespace sigil::store::internal
