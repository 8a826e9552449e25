#include "store/audit_chain.h"

#include <chrono>
#include <utility>

#include "common/encoding.h"

namespace sigil::store {
namespace {

void PutU64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}
void PutField(std::string& out, std::string_view s) {
  const auto n = static_cast<uint32_t>(s.size());
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((n >> shift) & 0xff));
  out.append(s);
}
bool IsLowerHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string AuditCanonicalEncoding(uint64_t seq, const AuditEvent& event,
                                   std::string_view prev_hash) {
  const int64_t micros =
      std::chrono::floor<std::chrono::microseconds>(event.time.time_since_epoch()).count();
  std::string out;
  out.reserve(128 + event.type.size() + event.actor.size() + event.node.size() +
              event.identity.size() + event.exe.size() + event.details_json.size());
  PutField(out, "sigil.audit.v1");
  PutU64(out, seq);
  PutU64(out, static_cast<uint64_t>(micros));
  PutField(out, event.type);
  PutField(out, event.actor);
  PutField(out, event.node);
  PutField(out, event.identity);
  if (event.pid.has_value()) {
    out.push_back('\x01');
    PutU64(out, static_cast<uint64_t>(*event.pid));
  } else {
    out.push_back('\x00');
  }
  PutField(out, event.exe);
  PutField(out, event.details_json);
  PutField(out, prev_hash);
  return out;
}

std::string AuditRecordHash(uint64_t seq, const AuditEvent& event, std::string_view prev_hash) {
  return Sha256Hex(AsBytes(AuditCanonicalEncoding(seq, event, prev_hash)));
}

bool AuditChainVerifier::Fail(uint64_t seq, std::string reason) {
  report_.ok = false;
  report_.first_bad_seq = seq;
  report_.reason = std::move(reason);
  return false;
}

bool AuditChainVerifier::Add(const AuditRecord& r) {
  if (!report_.ok) return false;
  const std::string at = "audit record " + std::to_string(r.seq) + ": ";
  if (r.seq > next_seq_) {
    return Fail(next_seq_, "audit record " + std::to_string(next_seq_) +
                               " is missing (next record present has seq " + std::to_string(r.seq) +
                               ")");
  }
  if (r.seq < next_seq_) {
    return Fail(r.seq,
                at + "out of order or duplicated (expected seq " + std::to_string(next_seq_) + ")");
  }
  ++report_.records_checked;
  if (!IsLowerHex64(r.hash) || !IsLowerHex64(r.prev_hash)) {
    return Fail(r.seq, at + "hash or prev_hash is not 64 lowercase hex characters");
  }
  if (AuditRecordHash(r.seq, r.event, r.prev_hash) != r.hash) {
    return Fail(r.seq, at + "hash mismatch: the record's contents were altered");
  }
  if (r.prev_hash != prev_hash_) {
    return Fail(r.seq, at + "prev_hash does not match the hash of record " +
                           std::to_string(r.seq - 1) +
                           ": a record was removed, reordered or rewritten before it");
  }
  prev_hash_ = r.hash;
  ++next_seq_;
  return true;
}

AuditVerifyReport AuditChainVerifier::Report() const { return report_; }

AuditVerifyReport VerifyAuditChain(std::span<const AuditRecord> records) {
  AuditChainVerifier v;
  for (const AuditRecord& r : records) {
    if (!v.Add(r)) break;
  }
  return v.Report();
}

}  // namespace sigil::store
