// PostgresStore: the hash-chained audit log.
#include <optional>
#include <string>
#include <vector>

#include "store/audit_chain.h"
#include "store/pg_store_internal.h"

namespace sigil::store {

using internal::PgConnection;
using internal::PgParams;
using internal::PgResult;

namespace {

constexpr std::string_view kAuditColumns =
    "SELECT seq, event_time, type, actor, node, identity, pid, exe, details, prev_hash, hash"
    " FROM audit";

AuditRecord ReadAudit(const PgResult& r, int row) {
  return AuditRecord{.seq = static_cast<uint64_t>(r.Int(row, 0)),
                     .event = AuditEvent{.time = r.Time(row, 1),
                                         .type = r.Text(row, 2),
                                         .actor = r.Text(row, 3),
                                         .node = r.Text(row, 4),
                                         .identity = r.Text(row, 5),
                                         .pid = r.OptInt(row, 6),
                                         .exe = r.Text(row, 7),
                                         .details_json = r.Text(row, 8)},
                     .prev_hash = r.Text(row, 9),
                     .hash = r.Text(row, 10)};
}

constexpr int64_t kVerifyPage = 1000;

}  // namespace

Result<std::vector<uint64_t>> PostgresStore::AppendAuditTx(PgConnection& c,
                                                           std::span<const AuditEvent> events) {
  std::vector<uint64_t> seqs;
  if (events.empty()) return seqs;
  std::vector<AuditEvent> normalized;
  normalized.reserve(events.size());
  for (const AuditEvent& raw : events) {
    SIGIL_ASSIGN_OR_RETURN(AuditEvent e, internal::NormalizeAuditEvent(raw, *options_.clock));
    normalized.push_back(std::move(e));
  }
  // Reserving the seqs takes audit_seq's row lock until commit: appenders on every replica
  // queue here, and each reads the chain head only once the previous appender committed.
  const auto n = static_cast<int64_t>(normalized.size());
  SIGIL_ASSIGN_OR_RETURN(
      auto reserved,
      c.Query("reserve audit seqs",
              "UPDATE meta SET value = value + $1 WHERE key = 'audit_seq' RETURNING value",
              PgParams().Int(n)));
  if (reserved.rows() != 1) return Internal("store: meta key audit_seq is missing");
  auto seq = static_cast<uint64_t>(reserved.Int(0, 0) - n);
  std::string prev_hash(kGenesisHash);
  if (seq > 0) {
    SIGIL_ASSIGN_OR_RETURN(auto head,
                           c.Query("read audit head", "SELECT hash FROM audit WHERE seq = $1",
                                   PgParams().Int(static_cast<int64_t>(seq))));
    if (head.rows() != 1) {
      return Internal("store: audit record " + std::to_string(seq) +
                      " (the chain head) is missing");
    }
    prev_hash = head.Text(0, 0);
  }
  for (const AuditEvent& e : normalized) {
    ++seq;
    std::string hash = AuditRecordHash(seq, e, prev_hash);
    SIGIL_TRY(c.Query("append audit",
                      "INSERT INTO audit (seq, event_time, type, actor, node, identity, pid, exe,"
                      " details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                      " $11)",
                      PgParams()
                          .Int(static_cast<int64_t>(seq))
                          .Time(e.time)
                          .Text(e.type)
                          .Text(e.actor)
                          .Text(e.node)
                          .Text(e.identity)
                          .OptInt(e.pid)
                          .Text(e.exe)
                          .Text(e.details_json)
                          .Text(prev_hash)
                          .Text(hash)));
    seqs.push_back(seq);
    prev_hash = std::move(hash);
  }
  return seqs;
}

Result<std::vector<uint64_t>> PostgresStore::AppendAudit(std::span<const AuditEvent> events) {
  return Run<std::vector<uint64_t>>("append audit", TxnMode::kWrite,
                                    [&](PgConnection& c) { return AppendAuditTx(c, events); });
}

