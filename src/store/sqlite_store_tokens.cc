// SqliteStore: join tokens, nodes and encrypted blobs.
#include <vector>

#include "store/sqlite_store.h"
#include "store/sqlite_store_internal.h"

namespace sigil::store {

using internal::FromMicros;
using internal::ToMicros;
using internal::TruncateToMicros;

namespace {

constexpr std::string_view kSelectToken =
    "SELECT token_hash, node_name, created_by, created_us, expires_us, used_us, expired_us"
    " FROM join_tokens";

JoinTokenRecord ReadToken(const internal::Statement& s) {
  JoinTokenRecord t{.token_hash = s.Text(0),
                    .node_name = s.Text(1),
                    .created_by = s.Text(2),
                    .created_at = FromMicros(s.Int(3)),
                    .expires_at = FromMicros(s.Int(4)),
                    .used_at = {},
                    .expired_at = {}};
  if (auto used = s.OptInt(5)) t.used_at = FromMicros(*used);
  if (auto expired = s.OptInt(6)) t.expired_at = FromMicros(*expired);
  return t;
}

std::string Concat(std::string_view a, std::string_view b) {
  std::string s(a);
  s += b;
  return s;
}

}  // namespace

Result<std::optional<JoinTokenRecord>> SqliteStore::ReadJoinToken(const std::string& token_hash) {
  static const std::string kSql = Concat(kSelectToken, " WHERE token_hash = ?1");
  SIGIL_ASSIGN_OR_RETURN(auto stmt, conn_->Prepare(kSql));
  stmt.Bind(1, token_hash);
  SIGIL_ASSIGN_OR_RETURN(bool found, stmt.Step());
  if (!found) return std::optional<JoinTokenRecord>();
  return std::optional<JoinTokenRecord>(ReadToken(stmt));
}

Result<void> SqliteStore::CreateJoinToken(const JoinTokenRecord& token,
                                          std::span<const AuditEvent> audit) {
  SIGIL_TRY(internal::ValidateJoinToken(token));
  std::lock_guard lock(mu_);
  return InWriteTxn([&]() -> Result<void> {
    SIGIL_ASSIGN_OR_RETURN(auto existing, ReadJoinToken(token.token_hash));
    if (existing) {
      // Never echo the hash: name the node only.
      return AlreadyExists("store: a join token with this hash already exists (node " +
                           existing->node_name + ")");
    }
    SIGIL_ASSIGN_OR_RETURN(
        auto ins,
        conn_->Prepare(
            "INSERT INTO join_tokens (token_hash, node_name, created_by, created_us, expires_us)"
            " VALUES (?1, ?2, ?3, ?4, ?5)"));
    ins.Bind(1, token.token_hash).Bind(2, token.node_name).Bind(3, token.created_by);
    SIGIL_TRY(ins.Bind(4, ToMicros(token.created_at)).Bind(5, ToMicros(token.expires_at)).Run());
    SIGIL_TRY(AppendAuditLocked(audit));
    return Ok();
  });
}

Result<ConsumeResult> SqliteStore::ConsumeJoinToken(const std::string& token_hash, TimePoint now,
                                                    std::span<const AuditEvent> audit_on_consume) {
  SIGIL_TRY(internal::ValidateTokenHash(token_hash));
  now = TruncateToMicros(now);
  std::lock_guard lock(mu_);
  // The check and the mark-used run in one write transaction, so two concurrent consumers
  // (threads, handles or processes) cannot both see the token unused.
  return InWriteTxn([&]() -> Result<ConsumeResult> {
    SIGIL_ASSIGN_OR_RETURN(auto token, ReadJoinToken(token_hash));
    if (!token) return ConsumeResult{ConsumeStatus::kUnknown, std::nullopt};
    if (token->used_at) return ConsumeResult{ConsumeStatus::kAlreadyUsed, std::move(token)};
    if (token->expired_at || token->expires_at <= now) {
      return ConsumeResult{ConsumeStatus::kExpired, std::move(token)};
    }
    SIGIL_ASSIGN_OR_RETURN(
        auto upd,
        conn_->Prepare(
            "UPDATE join_tokens SET used_us = ?2 WHERE token_hash = ?1 AND used_us IS NULL"));
    SIGIL_TRY(upd.Bind(1, token_hash).Bind(2, ToMicros(now)).Run());
    if (sqlite3_changes(conn_->raw()) != 1) {
      return Internal("store: join token for node " + token->node_name + " changed underfoot");
    }
    token->used_at = now;
    SIGIL_TRY(AppendAuditLocked(audit_on_consume));
    return ConsumeResult{ConsumeStatus::kConsumed, std::move(token)};
  });
}

Result<std::vector<JoinTokenRecord>> SqliteStore::ListJoinTokens() {
  static const std::string kSql = Concat(kSelectToken, " ORDER BY created_us, node_name");
  std::lock_guard lock(mu_);
  SIGIL_ASSIGN_OR_RETURN(auto stmt, conn_->Prepare(kSql));
  std::vector<JoinTokenRecord> out;
  while (true) {
    SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    out.push_back(ReadToken(stmt));
  }
  return out;
}

Result<std::vector<JoinTokenRecord>> SqliteStore::ExpireJoinTokens(TimePoint now,
                                                                   const ExpiryAuditFn& audit_for) {
  static const std::string kSql =
      Concat(kSelectToken,
             " WHERE used_us IS NULL AND expired_us IS NULL AND expires_us <= ?1"
             " ORDER BY expires_us, node_name");
  now = TruncateToMicros(now);
  std::lock_guard lock(mu_);
  return InWriteTxn([&]() -> Result<std::vector<JoinTokenRecord>> {
    std::vector<JoinTokenRecord> expired;
    {
      SIGIL_ASSIGN_OR_RETURN(auto sel, conn_->Prepare(kSql));
      sel.Bind(1, ToMicros(now));
      while (true) {
        SIGIL_ASSIGN_OR_RETURN(bool row, sel.Step());
        if (!row) break;
        expired.push_back(ReadToken(sel));
      }
    }
    std::vector<AuditEvent> events;
    for (JoinTokenRecord& t : expired) {
      SIGIL_ASSIGN_OR_RETURN(
          auto upd, conn_->Prepare("UPDATE join_tokens SET expired_us = ?2 WHERE token_hash = ?1"));
      SIGIL_TRY(upd.Bind(1, t.token_hash).Bind(2, ToMicros(now)).Run());
      t.expired_at = now;
      if (audit_for) events.push_back(audit_for(t));
    }
    SIGIL_TRY(AppendAuditLocked(events));
    return expired;
  });
}

// --- Nodes ---

namespace {

NodeRecord ReadNode(const internal::Statement& s) {
  return NodeRecord{.name = s.Text(0),
                    .spiffe_id = s.Text(1),
                    .svid_serial = s.Text(2),
                    .svid_expiry = FromMicros(s.Int(3)),
                    .joined_at = FromMicros(s.Int(4)),
                    .last_seen = FromMicros(s.Int(5)),
                    .revoked = s.Int(6) != 0,
                    .revocation_reason = s.Text(7)};
}

constexpr std::string_view kSelectNode =
    "SELECT name, spiffe_id, svid_serial, svid_expiry_us, joined_us, last_seen_us, revoked,"
    " revocation_reason FROM nodes";

}  // namespace

Result<void> SqliteStore::UpsertNode(const NodeRecord& node, std::span<const AuditEvent> audit) {
  SIGIL_TRY(internal::ValidateNode(node));
  std::lock_guard lock(mu_);
  return InWriteTxn([&]() -> Result<void> {
    SIGIL_ASSIGN_OR_RETURN(
        auto up,
        conn_->Prepare(
            "INSERT INTO nodes (name, spiffe_id, svid_serial, svid_expiry_us, joined_us,"
            " last_seen_us, revoked, revocation_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            " ON CONFLICT (name) DO UPDATE SET spiffe_id = excluded.spiffe_id,"
            " svid_serial = excluded.svid_serial, svid_expiry_us = excluded.svid_expiry_us,"
            " joined_us = excluded.joined_us, last_seen_us = excluded.last_seen_us,"
            " revoked = excluded.revoked, revocation_reason = excluded.revocation_reason"));
    up.Bind(1, node.name).Bind(2, node.spiffe_id).Bind(3, node.svid_serial);
    up.Bind(4, ToMicros(node.svid_expiry)).Bind(5, ToMicros(node.joined_at));
    up.Bind(6, ToMicros(node.last_seen)).Bind(7, int64_t{node.revoked ? 1 : 0});
    SIGIL_TRY(up.Bind(8, node.revocation_reason).Run());
    SIGIL_TRY(AppendAuditLocked(audit));
    return Ok();
  });
}

Result<NodeRecord> SqliteStore::GetNode(const std::string& name) {
  static const std::string kSql = Concat(kSelectNode, " WHERE name = ?1");
  auto [lock, conn] = Reader();
  SIGIL_ASSIGN_OR_RETURN(auto stmt, conn->Prepare(kSql));
  stmt.Bind(1, name);
  SIGIL_ASSIGN_OR_RETURN(bool found, stmt.Step());
  if (!found) return NotFound("store: node " + name + " not found");
  return ReadNode(stmt);
}

Result<std::vector<NodeRecord>> SqliteStore::ListNodes() {
  static const std::string kSql = Concat(kSelectNode, " ORDER BY name");
  std::lock_guard lock(mu_);
  SIGIL_ASSIGN_OR_RETURN(auto stmt, conn_->Prepare(kSql));
  std::vector<NodeRecord> out;
  while (true) {
    SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    out.push_back(ReadNode(stmt));
  }
  return out;
}

// --- Blobs ---

Result<void> SqliteStore::PutBlob(const std::string& name, std::span<const uint8_t> bytes,
                                  std::span<const AuditEvent> audit) {
  SIGIL_TRY(internal::ValidateBlob(name, bytes.size()));
  std::lock_guard lock(mu_);
  return InWriteTxn([&]() -> Result<void> {
    SIGIL_TRY(PutBlobLocked(BlobWrite{name, {bytes.begin(), bytes.end()}, false}));
    SIGIL_TRY(AppendAuditLocked(audit));
    return Ok();
  });
}

Result<void> SqliteStore::PutBlobLocked(const BlobWrite& blob) {
  if (blob.erase) {
    SIGIL_ASSIGN_OR_RETURN(auto del, conn_->Prepare("DELETE FROM blobs WHERE name = ?1"));
    return del.Bind(1, blob.name).Run();
  }
  SIGIL_ASSIGN_OR_RETURN(
      auto up, conn_->Prepare("INSERT INTO blobs (name, data, updated_us) VALUES (?1, ?2, ?3)"
                              " ON CONFLICT (name) DO UPDATE SET data = excluded.data, "
                              "updated_us = excluded.updated_us"));
  up.Bind(1, blob.name).BindBlob(2, blob.bytes);
  return up.Bind(3, ToMicros(options_.clock->Now())).Run();
}

Result<void> SqliteStore::TouchNode(const std::string& name, TimePoint seen) {
  std::lock_guard lock(mu_);
  return InWriteTxn([&]() -> Result<void> {
    SIGIL_ASSIGN_OR_RETURN(auto up,
                           conn_->Prepare("UPDATE nodes SET last_seen_us = max(last_seen_us, ?2)"
                                          " WHERE name = ?1"));
    SIGIL_TRY(up.Bind(1, name).Bind(2, ToMicros(seen)).Run());
    if (conn_->Changes() == 0) return NotFound("store: node " + name + " not found");
    return Ok();
  });
}

Result<void> SqliteStore::RecordNodeSvid(const std::string& name, const std::string& serial,
                                         TimePoint expiry, TimePoint now,
                                         std::span<const AuditEvent> audit,
                                         const std::string& expected_serial) {
  std::lock_guard lock(mu_);
  return InWriteTxn([&]() -> Result<void> {
    SIGIL_ASSIGN_OR_RETURN(auto up,
                           conn_->Prepare("UPDATE nodes SET svid_serial = ?2, svid_expiry_us = ?3,"
                                          " last_seen_us = max(last_seen_us, ?4)"
                                          " WHERE name = ?1 AND revoked = 0"
                                          " AND (?5 = '' OR svid_serial = ?5)"));
    up.Bind(1, name).Bind(2, serial).Bind(3, ToMicros(expiry));
    SIGIL_TRY(up.Bind(4, ToMicros(now)).Bind(5, expected_serial).Run());
    if (conn_->Changes() == 0) {
      SIGIL_ASSIGN_OR_RETURN(auto probe,
                             conn_->Prepare("SELECT revoked FROM nodes WHERE name = ?1"));
      probe.Bind(1, name);
      SIGIL_ASSIGN_OR_RETURN(bool found, probe.Step());
      if (!found) return NotFound("store: node " + name + " not found");
      if (probe.Int(0) == 0) {
        return Error(ErrorCode::kAborted,
                     "store: node " + name + " no longer has SVID " + expected_serial);
      }
      return PermissionDenied("store: node " + name + " is revoked");
    }
    SIGIL_TRY(AppendAuditLocked(audit));
    return Ok();
  });
}

Result<std::vector<uint8_t>> SqliteStore::GetBlob(const std::string& name) {
  auto [lock, conn] = Reader();
  SIGIL_ASSIGN_OR_RETURN(auto stmt, conn->Prepare("SELECT data FROM blobs WHERE name = ?1"));
  stmt.Bind(1, name);
  SIGIL_ASSIGN_OR_RETURN(bool found, stmt.Step());
  if (!found) return NotFound("store: blob " + name + " not found");
  return stmt.Blob(0);
}

}  // namespace sigil::store
