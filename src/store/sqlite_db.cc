#include "store/sqlite_db.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "store/query_count.h"

namespace sigil::store::internal {

Error SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string msg = "sqlite: ";
  msg += what;
  msg += ": ";
  msg += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  int primary = rc & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) return Unavailable(std::move(msg));
  return Internal(std::move(msg));
}

// --- Statement ---

Statement::Statement(sqlite3* db, sqlite3_stmt* stmt, bool* in_use, bool owned)
    : db_(db), stmt_(stmt), in_use_(in_use), owned_(owned) {
  if (in_use_ != nullptr) *in_use_ = true;
}

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_),
      stmt_(other.stmt_),
      in_use_(other.in_use_),
      owned_(other.owned_),
      bind_rc_(other.bind_rc_) {
  other.stmt_ = nullptr;
  other.in_use_ = nullptr;
}

Statement::~Statement() {
  if (stmt_ == nullptr) return;
  if (owned_) {
    sqlite3_finalize(stmt_);
  } else {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  if (in_use_ != nullptr) *in_use_ = false;
}

void Statement::Check(int rc) {
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
}

Statement& Statement::Bind(int index, int64_t value) {
  Check(sqlite3_bind_int64(stmt_, index, value));
  return *this;
}
Statement& Statement::Bind(int index, std::string_view text) {
  // A null data pointer would bind SQL NULL; an empty string must stay ''.
  const char* data = text.data() != nullptr ? text.data() : "";
  Check(sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}
Statement& Statement::BindBlob(int index, std::span<const uint8_t> bytes) {
  // A zero-length blob must still be a blob, not NULL: pass a non-null pointer.
  static const uint8_t kEmpty = 0;
  const void* data = bytes.empty() ? &kEmpty : bytes.data();
  Check(sqlite3_bind_blob64(stmt_, index, data, bytes.size(), SQLITE_TRANSIENT));
  return *this;
}
Statement& Statement::BindNull(int index) {
  Check(sqlite3_bind_null(stmt_, index));
  return *this;
}
Statement& Statement::BindOpt(int index, std::optional<int64_t> value) {
  return value ? Bind(index, *value) : BindNull(index);
}
Statement& Statement::BindOpt(int index, const std::optional<std::string>& text) {
  return text ? Bind(index, std::string_view(*text)) : BindNull(index);
}

Result<bool> Statement::Step() {
  if (bind_rc_ != SQLITE_OK) return SqliteError(db_, bind_rc_, "bind");
  if (sqlite3_stmt_busy(stmt_) == 0) CountQuery();  // a new execution, not its next row
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(db_, rc, "step");
}

Result<void> Statement::Run() {
  SIGIL_ASSIGN_OR_RETURN(bool row, Step());
  if (row) return Internal("sqlite: statement unexpectedly returned rows");
  return Ok();
}

bool Statement::IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
int64_t Statement::Int(int col) const { return sqlite3_column_int64(stmt_, col); }
std::optional<int64_t> Statement::OptInt(int col) const {
  if (IsNull(col)) return std::nullopt;
  return Int(col);
}
std::string Statement::Text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr || n <= 0) return {};
  return {reinterpret_cast<const char*>(p), static_cast<size_t>(n)};
}
std::vector<uint8_t> Statement::Blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr || n <= 0) return {};
  const auto* b = static_cast<const uint8_t*>(p);
  return {b, b + n};
}

// --- Connection ---

