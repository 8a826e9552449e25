// Store: the control plane's only persistent state, behind one abstract interface.
//
// Implementations: SqliteStore (embedded, one server process per database file; this
// directory) and, later, a PostgreSQL store shared by several stateless server replicas.
// Nothing in this header is SQLite-specific; the contract below is what every
// implementation must honour.
//
// Contract shared by all methods:
// - Every method returns Result<T>. NotFound means "the named thing does not exist";
//   Aborted means an optimistic-concurrency conflict (re-read and retry); InvalidArgument
//   means the caller passed something malformed; Unavailable means the database was busy
//   or unreachable (retry with backoff); Internal is a bug or a corrupt database.
// - A method that returns OK has durably committed (survives a process crash or a power
//   loss, within the durability of the underlying storage). A method that fails has changed
//   nothing.
// - Error messages name kinds, names, node names and versions; they never contain token
//   hashes, blob bytes or resource specs.
// - The store never sees a secret: join tokens arrive as SHA-256 hashes, blobs arrive
//   already encrypted by the caller.
// - Times are stored with microsecond precision (values round-trip truncated to µs).
// - Implementations are thread-safe: any method may be called concurrently from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace sigil::store {

// ---------------------------------------------------------------------------------------
// Resources: opaque JSON documents keyed by (kind, name).

// resource_version equals the store revision of the resource's last change (as in etcd /
// Kubernetes). It therefore strictly increases per resource and is never reused, even
// across delete and re-create, so a stale expected_version can never match by accident.
struct StoredResource {
  std::string kind{};  // e.g. "WorkloadIdentity"
  std::string name{};
  uint64_t resource_version = 0;
  std::string spec_json{};  // canonical JSON object text, as written by the caller
  TimePoint created_at{};
  TimePoint updated_at{};
};

enum class WriteOp { kUpsert, kDelete };

struct ResourceWrite {
  std::string kind{};
  std::string name{};
  std::string spec_json{};  // a JSON object; ignored for kDelete
  WriteOp op = WriteOp::kUpsert;
  // If set, the write applies only when the stored version equals it (0 = must not
  // exist); otherwise the whole batch fails with Aborted naming kind/name and both versions.
  std::optional<uint64_t> expected_version{};
  // An upsert whose spec equals the stored one normally changes nothing; with this set it
  // still gets a new version and a change-log entry (a CredentialSource whose sealed secret
  // changed, e.g. `sigil credential rotate`, so agents see the source change).
  bool force_new_version = false;
};

struct WriteResult {
  std::string kind{};
  std::string name{};
  uint64_t resource_version = 0;  // new version; 0 after a delete
  // False when an upsert carried exactly the stored spec: nothing was written, the version
  // and revision did not move and no change was logged (re-applying a file is a no-op).
  bool changed = false;
};

// A sealed blob written in the same transaction as resource writes (e.g. a CredentialSource's
// secret next to the source itself), or erased (`erase`: a missing blob is not an error).
struct BlobWrite {
  std::string name{};
  std::vector<uint8_t> bytes{};  // already encrypted by the caller; ignored with `erase`
  bool erase = false;
};

struct ApplyResult {
  // The store revision after the batch. All changes of one batch share one revision.
  uint64_t revision = 0;
  std::vector<WriteResult> writes{};   // same order as the request
  std::vector<uint64_t> audit_seqs{};  // seq assigned to each audit event, in order
};

// A consistent snapshot of one kind: `items` are exactly the state at `revision`, so a
// Sync stream can send the snapshot and then resume with ChangesSince(revision).
struct ResourceList {
  uint64_t revision = 0;
  std::vector<StoredResource> items{};  // ordered by name (bytewise)
};

// One entry of the change log. Deletes are tombstones carrying the deleted version.
struct Change {
  uint64_t revision = 0;
  WriteOp op = WriteOp::kUpsert;
  std::string kind{};
  std::string name{};
  uint64_t resource_version = 0;  // version written, or for kDelete the version deleted
  std::string spec_json{};        // empty for kDelete
  TimePoint time{};
};

struct ChangePage {
  std::vector<Change> changes{};  // ordered by (revision, kind, name)
  // Resume point: pass it to the next ChangesSince. When `more` is false it is the store's
  // current revision (the caller is up to date).
  uint64_t revision = 0;
  bool more = false;
};

// ---------------------------------------------------------------------------------------
// Join tokens (node bootstrap). Stored only as the SHA-256 of the secret, lowercase hex.

struct JoinTokenRecord {
  std::string token_hash{};  // 64 lowercase hex characters
  std::string node_name{};
  std::string created_by{};
  TimePoint created_at{};
  TimePoint expires_at{};
  std::optional<TimePoint> used_at{};     // set once, by ConsumeJoinToken
  std::optional<TimePoint> expired_at{};  // set once, by ExpireJoinTokens
};

