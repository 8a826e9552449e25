// Thin RAII layer over the SQLite C API: a connection with a prepared-statement cache, a
// borrowed statement handle with typed binds/columns, and a transaction guard.
//
// Internal to sigil_store. Thread-compatible: the owner (SqliteStore) serialises all use of
// one Connection with its own mutex.
#pragma once

#include <sqlite3.h>

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
#include "store/store_common.h"  // ToMicros, FromMicros

namespace sigil::store::internal {

// Maps an SQLite result code to an Error: BUSY/LOCKED -> Unavailable, else Internal. The
// message carries SQLite's own text (never bound values).
Error SqliteError(sqlite3* db, int rc, std::string_view what);

class Connection;

// A prepared statement borrowed from the connection's cache; reset and unbound when it goes
// out of scope. Bind indexes are 1-based, column indexes 0-based (as in SQLite). A failed
// bind is remembered and reported by the next Step/Run.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, std::string_view text);
  Statement& BindBlob(int index, std::span<const uint8_t> bytes);
  Statement& BindNull(int index);
  // NULL when absent.
  Statement& BindOpt(int index, std::optional<int64_t> value);
  Statement& BindOpt(int index, const std::optional<std::string>& text);

  // true: a row is available; false: done.
  Result<bool> Step();
  // Steps to completion, expecting no rows.
  Result<void> Run();

  bool IsNull(int col) const;
  int64_t Int(int col) const;
  std::string Text(int col) const;
  std::vector<uint8_t> Blob(int col) const;
  std::optional<int64_t> OptInt(int col) const;

 private:
  friend class Connection;
  Statement(sqlite3* db, sqlite3_stmt* stmt, bool* in_use, bool owned);
  void Check(int rc);

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool* in_use_;  // the cache slot's flag, or nullptr for an uncached statement
  bool owned_;    // finalize (rather than reset) on destruction
  int bind_rc_ = SQLITE_OK;
};

class Connection {
 public:
  // Opens (creating if needed, mode 0600) and applies the per-connection pragmas.
  static Result<std::unique_ptr<Connection>> Open(const std::string& path, int busy_timeout_ms);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Returns the cached statement for `sql` (prepared on first use). `sql` must be a
  // constant: the text is the cache key. If the cached statement is already borrowed
  // (a nested use), a fresh uncached one is returned.
  Result<Statement> Prepare(std::string_view sql);
  // Runs SQL without parameters (DDL, pragmas, transaction control).
  Result<void> Exec(const char* sql);
  // The single integer a query like "PRAGMA user_version" yields.
  Result<int64_t> QueryInt(std::string_view sql);

  // Rows changed by the last INSERT/UPDATE/DELETE on this connection.
  int64_t Changes() const;

  sqlite3* raw() const { return db_; }

 private:
  explicit Connection(sqlite3* db) : db_(db) {}
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  sqlite3* db_;
  // std::unordered_map nodes are stable, so Statement may point at `in_use`.
  std::unordered_map<std::string, Cached> cache_;
};

// BEGIN IMMEDIATE (takes the write lock up front, so read-then-write cannot deadlock or
// hit SQLITE_BUSY_SNAPSHOT) or BEGIN DEFERRED (a consistent read snapshot). Rolls back on
// destruction unless committed.
class Transaction {
 public:
  enum class Mode { kRead, kWrite };
  static Result<Transaction> Begin(Connection& conn, Mode mode);
  Transaction(Transaction&& other) noexcept : conn_(other.conn_) { other.conn_ = nullptr; }
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();
  Result<void> Commit();

 private:
  explicit Transaction(Connection* conn) : conn_(conn) {}
  Connection* conn_;
};

}  // namespace sigil::store::internal
