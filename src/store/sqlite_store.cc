// SqliteStore: opening, resources, revisions and the change log.
// Join tokens, nodes and blobs: sqlite_store_tokens.cc. Audit: sqlite_store_audit.cc.
#include "store/sqlite_store.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "store/sqlite_schema.h"
#include "store/sqlite_store_internal.h"

namespace sigil::store {

using internal::FromMicros;
using internal::ResourceKey;
using internal::ToMicros;
using internal::Transaction;

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path,
                                                       const SqliteOptions& options) {
  if (options.clock == nullptr) return InvalidArgument("store: SqliteOptions.clock is null");
  const auto busy_ms = static_cast<int>(
      std::clamp<int64_t>(options.busy_timeout.count(), 0, std::numeric_limits<int>::max()));
  SIGIL_ASSIGN_OR_RETURN(auto conn, internal::Connection::Open(path, busy_ms));
  SIGIL_TRY(internal::MigrateSchema(*conn, path));
  std::unique_ptr<SqliteStore> store(new SqliteStore(std::move(conn), path, options));  // NOLINT
  if (path != ":memory:" && options.separate_read_connection) {
    // A second connection for the hot reads, so they do not queue behind a write's fsync
    // (WAL: readers see the last committed state without blocking the writer).
    SIGIL_ASSIGN_OR_RETURN(store->read_conn_, internal::Connection::Open(path, busy_ms));
  }
  SIGIL_ASSIGN_OR_RETURN(store->known_revision_, store->CurrentRevision());
  return store;
}

SqliteStore::SqliteStore(std::unique_ptr<internal::Connection> conn, std::string path,
                         const SqliteOptions& options)
    : path_(std::move(path)), options_(options), conn_(std::move(conn)) {}

Result<uint64_t> SqliteStore::ReadMeta(std::string_view key) { return ReadMetaOn(*conn_, key); }

Result<uint64_t> SqliteStore::ReadMetaOn(internal::Connection& conn, std::string_view key) {
  SIGIL_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT value FROM meta WHERE key = ?1"));
  stmt.Bind(1, key);
  SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return Internal("store: meta key " + std::string(key) + " is missing");
  return static_cast<uint64_t>(stmt.Int(0));
}

Result<void> SqliteStore::WriteMeta(std::string_view key, uint64_t value) {
  SIGIL_ASSIGN_OR_RETURN(auto stmt, conn_->Prepare("UPDATE meta SET value = ?2 WHERE key = ?1"));
  stmt.Bind(1, key).Bind(2, static_cast<int64_t>(value));
  return stmt.Run();
}