enum class ConsumeStatus {
  kConsumed,     // was unused and unexpired; now marked used. Admit the node.
  kUnknown,      // no such token hash
  kAlreadyUsed,  // a reuse attempt: audit it
  kExpired,      // expires_at <= now: audit it
};

// The outcome of a consume attempt. Refusals are outcomes, not Errors, so the server can
// switch exhaustively and audit each case; Errors are reserved for storage failures.
struct ConsumeResult {
  ConsumeStatus status = ConsumeStatus::kUnknown;
  std::optional<JoinTokenRecord> token{};  // the record as stored after the attempt
};

// ---------------------------------------------------------------------------------------
// Nodes.

struct NodeRecord {
  std::string name{};
  std::string spiffe_id{};    // spiffe://TD/sigil/node/NAME
  std::string svid_serial{};  // hex serial of the current node SVID
  TimePoint svid_expiry{};
  TimePoint joined_at{};
  TimePoint last_seen{};
  bool revoked = false;
  std::string revocation_reason{};
};

// ---------------------------------------------------------------------------------------
// Audit. Records form a SHA-256 hash chain; see audit_chain.h for the canonical encoding.

struct AuditEvent {
  TimePoint time{};    // if default-constructed, the store stamps its clock's Now()
  std::string type{};  // "token.create", "token.use", "token.reuse", "svid.issue", ...
  std::string actor{};
  std::string node{};
  std::string identity{};  // SPIFFE ID
  std::optional<int64_t> pid{};
  std::string exe{};
  std::string details_json{};  // a JSON object; empty means "{}"
};

struct AuditRecord {
  uint64_t seq = 0;  // 1, 2, 3, ... without gaps
  AuditEvent event{};
  std::string prev_hash{};  // hex; 64 zeros for seq 1
  std::string hash{};       // hex SHA-256 of the canonical encoding
};

struct AuditFilter {
  std::optional<TimePoint> since{};  // inclusive
  std::optional<TimePoint> until{};  // exclusive
  std::optional<std::string> identity{};
  std::optional<std::string> node{};
  std::optional<int64_t> pid{};
  std::optional<std::string> type{};
  // Records whose details object has a top-level "binding" member equal to this
  // (credential grants and denials, injections): `sigil audit --binding`. The database
  // selects records containing `"binding":<name>` and the store keeps those where it is the
  // top-level member, so `limit` may also count a record naming the binding only inside a
  // nested object (none of Sigil's record types nest it).
  std::optional<std::string> binding{};
  // Records whose details object has a top-level "serial" member equal to this: the issuance
  // record of one certificate (svid.issue, node.join, node.renew, ...; lowercase hex as
  // core::Certificate::SerialHex prints it), for `sigil revoke svid`. Selected the same way as
  // `binding`.
  std::optional<std::string> serial{};
  uint64_t after_seq = 0;     // paging: only records with seq > after_seq
  bool newest_first = false;  // with newest_first, after_seq is ignored
  uint32_t limit = 1000;      // capped at kMaxAuditQueryLimit
};
inline constexpr uint32_t kMaxAuditQueryLimit = 10000;

struct AuditVerifyReport {
  bool ok = false;
  uint64_t records_checked = 0;
  std::optional<uint64_t> first_bad_seq{};
  std::string reason{};  // empty when ok
};

// The newest record of the chain. Publishing it elsewhere (log, ticket, signed note) lets a
// later verification also detect truncation of the tail, which a bare chain cannot.
struct AuditHead {
  uint64_t seq = 0;    // 0 for an empty log
  std::string hash{};  // 64 zeros for an empty log
};

// Builds the audit event for one newly expired token (see ExpireJoinTokens). Runs inside
// the store's write transaction: it must not call back into the store.
using ExpiryAuditFn = std::function<AuditEvent(const JoinTokenRecord&)>;

// ---------------------------------------------------------------------------------------

class Store {
 public:
  virtual ~Store() = default;

  // --- Resources ---
  // Applies all writes and appends all audit events in ONE transaction: all or nothing. A
  // batch may not name the same (kind, name) twice. Deleting a missing resource is
  // NotFound. An empty `writes` with events is a plain audit append.
  // `blobs` are written (or erased) in that same transaction.
  virtual Result<ApplyResult> ApplyWithBlobs(std::span<const ResourceWrite> writes,
                                             std::span<const BlobWrite> blobs,
                                             std::span<const AuditEvent> audit) = 0;
  Result<ApplyResult> Apply(std::span<const ResourceWrite> writes,
                            std::span<const AuditEvent> audit) {
    return ApplyWithBlobs(writes, {}, audit);
  }
  virtual Result<StoredResource> Get(const std::string& kind, const std::string& name) = 0;
  virtual Result<ResourceList> List(const std::string& kind) = 0;
  virtual Result<uint64_t> CurrentRevision() = 0;
  // Changes with revision > `after`, at most about `limit` (a revision is never split, so a
  // page may exceed `limit` by the size of one batch). FailedPrecondition if `after` is
  // older than the compacted horizon or newer than the store: take a fresh List snapshot.
  virtual Result<ChangePage> ChangesSince(uint64_t after, uint32_t limit) = 0;
  // Drops change-log entries (incl. tombstones) older than the newest `keep_revisions`
  // revisions. Returns the new compacted horizon (ChangesSince(after) needs after >= it).
  virtual Result<uint64_t> CompactChanges(uint64_t keep_revisions) = 0;
  // Blocks until the revision exceeds `after` or `timeout` passes; returns the current
  // revision. Sees this handle's commits at once and other writers' within a poll interval
  // (SQLite) or via LISTEN/NOTIFY (PostgreSQL).
  virtual Result<uint64_t> WaitForChange(uint64_t after, std::chrono::milliseconds timeout) = 0;

