// PostgresStore: join tokens, nodes and encrypted blobs.
#include <string>
#include <vector>

#include "store/pg_store_internal.h"

namespace sigil::store {

using internal::PgConnection;
using internal::PgParams;
using internal::PgResult;

namespace {

constexpr std::string_view kSelectToken =
    "SELECT token_hash, node_name, created_by, created_at, expires_at, used_at, expired_at"
    " FROM join_tokens";

JoinTokenRecord ReadToken(const PgResult& r, int row) {
  return JoinTokenRecord{.token_hash = r.Text(row, 0),
                         .node_name = r.Text(row, 1),
                         .created_by = r.Text(row, 2),
                         .created_at = r.Time(row, 3),
                         .expires_at = r.Time(row, 4),
                         .used_at = r.OptTime(row, 5),
                         .expired_at = r.OptTime(row, 6)};
}

constexpr std::string_view kSelectNode =
    "SELECT name, spiffe_id, svid_serial, svid_expiry, joined_at, last_seen, revoked,"
    " revocation_reason FROM nodes";

NodeRecord ReadNode(const PgResult& r, int row) {
  return NodeRecord{.name = r.Text(row, 0),
                    .spiffe_id = r.Text(row, 1),
                    .svid_serial = r.Text(row, 2),
                    .svid_expiry = r.Time(row, 3),
                    .joined_at = r.Time(row, 4),
                    .last_seen = r.Time(row, 5),
                    .revoked = r.Bool(row, 6),
                    .revocation_reason = r.Text(row, 7)};
}

std::string Concat(std::string_view a, std::string_view b) {
  std::string s(a);
  s += b;
  return s;
}

}  // namespace

// --- Join tokens ---

Result<void> PostgresStore::CreateJoinToken(const JoinTokenRecord& token,
                                            std::span<const AuditEvent> audit) {
  SIGIL_TRY(internal::ValidateJoinToken(token));
  return Run<void>("create join token", TxnMode::kWrite, [&](PgConnection& c) -> Result<void> {
    // ON CONFLICT DO NOTHING waits for a concurrent insert of the same hash to commit, then
    // reports no row: exactly one creator wins.
    SIGIL_ASSIGN_OR_RETURN(
        auto ins,
        c.Query("create join token",
                "INSERT INTO join_tokens (token_hash, node_name, created_by, created_at,"
                " expires_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING",
                PgParams()
                    .Text(token.token_hash)
                    .Text(token.node_name)
                    .Text(token.created_by)
                    .Time(token.created_at)
                    .Time(token.expires_at)));
    if (ins.Affected() != 1) {
      SIGIL_ASSIGN_OR_RETURN(
          auto existing,
          c.Query("create join token", "SELECT node_name FROM join_tokens WHERE token_hash = $1",
                  PgParams().Text(token.token_hash)));
      // Never echo the hash: name the node only.
      return AlreadyExists("store: a join token with this hash already exists (node " +
                           (existing.rows() > 0 ? existing.Text(0, 0) : std::string("?")) + ")");
    }
    SIGIL_TRY(AppendAuditTx(c, audit));
    return Ok();
  });
}

Result<ConsumeResult> PostgresStore::ConsumeJoinToken(
    const std::string& token_hash, TimePoint now, std::span<const AuditEvent> audit_on_consume) {
  static const std::string kSql = Concat(kSelectToken, " WHERE token_hash = $1 FOR UPDATE");
  SIGIL_TRY(internal::ValidateTokenHash(token_hash));
  now = internal::TruncateToMicros(now);
  // The row lock makes check-then-mark atomic across every connection of every replica: a
  // second consumer waits here and then sees the token used.
  return Run<ConsumeResult>(
      "consume join token", TxnMode::kWrite, [&](PgConnection& c) -> Result<ConsumeResult> {
        SIGIL_ASSIGN_OR_RETURN(auto r,
                               c.Query("consume join token", kSql, PgParams().Text(token_hash)));
        if (r.rows() == 0) return ConsumeResult{ConsumeStatus::kUnknown, std::nullopt};
        JoinTokenRecord token = ReadToken(r, 0);
        if (token.used_at) return ConsumeResult{ConsumeStatus::kAlreadyUsed, std::move(token)};
        if (token.expired_at || token.expires_at <= now) {
          return ConsumeResult{ConsumeStatus::kExpired, std::move(token)};
        }
        SIGIL_ASSIGN_OR_RETURN(auto upd,
                               c.Query("consume join token",
                                       "UPDATE join_tokens SET used_at = $2 WHERE token_hash = $1"
                                       " AND used_at IS NULL",
                                       PgParams().Text(token_hash).Time(now)));
        if (upd.Affected() != 1) {
          return Internal("store: join token for node " + token.node_name + " changed underfoot");
        }
        token.used_at = now;
        SIGIL_TRY(AppendAuditTx(c, audit_on_consume));
        return ConsumeResult{ConsumeStatus::kConsumed, std::move(token)};
      });
}

Result<std::vector<JoinTokenRecord>> PostgresStore::ListJoinTokens() {
  static const std::string kSql = Concat(kSelectToken, " ORDER BY created_at, node_name");
  return Run<std::vector<JoinTokenRecord>>(
      "list join tokens", TxnMode::kAutocommit,
      [&](PgConnection& c) -> Result<std::vector<JoinTokenRecord>> {
        SIGIL_ASSIGN_OR_RETURN(auto r, c.Query("list join tokens", kSql));
        std::vector<JoinTokenRecord> out;
        for (int i = 0; i < r.rows(); ++i) out.push_back(ReadToken(r, i));
        return out;
      });
}

Result<std::vector<JoinTokenRecord>> PostgresStore::ExpireJoinTokens(
    TimePoint now, const ExpiryAuditFn& audit_for) {
  // FOR UPDATE: a replica sweeping at the same time waits for these rows, then re-checks
  // them against the committed expired_at and skips them, so each expiry happens once.
  static const std::string kSql =
      Concat(kSelectToken,
             " WHERE used_at IS NULL AND expired_at IS NULL AND expires_at <= $1"
             " ORDER BY expires_at, node_name FOR UPDATE");
  now = internal::TruncateToMicros(now);
  return Run<std::vector<JoinTokenRecord>>(
      "expire join tokens", TxnMode::kWrite,
      [&](PgConnection& c) -> Result<std::vector<JoinTokenRecord>> {
        SIGIL_ASSIGN_OR_RETURN(auto r, c.Query("expire join tokens", kSql, PgParams().Time(now)));
        std::vector<JoinTokenRecord> expired;
        for (int i = 0; i < r.rows(); ++i) expired.push_back(ReadToken(r, i));
        std::vector<AuditEvent> events;
        for (JoinTokenRecord& t : expired) {
          SIGIL_TRY(c.Query("expire join tokens",
                            "UPDATE join_tokens SET expired_at = $2 WHERE token_hash = $1",
                            PgParams().Text(t.token_hash).Time(now)));
          t.expired_at = now;
          if (audit_for) events.push_back(audit_for(t));
        }
        SIGIL_TRY(AppendAuditTx(c, events));
        return expired;
      });
}

// --- Nodes ---

Result<void> PostgresStore::UpsertNode(const NodeRecord& node, std::span<const AuditEvent> audit) {
  SIGIL_TRY(internal::ValidateNode(node));
  return Run<void>("upsert node", TxnMode::kWrite, [&](PgConnection& c) -> Result<void> {
    SIGIL_TRY(c.Query(
        "upsert node",
        "INSERT INTO nodes (name, spiffe_id, svid_serial, svid_expiry, joined_at, last_seen,"
        " revoked, revocation_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (name) DO UPDATE SET spiffe_id = excluded.spiffe_id,"
        " svid_serial = excluded.svid_serial, svid_expiry = excluded.svid_expiry,"
        " joined_at = excluded.joined_at, last_seen = excluded.last_seen,"
        " revoked = excluded.revoked, revocation_reason = excluded.revocation_reason",
        PgParams()
            .Text(node.name)
            .Text(node.spiffe_id)
            .Text(node.svid_serial)
            .Time(node.svid_expiry)
            .Time(node.joined_at)
            .Time(node.last_seen)
            .Bool(node.revoked)
            .Text(node.revocation_reason)));
    SIGIL_TRY(AppendAuditTx(c, audit));
    return Ok();
  });
}

Result<NodeRecord> PostgresStore::GetNode(const std::string& name) {
  static const std::string kSql = Concat(kSelectNode, " WHERE name = $1");
  return Run<NodeRecord>(
      "get node", TxnMode::kAutocommit, [&](PgConnection& c) -> Result<NodeRecord> {
        SIGIL_ASSIGN_OR_RETURN(auto r, c.Query("get node", kSql, PgParams().Text(name)));
        if (r.rows() == 0) return NotFound("store: node " + name + " not found");
        return ReadNode(r, 0);
      });
}

Result<std::vector<NodeRecord>> PostgresStore::ListNodes() {
  static const std::string kSql = Concat(kSelectNode, " ORDER BY name");
  return Run<std::vector<NodeRecord>>("list nodes", TxnMode::kAutocommit,
                                      [&](PgConnection& c) -> Result<std::vector<NodeRecord>> {
                                        SIGIL_ASSIGN_OR_RETURN(auto r, c.Query("list nodes", kSql));
                                        std::vector<NodeRecord> out;
                                        for (int i = 0; i < r.rows(); ++i)
                                          out.push_back(ReadNode(r, i));
                                        return out;
                                      });
}

Result<void> PostgresStore::TouchNode(const std::string& name, TimePoint seen) {
  // One conditional statement: it cannot undo a concurrent revocation or renewal.
  return Run<void>("touch node", TxnMode::kAutocommit, [&](PgConnection& c) -> Result<void> {
    SIGIL_ASSIGN_OR_RETURN(
        auto r, c.Query("touch node",
                        "UPDATE nodes SET last_seen = greatest(last_seen, $2) WHERE name = $1",
                        PgParams().Text(name).Time(seen)));
    if (r.Affected() == 0) return NotFound("store: node " + name + " not found");
    return Ok();
  });
}

Result<void> PostgresStore::RecordNodeSvid(const std::string& name, const std::string& serial,
                                           TimePoint expiry, TimePoint now,
                                           std::span<const AuditEvent> audit,
                                           const std::string& expected_serial) {
  return Run<void>("record node svid", TxnMode::kWrite, [&](PgConnection& c) -> Result<void> {
    // A concurrent revocation (or rejoin) holds the row lock; PostgreSQL re-checks the WHERE
    // clause against the committed row after waiting, so a revoked node is never renewed and
    // an expected serial is consumed once.
    SIGIL_ASSIGN_OR_RETURN(
        auto up,
        c.Query("record node svid",
                "UPDATE nodes SET svid_serial = $2, svid_expiry = $3,"
                " last_seen = greatest(last_seen, $4) WHERE name = $1 AND NOT revoked"
                " AND ($5 = '' OR svid_serial = $5)",
                PgParams().Text(name).Text(serial).Time(expiry).Time(now).Text(expected_serial)));
    if (up.Affected() == 0) {
      SIGIL_ASSIGN_OR_RETURN(
          auto probe, c.Query("record node svid", "SELECT revoked FROM nodes WHERE name = $1",
                              PgParams().Text(name)));
      if (probe.rows() == 0) return NotFound("store: node " + name + " not found");
      if (!probe.Bool(0, 0)) {
        return Error(ErrorCode::kAborted,
                     "store: node " + name + " no longer has SVID " + expected_serial);
      }
      return PermissionDenied("store: node " + name + " is revoked");
    }
    SIGIL_TRY(AppendAuditTx(c, audit));
    return Ok();
  });
}

// --- Blobs ---

Result<void> PostgresStore::PutBlobTx(PgConnection& c, const BlobWrite& blob) {
  if (blob.erase) {
    SIGIL_TRY(
        c.Query("erase blob", "DELETE FROM blobs WHERE name = $1", PgParams().Text(blob.name)));
    return Ok();
  }
  SIGIL_TRY(c.Query("write blob",
                    "INSERT INTO blobs (name, data, updated_at) VALUES ($1, $2, $3)"
                    " ON CONFLICT (name) DO UPDATE SET data = excluded.data,"
                    " updated_at = excluded.updated_at",
                    PgParams().Text(blob.name).Bytes(blob.bytes).Time(options_.clock->Now())));
  return Ok();
}

Result<void> PostgresStore::PutBlob(const std::string& name, std::span<const uint8_t> bytes,
                                    std::span<const AuditEvent> audit) {
  SIGIL_TRY(internal::ValidateBlob(name, bytes.size()));
  const BlobWrite blob{name, {bytes.begin(), bytes.end()}, false};
  return Run<void>("put blob", TxnMode::kWrite, [&](PgConnection& c) -> Result<void> {
    SIGIL_TRY(PutBlobTx(c, blob));
    SIGIL_TRY(AppendAuditTx(c, audit));
    return Ok();
  });
}

Result<std::vector<uint8_t>> PostgresStore::GetBlob(const std::string& name) {
  return Run<std::vector<uint8_t>>(
      "get blob", TxnMode::kAutocommit, [&](PgConnection& c) -> Result<std::vector<uint8_t>> {
        SIGIL_ASSIGN_OR_RETURN(auto r, c.Query("get blob", "SELECT data FROM blobs WHERE name = $1",
                                               PgParams().Text(name)));
        if (r.rows() == 0) return NotFound("store: blob " + name + " not found");
        return r.Bytes(0, 0);
      });
}

}  // namespace sigil::store