Result<WriteResult> SqliteStore::ApplyOne(const ResourceWrite& w, uint64_t revision,
                                          int64_t now_us) {
  uint64_t current = 0;
  std::string stored_spec;
  {
    SIGIL_ASSIGN_OR_RETURN(
        auto sel,
        conn_->Prepare(
            "SELECT resource_version, spec_json FROM resources WHERE kind = ?1 AND name = ?2"));
    sel.Bind(1, w.kind).Bind(2, w.name);
    SIGIL_ASSIGN_OR_RETURN(bool found, sel.Step());
    if (found) {
      current = static_cast<uint64_t>(sel.Int(0));
      stored_spec = sel.Text(1);
    }
  }
  const std::string key = ResourceKey(w.kind, w.name);
  if (w.expected_version.has_value() && *w.expected_version != current) {
    return Error(ErrorCode::kAborted, "store: " + key + ": resourceVersion conflict: expected " +
                                          std::to_string(*w.expected_version) + ", stored " +
                                          (current == 0 ? std::string("none (does not exist)")
                                                        : std::to_string(current)));
  }
  const auto rev = static_cast<int64_t>(revision);
  if (w.op == WriteOp::kDelete) {
    if (current == 0) return NotFound("store: " + key + " not found");
    SIGIL_ASSIGN_OR_RETURN(auto del,
                           conn_->Prepare("DELETE FROM resources WHERE kind = ?1 AND name = ?2"));
    SIGIL_TRY(del.Bind(1, w.kind).Bind(2, w.name).Run());
  } else {
    if (current != 0 && stored_spec == w.spec_json && !w.force_new_version) {
      return WriteResult{w.kind, w.name, current, /*changed=*/false};
    }
    SIGIL_ASSIGN_OR_RETURN(
        auto up,
        conn_->Prepare(
            "INSERT INTO resources (kind, name, resource_version, spec_json, created_us, "
            "updated_us)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (kind, name) DO UPDATE SET"
            " resource_version = excluded.resource_version, spec_json = excluded.spec_json,"
            " updated_us = excluded.updated_us"));
    SIGIL_TRY(
        up.Bind(1, w.kind).Bind(2, w.name).Bind(3, rev).Bind(4, w.spec_json).Bind(5, now_us).Run());
  }
  const bool is_delete = w.op == WriteOp::kDelete;
  SIGIL_ASSIGN_OR_RETURN(
      auto log,
      conn_->Prepare(
          "INSERT INTO changes (revision, kind, name, op, resource_version, spec_json, time_us)"
          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
  log.Bind(1, rev).Bind(2, w.kind).Bind(3, w.name).Bind(4, int64_t{is_delete ? 1 : 0});
  log.Bind(5, is_delete ? static_cast<int64_t>(current) : rev);
  log.Bind(6, is_delete ? std::string_view() : std::string_view(w.spec_json)).Bind(7, now_us);
  SIGIL_TRY(log.Run());
  return WriteResult{w.kind, w.name, is_delete ? 0 : revision, /*changed=*/true};
}

Result<ApplyResult> SqliteStore::ApplyWithBlobs(std::span<const ResourceWrite> writes,
                                                std::span<const BlobWrite> blobs,
                                                std::span<const AuditEvent> audit) {
  SIGIL_TRY(internal::ValidateApplyBatch(writes, blobs));
  auto result = [&] {
    std::lock_guard lock(mu_);
    return InWriteTxn([&]() -> Result<ApplyResult> {
      SIGIL_ASSIGN_OR_RETURN(uint64_t revision, ReadMeta("revision"));
      const int64_t now_us = ToMicros(options_.clock->Now());
      ApplyResult out;
      bool changed = false;
      for (const ResourceWrite& w : writes) {
        SIGIL_ASSIGN_OR_RETURN(WriteResult wr, ApplyOne(w, revision + 1, now_us));
        changed = changed || wr.changed;
        out.writes.push_back(std::move(wr));
      }
      for (const BlobWrite& b : blobs) SIGIL_TRY(PutBlobLocked(b));
      if (changed) SIGIL_TRY(WriteMeta("revision", ++revision));
      out.revision = revision;
      SIGIL_ASSIGN_OR_RETURN(out.audit_seqs, AppendAuditLocked(audit));
      return out;
    });
  }();
  if (result.ok()) NotifyRevision(result->revision);
  return result;
}

namespace {

StoredResource ReadResource(const internal::Statement& s) {
  return StoredResource{.kind = s.Text(0),
                        .name = s.Text(1),
                        .resource_version = static_cast<uint64_t>(s.Int(2)),
                        .spec_json = s.Text(3),
                        .created_at = FromMicros(s.Int(4)),
                        .updated_at = FromMicros(s.Int(5))};
}

}  // namespace

Result<StoredResource> SqliteStore::Get(const std::string& kind, const std::string& name) {
  auto [lock, conn] = Reader();
  SIGIL_ASSIGN_OR_RETURN(
      auto stmt,
      conn->Prepare("SELECT kind, name, resource_version, spec_json, created_us, updated_us"
                    " FROM resources WHERE kind = ?1 AND name = ?2"));
  stmt.Bind(1, kind).Bind(2, name);
  SIGIL_ASSIGN_OR_RETURN(bool found, stmt.Step());
  if (!found) return NotFound("store: " + ResourceKey(kind, name) + " not found");
  return ReadResource(stmt);
}

Result<ResourceList> SqliteStore::List(const std::string& kind) {
  auto [lock, conn] = Reader();
  SIGIL_ASSIGN_OR_RETURN(auto tx, Transaction::Begin(*conn, Transaction::Mode::kRead));
  ResourceList out;
  SIGIL_ASSIGN_OR_RETURN(out.revision, ReadMetaOn(*conn, "revision"));
  SIGIL_ASSIGN_OR_RETURN(
      auto stmt,
      conn->Prepare("SELECT kind, name, resource_version, spec_json, created_us, updated_us"
                    " FROM resources WHERE kind = ?1 ORDER BY name"));
  stmt.Bind(1, kind);
  while (true) {
    SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    out.items.push_back(ReadResource(stmt));
  }
  SIGIL_TRY(tx.Commit());
  return out;
}

Result<uint64_t> SqliteStore::CurrentRevision() {
  auto [lock, conn] = Reader();
  return ReadMetaOn(*conn, "revision");
}

SqliteStore::ReadAccess SqliteStore::Reader() {
  if (read_conn_) return {std::unique_lock(read_mu_), read_conn_.get()};
  return {std::unique_lock(mu_), conn_.get()};
}

Result<ChangePage> SqliteStore::ChangesSince(uint64_t after, uint32_t limit) {
  limit = std::clamp<uint32_t>(limit, 1, 10000);
  auto [lock, conn] = Reader();
  SIGIL_ASSIGN_OR_RETURN(auto tx, Transaction::Begin(*conn, Transaction::Mode::kRead));
  SIGIL_ASSIGN_OR_RETURN(uint64_t current, ReadMetaOn(*conn, "revision"));
  SIGIL_ASSIGN_OR_RETURN(uint64_t horizon, ReadMetaOn(*conn, "compacted_revision"));
  if (after < horizon || after > current) {
    return FailedPrecondition("store: cannot resume from revision " + std::to_string(after) +
                              " (change log holds " + std::to_string(horizon) + ".." +
                              std::to_string(current) + "); take a fresh snapshot");
  }
  ChangePage page;
  {
    // A page ends on a revision boundary: never half of one Apply batch.
    SIGIL_ASSIGN_OR_RETURN(
        auto stmt,
        conn->Prepare(
            "SELECT revision, kind, name, op, resource_version, spec_json, time_us FROM changes"
            " WHERE revision > ?1 AND revision <= (SELECT max(revision) FROM (SELECT revision"
            " FROM changes WHERE revision > ?1 ORDER BY revision LIMIT ?2))"
            " ORDER BY revision, kind, name"));
    stmt.Bind(1, static_cast<int64_t>(after)).Bind(2, int64_t{limit});
    while (true) {
      SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      page.changes.push_back(Change{
          .revision = static_cast<uint64_t>(stmt.Int(0)),
          .op = stmt.Int(3) == 1 ? WriteOp::kDelete : WriteOp::kUpsert,
          .kind = stmt.Text(1),
          .name = stmt.Text(2),
          .resource_version = static_cast<uint64_t>(stmt.Int(4)),
          .spec_json = stmt.Text(5),
          .time = FromMicros(stmt.Int(6)),
      });
    }
  }
  page.revision = page.changes.empty() ? current : page.changes.back().revision;
  page.more = page.revision < current;
  if (!page.more) page.revision = current;
  SIGIL_TRY(tx.Commit());
  return page;
}

Result<uint64_t> SqliteStore::CompactChanges(uint64_t keep_revisions) {
  std::lock_guard lock(mu_);
  return InWriteTxn([&]() -> Result<uint64_t> {
    SIGIL_ASSIGN_OR_RETURN(uint64_t current, ReadMeta("revision"));
    SIGIL_ASSIGN_OR_RETURN(uint64_t horizon, ReadMeta("compacted_revision"));
    const uint64_t target = current > keep_revisions ? current - keep_revisions : 0;
    if (target <= horizon) return horizon;
    SIGIL_ASSIGN_OR_RETURN(auto del, conn_->Prepare("DELETE FROM changes WHERE revision <= ?1"));
    SIGIL_TRY(del.Bind(1, static_cast<int64_t>(target)).Run());
    SIGIL_TRY(WriteMeta("compacted_revision", target));
    return target;
  });
}

Result<uint64_t> SqliteStore::BumpRevision(uint64_t by, std::span<const AuditEvent> audit) {
  if (by == 0) return InvalidArgument("store: revision bump must be positive");
  auto result = [&] {
    std::lock_guard lock(mu_);
    return InWriteTxn([&]() -> Result<uint64_t> {
      SIGIL_ASSIGN_OR_RETURN(uint64_t current, ReadMeta("revision"));
      if (by > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - current) {
        return InvalidArgument("store: revision " + std::to_string(current) + " + " +
                               std::to_string(by) + " does not fit in an int64");
      }
      const uint64_t target = current + by;
      SIGIL_ASSIGN_OR_RETURN(auto del, conn_->Prepare("DELETE FROM changes"));
      SIGIL_TRY(del.Run());
      SIGIL_TRY(WriteMeta("revision", target));
      SIGIL_TRY(WriteMeta("compacted_revision", target));
      SIGIL_TRY(AppendAuditLocked(audit));
      return target;
    });
  }();
  if (result.ok()) NotifyRevision(*result);
  return result;
}

void SqliteStore::NotifyRevision(uint64_t revision) {
  {
    std::lock_guard lock(notify_mu_);
    known_revision_ = std::max(known_revision_, revision);
  }
  revision_cv_.notify_all();
}

Result<uint64_t> SqliteStore::WaitForChange(uint64_t after, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    SIGIL_ASSIGN_OR_RETURN(uint64_t current, CurrentRevision());
    const auto now = std::chrono::steady_clock::now();
    if (current > after || now >= deadline) return current;
    std::unique_lock lock(notify_mu_);
    const auto wait = std::min<std::chrono::steady_clock::duration>(deadline - now,
                                                                    options_.change_poll_interval);
    revision_cv_.wait_for(lock, wait, [&] { return known_revision_ > after; });
  }
}

Result<void> SqliteStore::IntegrityCheck() {
  std::lock_guard lock(mu_);
  SIGIL_ASSIGN_OR_RETURN(auto stmt, conn_->Prepare("PRAGMA integrity_check(20)"));
  std::string problems;
  while (true) {
    SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    std::string line = stmt.Text(0);
    if (line == "ok") continue;
    if (!problems.empty()) problems += "; ";
    problems += line;
  }
  if (!problems.empty()) {
    return FailedPrecondition("store: " + path_ + ": integrity_check failed: " + problems);
  }
  return Ok();
}

}  // namespace sigil::store
