// The audit log's hash chain, independent of any database.
//
// Each record's hash is SHA-256 over its canonical encoding, which includes the previous
// record's hash, so editing, deleting, reordering or inserting a record breaks every link
// after it. The first record's prev_hash is kGenesisHash (64 zeros).
//
// Canonical encoding, version 1 (all integers big-endian; F(x) = u32 byte length || bytes):
//
//   F("sigil.audit.v1")              domain separator (also versions the encoding)
//   u64 seq
//   i64 time                          Unix microseconds, two's complement
//   F(type) F(actor) F(node) F(identity)
//   u8 0                              pid absent, or
//   u8 1 || i64 pid                   pid present
//   F(exe) F(details_json)
//   F(prev_hash)                      the 64-character lowercase hex text
//
// Every variable-length field is length-prefixed and the optional field carries a presence
// byte, so two different records can never encode to the same bytes. Text is hashed as the
// exact stored bytes (no Unicode normalisation). Any implementation of Store (SQLite,
// PostgreSQL) must produce and verify exactly this encoding.
//
// Limitation: a bare chain cannot detect removal of its newest records, nor a complete
// rewrite by someone who recomputes every hash. Anchor the head (Store::GetAuditHead)
// outside the database to close both gaps.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "store/store.h"

namespace sigil::store {

inline constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// The canonical encoding above. `event.time` is taken at microsecond precision.
std::string AuditCanonicalEncoding(uint64_t seq, const AuditEvent& event,
                                   std::string_view prev_hash);
// Lowercase hex SHA-256 of AuditCanonicalEncoding.
std::string AuditRecordHash(uint64_t seq, const AuditEvent& event, std::string_view prev_hash);

// Streaming verifier: feed records in the order the store returns them (ascending seq).
// Thread-compatible.
class AuditChainVerifier {
 public:
  // Returns false once the chain is known to be broken; later calls are ignored.
  bool Add(const AuditRecord& record);
  // ok is true iff every record added so far links correctly.
  AuditVerifyReport Report() const;

 private:
  bool Fail(uint64_t seq, std::string reason);
  uint64_t next_seq_ = 1;
  std::string prev_hash_{kGenesisHash};
  AuditVerifyReport report_{.ok = true, .records_checked = 0, .first_bad_seq = {}, .reason = {}};
};

AuditVerifyReport VerifyAuditChain(std::span<const AuditRecord> records);

}  // namespace sigil::store
