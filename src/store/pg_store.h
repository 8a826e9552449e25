// PostgresStore: the Store on PostgreSQL (libpq), shared by several `sigil server` replicas.
//
// Same contract and logical schema as SqliteStore (see store.h and pg_schema.h). Design:
//
// - Transactions run at READ COMMITTED with explicit row locks, which serialise exactly the
//   read-modify-write sequences the contract needs, across every connection of every
//   replica:
//     * the store revision: a write that may move it first locks meta('revision') with
//       SELECT ... FOR UPDATE, so batches commit one revision after the other and a reader
//       never sees revision N+1 before N;
//     * the audit chain: appenders advance meta('audit_seq') with UPDATE ... RETURNING, which
//       holds that row's lock until commit; the chain head is read after taking it, so the
//       chain never forks and seqs have no gaps;
//     * join tokens and nodes: the row itself (SELECT ... FOR UPDATE, or a conditional
//       UPDATE, which PostgreSQL re-checks against the committed row after waiting).
//   Locks are always taken in the order revision -> rows -> audit_seq, so these
//   transactions cannot deadlock each other. Multi-statement reads that must be consistent
//   (ChangesSince, VerifyAudit) use a REPEATABLE READ READ ONLY snapshot.
// - Serialization failures and deadlocks (SQLSTATE 40001, 40P01; not expected with the lock
//   order above, but possible with foreign sessions holding locks) are retried internally,
//   up to kMaxAttempts times with a short jittered backoff, then reported as Aborted. A
//   transaction body may therefore run more than once (ExpireJoinTokens' callback too).
// - Connection loss: a call that fails because its connection broke returns Unavailable and
//   the pool drops its idle connections; the next call reconnects. A call that finds its
//   pooled connection already dead before COMMIT was sent is retried once on a fresh
//   connection (nothing was committed). If the link breaks during COMMIT the outcome is
//   unknown: the call returns Unavailable, and the write may or may not have committed.
// - Lock waits are bounded (lock_timeout, then Unavailable), and the server ends sessions
//   left idle inside a transaction (idle_in_transaction_timeout), so a frozen replica
//   cannot hold the write locks forever.
// - Durability: a commit returns after PostgreSQL flushed its WAL (synchronous_commit is
//   raised to "on" for Sigil's sessions if the server default is "off").
// - Change notification: a write that moves the revision runs pg_notify('sigil_changes',
//   '<revision>') in its transaction; WaitForChange waits on a LISTEN connection
//   (PgChangeListener, started on first use) and falls back to polling every
//   change_poll_interval only while that connection is down.
//
// Thread-safety: thread-safe; up to pool_size calls run in parallel.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "store/store.h"

namespace sigil::store {

namespace internal {
class PgPool;
class PgConnection;
class PgChangeListener;
}  // namespace internal

struct PostgresOptions {
  size_t pool_size = 4;
  // How long a write waits for a row lock held by another writer before Unavailable.
  std::chrono::milliseconds lock_timeout{10000};
  std::chrono::seconds connect_timeout{10};
  // Sessions idle inside a transaction this long are ended by the server.
  std::chrono::milliseconds idle_in_transaction_timeout{60000};
  // How long a call waits for a free pooled connection before Unavailable.
  std::chrono::milliseconds acquire_timeout{30000};
  // WaitForChange's polling interval while the LISTEN connection is down.
  std::chrono::milliseconds change_poll_interval{250};
  const Clock* clock = &Clock::System();  // borrowed; must outlive the store
};

class PostgresStore final : public Store {
 public:
  static constexpr int kMaxAttempts = 5;  // per transaction, for 40001 / 40P01

  // `url`: a libpq connection URL (postgres://, postgresql://) or key=value string. Connects,
  // checks the server, and migrates the schema (see pg_schema.h).
  static Result<std::unique_ptr<PostgresStore>> Open(const std::string& url,
                                                     const PostgresOptions& options = {});
  ~PostgresStore() override;

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

  // PostgreSQL checks its own pages (data checksums, amcheck); this checks the store's
  // invariants: the meta rows exist, no resource or change is newer than the revision, the
  // compaction horizon is not, and the audit counter matches the newest record.
  Result<void> IntegrityCheck() override;
  Result<uint64_t> BumpRevision(uint64_t by, std::span<const AuditEvent> audit) override;

  // The connection target without the password, e.g. "postgres://sigil@db:5432/sigil".
  const std::string& display_name() const;

 private:
  enum class TxnMode {
    kAutocommit,  // one statement, no BEGIN/COMMIT
    kWrite,       // READ COMMITTED, with row locks taken by the body
    kSnapshot,    // REPEATABLE READ READ ONLY
  };
  template <class T>
  using Body = std::function<Result<T>(internal::PgConnection&)>;

  PostgresStore(std::unique_ptr<internal::PgPool> pool, const PostgresOptions& options);

  // Runs `body` in a transaction of `mode` with the retry rules in the header comment.
  template <class T>
  Result<T> Run(std::string_view what, TxnMode mode, const Body<T>& body);

  // Helpers below run inside a kWrite transaction on `c`.
  Result<uint64_t> LockRevision(internal::PgConnection& c);
  Result<WriteResult> ApplyOne(internal::PgConnection& c, const ResourceWrite& w, uint64_t revision,
                               TimePoint now);
  Result<std::vector<uint64_t>> AppendAuditTx(internal::PgConnection& c,
                                              std::span<const AuditEvent> events);
  Result<void> PutBlobTx(internal::PgConnection& c, const BlobWrite& blob);

  void NotifyRevision(uint64_t revision);
  void EnsureListener();

  const PostgresOptions options_;
  std::unique_ptr<internal::PgPool> pool_;

  std::mutex notify_mu_;  // guards the fields below and the listener's creation
  std::condition_variable revision_cv_;
  uint64_t known_revision_ = 0;  // newest revision this handle knows was committed
  bool listening_ = false;       // the LISTEN connection is up
  uint64_t listen_epoch_ = 0;    // bumped when the listener connects or disconnects
  std::unique_ptr<internal::PgChangeListener> listener_;
};

}  // namespace sigil::store
