// SqliteStore: the embedded Store (one `sigil server` per database file).
//
// Durability: WAL journal, synchronous=FULL (a commit is fsynced before the call returns),
// foreign_keys=ON, busy_timeout; schema migrated with PRAGMA user_version at Open.
// Every write goes through BEGIN IMMEDIATE, so read-modify-write sequences (optimistic
// concurrency checks, the revision counter, the audit chain head) are serialised across
// every connection to the file, including other SqliteStore handles and other processes.
//
// Thread-safety: thread-safe. Writes (and the remaining reads) go through one connection
// serialised by `mu_`; the hot reads (Get, List, CurrentRevision, ChangesSince, GetNode,
// GetBlob) use a second connection under `read_mu_`, so they are not stuck behind a write's
// fsync. WAL gives them the last committed state, including this handle's own commits.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "store/sqlite_db.h"
#include "store/store.h"

namespace sigil::store {

struct SqliteOptions {
  // How long a write waits for another connection's write lock before Unavailable.
  std::chrono::milliseconds busy_timeout{10000};
  // How often WaitForChange re-reads the revision to see other connections' commits.
  std::chrono::milliseconds change_poll_interval{250};
  const Clock* clock = &Clock::System();  // borrowed; must outlive the store
  // A second connection for the hot reads (see the class comment).
  bool separate_read_connection = true;
};

class SqliteStore final : public Store {
 public:
  // `path` is a file (created 0600 if absent) or ":memory:" (tests; private to the handle).
  static Result<std::unique_ptr<SqliteStore>> Open(const std::string& path,
                                                   const SqliteOptions& options = {});
  ~SqliteStore() override = default;

  // Store
  Result<ApplyResult> ApplyWithBlobs(std::span<const ResourceWrite> writes,
                                     std::span<const BlobWrite> blobs,
                                     std::span<const AuditEvent> audit) override;
  Result<StoredResource> Get(const std::string& kind, const std::string& name) override;
  Result<ResourceList> List(const std::string& kind) override;
  Result<uint64_t> CurrentRevision() override;
  Result<ChangePage> ChangesSince(uint64_t after, uint32_t limit) override;
  Result<uint64_t> CompactChanges(uint64_t keep_revisions) override;
  Result<uint64_t> WaitForChange(uint64_t after, std::chrono::milliseconds timeout) override;

  Result<void> CreateJoinToken(const JoinTokenRecord& token,
                               std::span<const AuditEvent> audit) override;
  Result<ConsumeResult> ConsumeJoinToken(const std::string& token_hash, TimePoint now,
                                         std::span<const AuditEvent> audit_on_consume) override;
  Result<std::vector<JoinTokenRecord>> ListJoinTokens() override;
  Result<std::vector<JoinTokenRecord>> ExpireJoinTokens(TimePoint now,
                                                        const ExpiryAuditFn& audit_for) override;

  Result<void> UpsertNode(const NodeRecord& node, std::span<const AuditEvent> audit) override;
  Result<NodeRecord> GetNode(const std::string& name) override;
  Result<void> TouchNode(const std::string& name, TimePoint seen) override;
  Result<void> RecordNodeSvid(const std::string& name, const std::string& serial, TimePoint expiry,
                              TimePoint now, std::span<const AuditEvent> audit,
                              const std::string& expected_serial) override;
  Result<std::vector<NodeRecord>> ListNodes() override;

  Result<void> PutBlob(const std::string& name, std::span<const uint8_t> bytes,
                       std::span<const AuditEvent> audit) override;
  Result<std::vector<uint8_t>> GetBlob(const std::string& name) override;

  Result<std::vector<uint64_t>> AppendAudit(std::span<const AuditEvent> events) override;
  Result<std::vector<AuditRecord>> QueryAudit(const AuditFilter& filter) override;
  Result<AuditVerifyReport> VerifyAudit() override;
  Result<AuditHead> GetAuditHead() override;

  Result<void> IntegrityCheck() override;
  Result<uint64_t> BumpRevision(uint64_t by, std::span<const AuditEvent> audit) override;

 private:
  SqliteStore(std::unique_ptr<internal::Connection> conn, std::string path,
              const SqliteOptions& options);

  // Helpers below run inside a transaction opened by the caller, with mu_ held.
  Result<uint64_t> ReadMeta(std::string_view key);
  static Result<uint64_t> ReadMetaOn(internal::Connection& conn, std::string_view key);
  // The connection for plain reads (Get, List, CurrentRevision, ChangesSince, GetNode,
  // GetBlob) with its lock held: the read connection when there is one (file databases).
  struct ReadAccess {
    std::unique_lock<std::mutex> lock;
    internal::Connection* conn;
  };
  ReadAccess Reader();
  Result<void> WriteMeta(std::string_view key, uint64_t value);
  Result<WriteResult> ApplyOne(const ResourceWrite& w, uint64_t revision, int64_t now_us);
  // Appends `events` to the chain after the current head; returns their seqs.
  Result<std::vector<uint64_t>> AppendAuditLocked(std::span<const AuditEvent> events);
  Result<void> PutBlobLocked(const BlobWrite& blob);
  Result<std::optional<JoinTokenRecord>> ReadJoinToken(const std::string& token_hash);
  // Runs `body` in a write transaction and commits; nothing persists if it fails.
  template <class F>
  auto InWriteTxn(F&& body) -> decltype(body());

  void NotifyRevision(uint64_t revision);

  // Constant after construction.
  const std::string path_;
  const SqliteOptions options_;

  std::mutex mu_;  // guards conn_ (every statement and transaction on it)
  std::unique_ptr<internal::Connection> conn_;
  std::mutex read_mu_;                               // guards read_conn_
  std::unique_ptr<internal::Connection> read_conn_;  // null for ":memory:"

  std::mutex notify_mu_;  // guards known_revision_; never held together with mu_
  std::condition_variable revision_cv_;
  uint64_t known_revision_ = 0;
};

}  // namespace sigil::store
