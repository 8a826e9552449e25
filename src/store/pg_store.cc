// PostgresStore: opening, resources, revisions, the change log and change notification.
// Join tokens, nodes and blobs: pg_store_tokens.cc. Audit: pg_store_audit.cc.
#include "store/pg_store.h"

#include <algorithm>
#include <limits>
#include <thread>
#include <utility>

#include "store/pg_listener.h"
#include "store/pg_schema.h"
#include "store/pg_store_internal.h"

namespace sigil::store {

using internal::PgConnection;
using internal::PgParams;
using internal::PgResult;
using internal::ResourceKey;

Result<std::unique_ptr<PostgresStore>> PostgresStore::Open(const std::string& url,
                                                           const PostgresOptions& options) {
  if (options.clock == nullptr) return InvalidArgument("store: PostgresOptions.clock is null");
  if (url.empty()) return InvalidArgument("store: PostgreSQL URL is empty");
  const std::string display = internal::PgDisplayName(url);
  internal::PgSessionSettings settings{
      .lock_timeout = options.lock_timeout,
      .idle_in_transaction_timeout = options.idle_in_transaction_timeout,
      .connect_timeout = options.connect_timeout,
  };
  auto pool = std::make_unique<internal::PgPool>(url, display, settings, options.pool_size,
                                                 options.acquire_timeout);
  {
    SIGIL_ASSIGN_OR_RETURN(auto lease, pool->Acquire());
    SIGIL_TRY(internal::MigratePgSchema(*lease, display));
  }
  std::unique_ptr<PostgresStore> store(new PostgresStore(std::move(pool), options));  // NOLINT
  SIGIL_ASSIGN_OR_RETURN(store->known_revision_, store->CurrentRevision());
  return store;
}

PostgresStore::PostgresStore(std::unique_ptr<internal::PgPool> pool, const PostgresOptions& options)
    : options_(options), pool_(std::move(pool)) {}

PostgresStore::~PostgresStore() {
  // The listener's callbacks touch this object: stop its thread first.
  std::unique_ptr<internal::PgChangeListener> listener;
  {
    std::lock_guard lock(notify_mu_);
    listener = std::move(listener_);
  }
  listener.reset();
}

const std::string& PostgresStore::display_name() const { return pool_->display(); }

Result<uint64_t> PostgresStore::LockRevision(PgConnection& c) {
  SIGIL_ASSIGN_OR_RETURN(
      auto r, c.Query("lock revision", "SELECT value FROM meta WHERE key = 'revision' FOR UPDATE"));
  if (r.rows() != 1) return Internal("store: meta key revision is missing");
  return static_cast<uint64_t>(r.Int(0, 0));
}

Result<WriteResult> PostgresStore::ApplyOne(PgConnection& c, const ResourceWrite& w,
                                            uint64_t revision, TimePoint now) {
  uint64_t current = 0;
  std::string stored_spec;
  {
    SIGIL_ASSIGN_OR_RETURN(auto sel, c.Query("read resource",
                                             "SELECT resource_version, spec_json FROM resources"
                                             " WHERE kind = $1 AND name = $2",
                                             PgParams().Text(w.kind).Text(w.name)));
    if (sel.rows() > 0) {
      current = static_cast<uint64_t>(sel.Int(0, 0));
      stored_spec = sel.Text(0, 1);
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
  const bool is_delete = w.op == WriteOp::kDelete;
  if (is_delete) {
    if (current == 0) return NotFound("store: " + key + " not found");
    SIGIL_TRY(c.Query("delete resource", "DELETE FROM resources WHERE kind = $1 AND name = $2",
                      PgParams().Text(w.kind).Text(w.name)));
  } else {
    if (current != 0 && stored_spec == w.spec_json && !w.force_new_version) {
      return WriteResult{w.kind, w.name, current, /*changed=*/false};
    }
    SIGIL_TRY(c.Query(
        "write resource",
        "INSERT INTO resources (kind, name, resource_version, spec_json, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (kind, name) DO UPDATE SET"
        " resource_version = excluded.resource_version, spec_json = excluded.spec_json,"
        " updated_at = excluded.updated_at",
        PgParams().Text(w.kind).Text(w.name).Int(rev).Text(w.spec_json).Time(now)));
  }
  SIGIL_TRY(c.Query(
      "log change",
      "INSERT INTO changes (revision, kind, name, op, resource_version, spec_json, changed_at)"
      " VALUES ($1, $2, $3, $4, $5, $6, $7)",
      PgParams()
          .Int(rev)
          .Text(w.kind)
          .Text(w.name)
          .Int(is_delete ? 1 : 0)
          .Int(is_delete ? static_cast<int64_t>(current) : rev)
          .Text(is_delete ? std::string_view() : std::string_view(w.spec_json))
          .Time(now)));
  return WriteResult{w.kind, w.name, is_delete ? 0 : revision, /*changed=*/true};
}

Result<ApplyResult> PostgresStore::ApplyWithBlobs(std::span<const ResourceWrite> writes,
                                                  std::span<const BlobWrite> blobs,
                                                  std::span<const AuditEvent> audit) {
  SIGIL_TRY(internal::ValidateApplyBatch(writes, blobs));
  auto result =
      Run<ApplyResult>("apply", TxnMode::kWrite, [&](PgConnection& c) -> Result<ApplyResult> {
        uint64_t revision = 0;
        if (!writes.empty()) {
          SIGIL_ASSIGN_OR_RETURN(revision, LockRevision(c));
        } else {
          // Audit or blobs only: the revision does not move, so no need to lock it.
          SIGIL_ASSIGN_OR_RETURN(
              auto r, c.Query("read revision", "SELECT value FROM meta WHERE key = 'revision'"));
          if (r.rows() != 1) return Internal("store: meta key revision is missing");
          revision = static_cast<uint64_t>(r.Int(0, 0));
        }
        const TimePoint now = internal::TruncateToMicros(options_.clock->Now());
        ApplyResult out;
        bool changed = false;
        for (const ResourceWrite& w : writes) {
          SIGIL_ASSIGN_OR_RETURN(WriteResult wr, ApplyOne(c, w, revision + 1, now));
          changed = changed || wr.changed;
          out.writes.push_back(std::move(wr));
        }
        for (const BlobWrite& b : blobs) SIGIL_TRY(PutBlobTx(c, b));
        if (changed) {
          ++revision;
          const auto rev = static_cast<int64_t>(revision);
          SIGIL_TRY(c.Query("write revision", "UPDATE meta SET value = $1 WHERE key = 'revision'",
                            PgParams().Int(rev)));
          // Delivered to every listening replica when (and only if) this transaction commits.
          SIGIL_TRY(
              c.Query("notify", "SELECT pg_notify($1, $2)",
                      PgParams().Text(internal::kPgChangeChannel).Text(std::to_string(revision))));
        }
        out.revision = revision;
        SIGIL_ASSIGN_OR_RETURN(out.audit_seqs, AppendAuditTx(c, audit));
        return out;
      });
  if (result.ok()) NotifyRevision(result->revision);
  return result;
}

namespace {

constexpr const char* kResourceColumns =
    "kind, name, resource_version, spec_json, created_at, updated_at";

StoredResource ReadResource(const PgResult& r, int row, int first_col) {
  const int c = first_col;
  return StoredResource{.kind = r.Text(row, c),
                        .name = r.Text(row, c + 1),
                        .resource_version = static_cast<uint64_t>(r.Int(row, c + 2)),
                        .spec_json = r.Text(row, c + 3),
                        .created_at = r.Time(row, c + 4),
                        .updated_at = r.Time(row, c + 5)};
}

}  // namespace

Result<StoredResource> PostgresStore::Get(const std::string& kind, const std::string& name) {
  static const std::string kSql =
      std::string("SELECT ") + kResourceColumns + " FROM resources WHERE kind = $1 AND name = $2";
  return Run<StoredResource>(
      "get resource", TxnMode::kAutocommit, [&](PgConnection& c) -> Result<StoredResource> {
        SIGIL_ASSIGN_OR_RETURN(auto r,
                               c.Query("get resource", kSql, PgParams().Text(kind).Text(name)));
        if (r.rows() == 0) return NotFound("store: " + ResourceKey(kind, name) + " not found");
        return ReadResource(r, 0, 0);
      });
}

Result<ResourceList> PostgresStore::List(const std::string& kind) {
  // One statement, so one snapshot: the items are exactly the state at the revision read
  // with them. The LEFT JOIN yields one all-NULL row when the kind is empty.
  static const std::string kSql =
      "SELECT m.value, r.kind, r.name, r.resource_version, r.spec_json, r.created_at,"
      " r.updated_at FROM meta m LEFT JOIN resources r ON r.kind = $1"
      " WHERE m.key = 'revision' ORDER BY r.name";
  return Run<ResourceList>(
      "list resources", TxnMode::kAutocommit, [&](PgConnection& c) -> Result<ResourceList> {
        SIGIL_ASSIGN_OR_RETURN(auto r, c.Query("list resources", kSql, PgParams().Text(kind)));
        if (r.rows() == 0) return Internal("store: meta key revision is missing");
        ResourceList out;
        out.revision = static_cast<uint64_t>(r.Int(0, 0));
        for (int i = 0; i < r.rows(); ++i) {
          if (r.IsNull(i, 1)) continue;
          out.items.push_back(ReadResource(r, i, 1));
        }
        return out;
      });
}

Result<uint64_t> PostgresStore::CurrentRevision() {
  return Run<uint64_t>(
      "read revision", TxnMode::kAutocommit, [&](PgConnection& c) -> Result<uint64_t> {
        SIGIL_ASSIGN_OR_RETURN(
            auto r, c.Query("read revision", "SELECT value FROM meta WHERE key = 'revision'"));
        if (r.rows() != 1) return Internal("store: meta key revision is missing");
        return static_cast<uint64_t>(r.Int(0, 0));
      });
}

Result<ChangePage> PostgresStore::ChangesSince(uint64_t after, uint32_t limit) {
  limit = std::clamp<uint32_t>(limit, 1, internal::kMaxChangesPage);
  return Run<ChangePage>(
      "read changes", TxnMode::kSnapshot, [&](PgConnection& c) -> Result<ChangePage> {
        SIGIL_ASSIGN_OR_RETURN(
            auto meta, c.Query("read changes",
                               "SELECT (SELECT value FROM meta WHERE key = 'revision'),"
                               " (SELECT value FROM meta WHERE key = 'compacted_revision')"));
        if (meta.IsNull(0, 0) || meta.IsNull(0, 1)) {
          return Internal("store: meta keys revision/compacted_revision are missing");
        }
        const auto current = static_cast<uint64_t>(meta.Int(0, 0));
        const auto horizon = static_cast<uint64_t>(meta.Int(0, 1));
        if (after < horizon || after > current) {
          return FailedPrecondition("store: cannot resume from revision " + std::to_string(after) +
                                    " (change log holds " + std::to_string(horizon) + ".." +
                                    std::to_string(current) + "); take a fresh snapshot");
        }
        // A page ends on a revision boundary: never half of one Apply batch.
        SIGIL_ASSIGN_OR_RETURN(
            auto r,
            c.Query("read changes",
                    "SELECT revision, kind, name, op, resource_version, spec_json, changed_at"
                    " FROM changes WHERE revision > $1 AND revision <= (SELECT max(revision) FROM"
                    " (SELECT revision FROM changes WHERE revision > $1 ORDER BY revision"
                    " LIMIT $2) AS page) ORDER BY revision, kind, name",
                    PgParams().Int(static_cast<int64_t>(after)).Int(int64_t{limit})));
        ChangePage page;
        page.changes.reserve(static_cast<size_t>(r.rows()));
        for (int i = 0; i < r.rows(); ++i) {
          page.changes.push_back(Change{
              .revision = static_cast<uint64_t>(r.Int(i, 0)),
              .op = r.Int(i, 3) == 1 ? WriteOp::kDelete : WriteOp::kUpsert,
              .kind = r.Text(i, 1),
              .name = r.Text(i, 2),
              .resource_version = static_cast<uint64_t>(r.Int(i, 4)),
              .spec_json = r.Text(i, 5),
              .time = r.Time(i, 6),
          });
        }
        page.revision = page.changes.empty() ? current : page.changes.back().revision;
        page.more = page.revision < current;
        if (!page.more) page.revision = current;
        return page;
      });
}

Result<uint64_t> PostgresStore::CompactChanges(uint64_t keep_revisions) {
  return Run<uint64_t>(
      "compact changes", TxnMode::kWrite, [&](PgConnection& c) -> Result<uint64_t> {
        // Holding the revision lock keeps writers out while the horizon moves.
        SIGIL_ASSIGN_OR_RETURN(uint64_t current, LockRevision(c));
        SIGIL_ASSIGN_OR_RETURN(
            auto h,
            c.Query("compact changes", "SELECT value FROM meta WHERE key = 'compacted_revision'"));
        if (h.rows() != 1) return Internal("store: meta key compacted_revision is missing");
        const auto horizon = static_cast<uint64_t>(h.Int(0, 0));
        const uint64_t target = current > keep_revisions ? current - keep_revisions : 0;
        if (target <= horizon) return horizon;
        const auto t = static_cast<int64_t>(target);
        SIGIL_TRY(c.Query("compact changes", "DELETE FROM changes WHERE revision <= $1",
                          PgParams().Int(t)));
        SIGIL_TRY(c.Query("compact changes",
                          "UPDATE meta SET value = $1 WHERE key = 'compacted_revision'",
                          PgParams().Int(t)));
        return target;
      });
}

Result<uint64_t> PostgresStore::BumpRevision(uint64_t by, std::span<const AuditEvent> audit) {
  if (by == 0) return InvalidArgument("store: revision bump must be positive");
  auto result =
      Run<uint64_t>("bump revision", TxnMode::kWrite, [&](PgConnection& c) -> Result<uint64_t> {
        SIGIL_ASSIGN_OR_RETURN(uint64_t current, LockRevision(c));
        if (by > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - current) {
          return InvalidArgument("store: revision " + std::to_string(current) + " + " +
                                 std::to_string(by) + " does not fit in an int64");
        }
        const uint64_t target = current + by;
        const auto t = static_cast<int64_t>(target);
        SIGIL_TRY(c.Query("bump revision", "DELETE FROM changes"));
        SIGIL_TRY(c.Query("bump revision",
                          "UPDATE meta SET value = $1 WHERE key IN ('revision', "
                          "'compacted_revision')",
                          PgParams().Int(t)));
        SIGIL_TRY(
            c.Query("notify", "SELECT pg_notify($1, $2)",
                    PgParams().Text(internal::kPgChangeChannel).Text(std::to_string(target))));
        SIGIL_TRY(AppendAuditTx(c, audit));
        return target;
      });
  if (result.ok()) NotifyRevision(*result);
  return result;
}

void PostgresStore::NotifyRevision(uint64_t revision) {
  {
    std::lock_guard lock(notify_mu_);
    known_revision_ = std::max(known_revision_, revision);
  }
  revision_cv_.notify_all();
}

void PostgresStore::EnsureListener() {
  std::lock_guard lock(notify_mu_);
  if (listener_) return;
  internal::PgChangeListener::Callbacks callbacks{
      .on_revision = [this](uint64_t revision) { NotifyRevision(revision); },
      .on_health =
          [this](bool listening) {
            {
              std::lock_guard inner(notify_mu_);
              listening_ = listening;
              ++listen_epoch_;
            }
            revision_cv_.notify_all();
          },
  };
  listener_ = std::make_unique<internal::PgChangeListener>(pool_->conninfo(), pool_->display(),
                                                           pool_->settings(), std::move(callbacks));
}

Result<uint64_t> PostgresStore::WaitForChange(uint64_t after, std::chrono::milliseconds timeout) {
  EnsureListener();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    uint64_t epoch = 0;
    bool listening = false;
    {
      std::lock_guard lock(notify_mu_);
      epoch = listen_epoch_;
      listening = listening_;
    }
    // Read after noting the listener state: a commit after this read is either notified
    // (listening) or found by the next poll (not listening, or the epoch moved).
    auto read = CurrentRevision();
    const auto now = std::chrono::steady_clock::now();
    if (!read.ok()) {
      // While the database is unreachable keep waiting (and retrying) until the deadline
      // rather than failing at once, so a caller that loops on WaitForChange (the change
      // feed) does not spin on connection attempts.
      if (read.error().code() != ErrorCode::kUnavailable || now >= deadline) return read;
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          deadline - now, options_.change_poll_interval));
      continue;
    }
    const uint64_t current = *read;
    if (current > after || now >= deadline) return current;
    std::unique_lock lock(notify_mu_);
    auto wait = deadline - now;
    if (!listening) {
      wait = std::min<std::chrono::steady_clock::duration>(wait, options_.change_poll_interval);
    }
    revision_cv_.wait_for(lock, wait,
                          [&] { return known_revision_ > after || listen_epoch_ != epoch; });
  }
}