Result<std::vector<AuditRecord>> PostgresStore::QueryAudit(const AuditFilter& filter) {
  // Assembled from constant fragments only, so each combination of filters is its own
  // prepared statement that can use the matching index; every value is a parameter. All
  // ten parameters are always sent (with their types), used or not.
  std::string sql(kAuditColumns);
  sql += " WHERE seq > $1";
  if (filter.since) sql += " AND event_time >= $2";
  if (filter.until) sql += " AND event_time < $3";
  if (filter.identity) sql += " AND identity = $4";
  if (filter.node) sql += " AND node = $5";
  if (filter.pid) sql += " AND pid = $6";
  if (filter.type) sql += " AND type = $7";
  if (filter.binding) sql += " AND strpos(details, $9) > 0";  // then MatchesAuditBinding
  if (filter.serial) sql += " AND strpos(details, $10) > 0";  // then MatchesAuditMember
  sql += filter.newest_first ? " ORDER BY seq DESC LIMIT $8" : " ORDER BY seq ASC LIMIT $8";
  const uint32_t limit = std::min(std::max(filter.limit, 1U), kMaxAuditQueryLimit);
  PgParams params;
  params.Int(static_cast<int64_t>(filter.newest_first ? 0 : filter.after_seq))
      .OptTime(filter.since)
      .OptTime(filter.until)
      .OptText(filter.identity)
      .OptText(filter.node)
      .OptInt(filter.pid)
      .OptText(filter.type)
      .Int(int64_t{limit})
      .OptText(filter.binding ? std::optional(internal::AuditBindingNeedle(*filter.binding))
                              : std::nullopt)
      .OptText(filter.serial ? std::optional(internal::AuditMemberNeedle("serial", *filter.serial))
                             : std::nullopt);
  SIGIL_ASSIGN_OR_RETURN(auto out, Run<std::vector<AuditRecord>>(
                                       "query audit", TxnMode::kAutocommit,
                                       [&](PgConnection& c) -> Result<std::vector<AuditRecord>> {
                                         SIGIL_ASSIGN_OR_RETURN(
                                             auto r, c.Query("query audit", sql, params));
                                         std::vector<AuditRecord> out;
                                         out.reserve(static_cast<size_t>(r.rows()));
                                         for (int i = 0; i < r.rows(); ++i)
                                           out.push_back(ReadAudit(r, i));
                                         return out;
                                       }));
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

Result<AuditVerifyReport> PostgresStore::VerifyAudit() {
  static const std::string kSql =
      std::string(kAuditColumns) + " WHERE seq > $1 ORDER BY seq LIMIT $2";
  // One snapshot for the whole walk, read a page at a time, while other replicas append.
  return Run<AuditVerifyReport>(
      "verify audit", TxnMode::kSnapshot, [&](PgConnection& c) -> Result<AuditVerifyReport> {
        AuditChainVerifier verifier;
        int64_t after = 0;
        while (true) {
          SIGIL_ASSIGN_OR_RETURN(
              auto r, c.Query("verify audit", kSql, PgParams().Int(after).Int(kVerifyPage)));
          bool intact = true;
          for (int i = 0; i < r.rows() && intact; ++i) {
            AuditRecord rec = ReadAudit(r, i);
            after = static_cast<int64_t>(rec.seq);
            intact = verifier.Add(rec);
          }
          if (!intact || r.rows() < kVerifyPage) break;
        }
        return verifier.Report();
      });
}

Result<AuditHead> PostgresStore::GetAuditHead() {
  return Run<AuditHead>(
      "audit head", TxnMode::kAutocommit, [&](PgConnection& c) -> Result<AuditHead> {
        SIGIL_ASSIGN_OR_RETURN(
            auto r, c.Query("audit head", "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"));
        if (r.rows() == 0) return AuditHead{0, std::string(kGenesisHash)};
        return AuditHead{static_cast<uint64_t>(r.Int(0, 0)), r.Text(0, 1)};
      });
}

}  // namespace sigil::store