  // --- Join tokens ---
  // AlreadyExists if the hash is already stored. `audit` is appended in the same transaction.
  virtual Result<void> CreateJoinToken(const JoinTokenRecord& token,
                                       std::span<const AuditEvent> audit) = 0;
  // Atomically single-use. `audit_on_consume` is appended in the same transaction only when
  // the outcome is kConsumed; the server appends refusal audits itself (AppendAudit).
  virtual Result<ConsumeResult> ConsumeJoinToken(const std::string& token_hash, TimePoint now,
                                                 std::span<const AuditEvent> audit_on_consume) = 0;
  virtual Result<std::vector<JoinTokenRecord>> ListJoinTokens() = 0;
  // Marks unused tokens with expires_at <= now as expired and returns exactly those, each
  // once over the store's lifetime. If `audit_for` is set, its event for each token is
  // appended in the same transaction, so every expiry is audited exactly once.
  virtual Result<std::vector<JoinTokenRecord>> ExpireJoinTokens(TimePoint now,
                                                                const ExpiryAuditFn& audit_for) = 0;

  // --- Nodes ---
  virtual Result<void> UpsertNode(const NodeRecord& node, std::span<const AuditEvent> audit) = 0;
  virtual Result<NodeRecord> GetNode(const std::string& name) = 0;
  // Moves last_seen forward to `seen` (never backwards) and touches nothing else, so it can
  // never undo a concurrent revocation or renewal. NotFound for an unknown node.
  virtual Result<void> TouchNode(const std::string& name, TimePoint seen) = 0;
  // Records a renewed node SVID (serial, expiry; last_seen = `now`) only while the node is
  // not revoked, with `audit` in the same transaction. NotFound for an unknown node;
  // PermissionDenied if it was revoked (also when the revocation raced this call).
  // A non-empty `expected_serial` also requires the node's current serial to be exactly that
  // (compare and swap: a rejoin consumes the expired SVID once); Aborted when it is not.
  virtual Result<void> RecordNodeSvid(const std::string& name, const std::string& serial,
                                      TimePoint expiry, TimePoint now,
                                      std::span<const AuditEvent> audit,
                                      const std::string& expected_serial = {}) = 0;
  virtual Result<std::vector<NodeRecord>> ListNodes() = 0;  // ordered by name

  // --- Encrypted blobs (CA keys, ...): the caller encrypts; bytes are opaque here ---
  virtual Result<void> PutBlob(const std::string& name, std::span<const uint8_t> bytes,
                               std::span<const AuditEvent> audit) = 0;
  virtual Result<std::vector<uint8_t>> GetBlob(const std::string& name) = 0;

  // --- Audit ---
  // Returns the seq of each appended record.
  virtual Result<std::vector<uint64_t>> AppendAudit(std::span<const AuditEvent> events) = 0;
  virtual Result<std::vector<AuditRecord>> QueryAudit(const AuditFilter& filter) = 0;
  // Walks the whole chain from seq 1. A broken chain is an OK Result with report.ok false;
  // an Error means the walk itself failed.
  virtual Result<AuditVerifyReport> VerifyAudit() = 0;
  virtual Result<AuditHead> GetAuditHead() = 0;

  // --- Maintenance ---
  // Physical consistency check of the database (PRAGMA integrity_check in SQLite).
  // FailedPrecondition carrying the first problems if the database is damaged.
  virtual Result<void> IntegrityCheck() = 0;

  // --- Restore (`sigil server restore`, docs/operations.md "Backup and restore") ---
  // For a store just restored from a backup, before any server uses it: moves the revision
  // forward by `by` (> 0) and marks everything up to the new revision compacted (the change
  // log is emptied), with `audit` in the same transaction. Revisions and resource versions the
  // old store handed out after the backup are thus never reused, and every Sync resume from
  // before the restore gets a fresh snapshot. Returns the new revision; InvalidArgument if it
  // would not fit in an int64.
  virtual Result<uint64_t> BumpRevision(uint64_t by, std::span<const AuditEvent> audit) = 0;
};

std::string_view WriteOpName(WriteOp op);             // "upsert" / "delete"
std::string_view ConsumeStatusName(ConsumeStatus s);  // "consumed" / "unknown" / ...

}  // namespace sigil::store