Result<std::unique_ptr<Connection>> Connection::Open(const std::string& path, int busy_timeout_ms) {
  if (path.empty()) return InvalidArgument("store: database path is empty");
  const bool in_memory = path == ":memory:";
  struct stat st {};
  if (!in_memory && ::stat(path.c_str(), &st) != 0) {
    // Create the file ourselves so it is 0600 from the start; SQLite gives the -wal and
    // -shm files the database file's permissions. Only when it does not exist yet: closing
    // any other descriptor of a database file drops every POSIX lock this process holds on
    // it (fcntl semantics), including those of connections already open, which lets
    // another connection reset the WAL under them.
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) {
      return Unavailable("store: open " + path + ": " + std::strerror(errno));
    }
    if (fd >= 0) ::close(fd);
  }
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  std::unique_ptr<Connection> conn(new Connection(db));  // NOLINT: private constructor
  if (rc != SQLITE_OK) return SqliteError(db, rc, "open " + path);
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, busy_timeout_ms);
  // WAL: readers never block the writer. synchronous=FULL: a commit is fsynced before it
  // returns, so every acknowledged write survives power loss, not only a process crash.
  // Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is
  // locked" at once, without its busy handler, to a connection that meets another process's
  // switch (seen with four processes opening a new file together). Retry within the timeout.
  std::string journal;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_timeout_ms);
  for (;;) {
    SIGIL_ASSIGN_OR_RETURN(auto mode, conn->Prepare("PRAGMA journal_mode=WAL"));
    auto has_row = mode.Step();
    if (has_row.ok()) {
      journal = *has_row ? mode.Text(0) : "";
      break;
    }
    if (has_row.error().code() != ErrorCode::kUnavailable ||
        std::chrono::steady_clock::now() >= deadline) {
      return std::move(has_row).error().WithContext("store: " + path + ": journal_mode=WAL");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!in_memory && journal != "wal") {
    return Internal("store: " + path + ": could not enable WAL (journal_mode=" + journal + ")");
  }
  SIGIL_TRY(conn->Exec("PRAGMA synchronous=FULL"));
  SIGIL_TRY(conn->Exec("PRAGMA foreign_keys=ON"));
  SIGIL_TRY(conn->Exec("PRAGMA trusted_schema=OFF"));
  return conn;
}

Connection::~Connection() {
  for (auto& [sql, cached] : cache_) sqlite3_finalize(cached.stmt);
  sqlite3_close_v2(db_);
}

Result<Statement> Connection::Prepare(std::string_view sql) {
  auto it = cache_.find(std::string(sql));
  if (it != cache_.end() && !it->second.in_use) {
    return Statement(db_, it->second.stmt, &it->second.in_use, /*owned=*/false);
  }
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, "prepare");
  if (it != cache_.end()) return Statement(db_, stmt, nullptr, /*owned=*/true);
  auto [slot, inserted] = cache_.emplace(std::string(sql), Cached{stmt, false});
  return Statement(db_, stmt, &slot->second.in_use, /*owned=*/false);
}

int64_t Connection::Changes() const { return sqlite3_changes64(db_); }

Result<void> Connection::Exec(const char* sql) {
  char* err = nullptr;
  CountQuery();
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  sqlite3_free(err);  // sqlite3_errmsg(db_) still holds the text
  if (rc != SQLITE_OK) return SqliteError(db_, rc, "exec");
  return Ok();
}

Result<int64_t> Connection::QueryInt(std::string_view sql) {
  SIGIL_ASSIGN_OR_RETURN(auto stmt, Prepare(sql));
  SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return Internal("sqlite: query returned no row");
  return stmt.Int(0);
}

// --- Transaction ---

Result<Transaction> Transaction::Begin(Connection& conn, Mode mode) {
  SIGIL_TRY(conn.Exec(mode == Mode::kWrite ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED"));
  return Transaction(&conn);
}

Transaction::~Transaction() {
  if (conn_ != nullptr && sqlite3_get_autocommit(conn_->raw()) == 0) {
    (void)conn_->Exec("ROLLBACK");
  }
}

Result<void> Transaction::Commit() {
  Connection* conn = conn_;
  conn_ = nullptr;
  auto r = conn->Exec("COMMIT");
  if (!r.ok() && sqlite3_get_autocommit(conn->raw()) == 0) (void)conn->Exec("ROLLBACK");
  return r;
}

}  // namespace sigil::store::internal
