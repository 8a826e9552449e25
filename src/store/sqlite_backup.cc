#include "store/sqlite_backup.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "store/sqlite_db.h"
#include "store/sqlite_schema.h"

namespace sigil::store {
namespace {

using internal::SqliteError;

constexpr auto kBusyDeadline = std::chrono::seconds(30);
constexpr int kBusyTimeoutMs = 10000;

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

Result<DbPtr> OpenDb(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) return SqliteError(raw, rc, "open " + path);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  return db;
}

Result<int64_t> QueryInt(sqlite3* db, const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db, rc, "prepare");
  rc = sqlite3_step(stmt);
  int64_t value = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
  sqlite3_finalize(stmt);
  if (rc != SQLITE_ROW) return SqliteError(db, rc, "step");
  return value;
}

Result<void> IntegrityCheck(sqlite3* db, const std::string& path) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check(20)", -1, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db, rc, "prepare");
  std::string problems;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    std::string line = text != nullptr ? text : "";
    if (line != "ok") problems += (problems.empty() ? "" : "; ") + line;
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) return SqliteError(db, rc, "integrity_check");
  if (!problems.empty()) {
    return FailedPrecondition("store: backup " + path + " failed its integrity check: " + problems);
  }
  return Ok();
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

Result<void> FsyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return Internal("store: open " + path + ": " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return Internal("store: fsync " + path + ": " + std::strerror(err));
  return Ok();
}

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The copy itself, into `tmp` (already created, empty, 0600).
Result<SqliteBackupInfo> CopyInto(const std::string& source, const std::string& tmp) {
  SIGIL_ASSIGN_OR_RETURN(DbPtr src, OpenDb(source, SQLITE_OPEN_READWRITE));
  SIGIL_ASSIGN_OR_RETURN(int64_t version, QueryInt(src.get(), "PRAGMA user_version"));
  if (version <= 0) {
    return FailedPrecondition("store: " + source + " is not a Sigil store (no schema version)");
  }
  SIGIL_ASSIGN_OR_RETURN(DbPtr dst, OpenDb(tmp, SQLITE_OPEN_READWRITE));
  if (int rc = sqlite3_exec(dst.get(), "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr);
      rc != SQLITE_OK) {
    return SqliteError(dst.get(), rc, "exec");
  }
  sqlite3_backup* backup = sqlite3_backup_init(dst.get(), "main", src.get(), "main");
  if (backup == nullptr) {
    return SqliteError(dst.get(), sqlite3_errcode(dst.get()), "backup init");
  }
  // All pages in one step: one read transaction on the source, so the copy is one snapshot
  // (copying in several steps would restart whenever another process commits in between).
  const auto deadline = std::chrono::steady_clock::now() + kBusyDeadline;
  int rc = SQLITE_OK;
  while (true) {
    rc = sqlite3_backup_step(backup, -1);
    const int primary = rc & 0xff;
    if ((primary != SQLITE_BUSY && primary != SQLITE_LOCKED) ||
        std::chrono::steady_clock::now() >= deadline) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const int finish = sqlite3_backup_finish(backup);
  if (rc != SQLITE_DONE) return SqliteError(nullptr, rc, "backup of " + source);
  if (finish != SQLITE_OK) return SqliteError(dst.get(), finish, "backup of " + source);
  SIGIL_TRY(IntegrityCheck(dst.get(), tmp));
  SIGIL_ASSIGN_OR_RETURN(int64_t copied, QueryInt(dst.get(), "PRAGMA user_version"));
  if (int close_rc = sqlite3_close(dst.release()); close_rc != SQLITE_OK) {
    return SqliteError(nullptr, close_rc, "close " + tmp);
  }
  struct stat st {};
  if (::stat(tmp.c_str(), &st) != 0) {
    return Internal("store: stat " + tmp + ": " + std::strerror(errno));
  }
  return SqliteBackupInfo{static_cast<uint64_t>(st.st_size), copied,
                          copied == internal::LatestSchemaVersion()};
}

}  // namespace

Result<SqliteBackupInfo> SqliteOnlineBackup(const std::string& source, const std::string& dest) {
  if (source.empty() || dest.empty()) return InvalidArgument("store: backup path is empty");
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return FailedPrecondition("store: " + source + " is not an existing database file");
  }
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    if (Exists(dest + suffix)) {
      return AlreadyExists("store: " + dest + suffix + " already exists (not overwritten)");
    }
  }
  // Copy into a temporary name beside `dest` and rename it into place at the end, so `dest`
  // never names a partial copy.
  std::string tmp = dest + ".partial-XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) return Unavailable("store: create " + tmp + ": " + std::strerror(errno));
  ::fchmod(fd, 0600);
  ::close(fd);
  auto remove_tmp = [&tmp] {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
      ::unlink((tmp + suffix).c_str());
    }
  };
  auto info = CopyInto(source, tmp);
  if (!info.ok()) {
    remove_tmp();
    return info;
  }
  if (auto synced = FsyncPath(tmp, O_RDONLY); !synced.ok()) {
    remove_tmp();
    return std::move(synced).error();
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) {
    const int err = errno;
    remove_tmp();
    if (err == EEXIST) {
      return AlreadyExists("store: " + dest + " already exists (not overwritten)");
    }
    return Internal("store: rename " + tmp + " to " + dest + ": " + std::strerror(err));
  }
  SIGIL_TRY(FsyncPath(DirOf(dest), O_RDONLY | O_DIRECTORY));
  return info;
}

}  // namespace sigil::store
