// SqliteStore: the hash-chained audit log.
#include <string>
#include <vector>

#include "store/audit_chain.h"
#include "store/sqlite_store.h"
#include "store/sqlite_store_internal.h"

namespace sigil::store {

using internal::FromMicros;
using internal::ToMicros;

namespace {

constexpr std::string_view kAuditColumns =
    "SELECT seq, time_us, type, actor, node, identity, pid, exe, details, prev_hash, hash"
    " FROM audit";

AuditRecord ReadAudit(const internal::Statement& s) {
  return AuditRecord{.seq = static_cast<uint64_t>(s.Int(0)),
                     .event = AuditEvent{.time = FromMicros(s.Int(1)),
                                         .type = s.Text(2),
                                         .actor = s.Text(3),
                                         .node = s.Text(4),
                                         .identity = s.Text(5),
                                         .pid = s.OptInt(6),
                                         .exe = s.Text(7),
                                         .details_json = s.Text(8)},
                     .prev_hash = s.Text(9),
                     .hash = s.Text(10)};
}

}  // namespace

Result<std::vector<uint64_t>> SqliteStore::AppendAuditLocked(std::span<const AuditEvent> events) {
  std::vector<uint64_t> seqs;
  if (events.empty()) return seqs;
  // Runs inside the caller's BEGIN IMMEDIATE transaction: the head read below and the
  // inserts are atomic with respect to every other writer of the file, so concurrent
  // appenders extend one chain instead of forking it.
  uint64_t seq = 0;
  std::string prev_hash(kGenesisHash);
  {
    SIGIL_ASSIGN_OR_RETURN(auto head,
                           conn_->Prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"));
    SIGIL_ASSIGN_OR_RETURN(bool row, head.Step());
    if (row) {
      seq = static_cast<uint64_t>(head.Int(0));
      prev_hash = head.Text(1);
    }
  }
  for (const AuditEvent& raw : events) {
    SIGIL_ASSIGN_OR_RETURN(AuditEvent e, internal::NormalizeAuditEvent(raw, *options_.clock));
    ++seq;
    std::string hash = AuditRecordHash(seq, e, prev_hash);
    SIGIL_ASSIGN_OR_RETURN(
        auto ins,
        conn_->Prepare(
            "INSERT INTO audit (seq, time_us, type, actor, node, identity, pid, exe, details,"
            " prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"));
    ins.Bind(1, static_cast<int64_t>(seq)).Bind(2, ToMicros(e.time)).Bind(3, e.type);
    ins.Bind(4, e.actor).Bind(5, e.node).Bind(6, e.identity).BindOpt(7, e.pid).Bind(8, e.exe);
    ins.Bind(9, e.details_json).Bind(10, prev_hash).Bind(11, hash);
    SIGIL_TRY(ins.Run());
    seqs.push_back(seq);
    prev_hash = std::move(hash);
  }
  return seqs;
}

Result<std::vector<uint64_t>> SqliteStore::AppendAudit(std::span<const AuditEvent> events) {
  std::lock_guard lock(mu_);
  return InWriteTxn([&] { return AppendAuditLocked(events); });
}

Result<std::vector<AuditRecord>> SqliteStore::QueryAudit(const AuditFilter& filter) {
  // The WHERE clause is assembled from constant fragments only, so each combination of
  // filters gets its own cached statement that can use the matching index; every value is
  // a bound parameter.
  std::string sql(kAuditColumns);
  sql += " WHERE seq > ?1";
  if (filter.since) sql += " AND time_us >= ?2";
  if (filter.until) sql += " AND time_us < ?3";
  if (filter.identity) sql += " AND identity = ?4";
  if (filter.node) sql += " AND node = ?5";
  if (filter.pid) sql += " AND pid = ?6";
  if (filter.type) sql += " AND type = ?7";
  if (filter.binding) sql += " AND instr(details, ?9) > 0";  // then MatchesAuditBinding
  if (filter.serial) sql += " AND instr(details, ?10) > 0";  // then MatchesAuditMember
  sql += filter.newest_first ? " ORDER BY seq DESC LIMIT ?8" : " ORDER BY seq ASC LIMIT ?8";

  const uint32_t limit = std::min(std::max(filter.limit, 1U), kMaxAuditQueryLimit);
  std::lock_guard lock(mu_);
  SIGIL_ASSIGN_OR_RETURN(auto stmt, conn_->Prepare(sql));
  stmt.Bind(1, static_cast<int64_t>(filter.newest_first ? 0 : filter.after_seq));
  // Unused parameter numbers below ?8 may be bound freely; absent filters bind NULL.
  stmt.BindOpt(2, filter.since ? std::optional<int64_t>(ToMicros(*filter.since)) : std::nullopt);
  stmt.BindOpt(3, filter.until ? std::optional<int64_t>(ToMicros(*filter.until)) : std::nullopt);
  stmt.BindOpt(4, filter.identity).BindOpt(5, filter.node).BindOpt(6, filter.pid);
  stmt.BindOpt(7, filter.type);
  stmt.Bind(8, int64_t{limit});
  // ?9 and ?10 exist only with their filters.
  if (filter.binding) stmt.Bind(9, internal::AuditBindingNeedle(*filter.binding));
  if (filter.serial) stmt.Bind(10, internal::AuditMemberNeedle("serial", *filter.serial));
  std::vector<AuditRecord> out;
  while (true) {
    SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    out.push_back(ReadAudit(stmt));
  }
  if (filter.binding) {
    std::erase_if(out, [&](const AuditRecord& r) {
      return !internal::MatchesAuditBinding(r.event.details_json, *filter.binding);
    });
  }
  if (filter.serial) {
    std::erase_if(out, [&](const AuditRecord& r) {
      return !internal::MatchesAuditMember(r.event.details_json, "serial", *filter.serial);
    });
  }
  return out;
}

Result<AuditVerifyReport> SqliteStore::VerifyAudit() {
  static const std::string kSql = std::string(kAuditColumns) + " ORDER BY seq";
  std::lock_guard lock(mu_);
  // One read transaction: a consistent snapshot even while other handles append.
  SIGIL_ASSIGN_OR_RETURN(auto tx,
                         internal::Transaction::Begin(*conn_, internal::Transaction::Mode::kRead));
  AuditChainVerifier verifier;
  {
    SIGIL_ASSIGN_OR_RETURN(auto stmt, conn_->Prepare(kSql));
    while (true) {
      SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row || !verifier.Add(ReadAudit(stmt))) break;
    }
  }
  SIGIL_TRY(tx.Commit());
  return verifier.Report();
}

Result<AuditHead> SqliteStore::GetAuditHead() {
  std::lock_guard lock(mu_);
  SIGIL_ASSIGN_OR_RETURN(auto stmt,
                         conn_->Prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"));
  SIGIL_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return AuditHead{0, std::string(kGenesisHash)};
  return AuditHead{static_cast<uint64_t>(stmt.Int(0)), stmt.Text(1)};
}

}  // namespace sigil::store