Result<void> PostgresStore::IntegrityCheck() {
  return Run<void>("integrity check", TxnMode::kSnapshot, [&](PgConnection& c) -> Result<void> {
    SIGIL_ASSIGN_OR_RETURN(auto r,
                           c.Query("integrity check",
                                   "SELECT (SELECT value FROM meta WHERE key = 'revision'),"
                                   " (SELECT value FROM meta WHERE key = 'compacted_revision'),"
                                   " (SELECT value FROM meta WHERE key = 'audit_seq'),"
                                   " (SELECT coalesce(max(resource_version), 0) FROM resources),"
                                   " (SELECT coalesce(max(revision), 0) FROM changes),"
                                   " (SELECT coalesce(min(revision), 0) FROM changes),"
                                   " (SELECT coalesce(max(seq), 0) FROM audit)"));
    std::string problems;
    auto problem = [&](const std::string& p) {
      if (!problems.empty()) problems += "; ";
      problems += p;
    };
    for (int col = 0; col < 3; ++col) {
      if (r.IsNull(0, col)) {
        static constexpr const char* kKeys[] = {"revision", "compacted_revision", "audit_seq"};
        problem(std::string("meta key ") + kKeys[col] + " is missing");
      }
    }
    const int64_t revision = r.Int(0, 0), horizon = r.Int(0, 1), audit_seq = r.Int(0, 2);
    const int64_t max_version = r.Int(0, 3), max_change = r.Int(0, 4), min_change = r.Int(0, 5);
    const int64_t max_seq = r.Int(0, 6);
    if (max_version > revision) {
      problem("a resource version (" + std::to_string(max_version) + ") is newer than revision " +
              std::to_string(revision));
    }
    if (max_change > revision) {
      problem("the change log reaches revision " + std::to_string(max_change) +
              ", past the store revision " + std::to_string(revision));
    }
    if (horizon > revision) problem("the compaction horizon is past the store revision");
    if (min_change != 0 && min_change <= horizon) {
      problem("the change log holds revision " + std::to_string(min_change) +
              ", at or before the compaction horizon " + std::to_string(horizon));
    }
    if (audit_seq != max_seq) {
      problem("the audit counter is " + std::to_string(audit_seq) + " but the newest record is " +
              std::to_string(max_seq));
    }
    if (!problems.empty()) {
      return FailedPrecondition("store: " + pool_->display() +
                                ": integrity check failed: " + problems);
    }
    return Ok();
  });
}

}  // namespace sigil::store
