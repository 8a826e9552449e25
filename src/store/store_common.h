// Private to sigil_store: what every Store implementation shares, so SQLite and PostgreSQL
// accept exactly the same input and hash exactly the same audit records: input limits and
// validation, audit-event normalisation, and the microsecond time representation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/result.h"
#include "store/store.h"

namespace sigil::store::internal {

inline constexpr size_t kMaxKindBytes = 63;
inline constexpr size_t kMaxNameBytes = 253;
inline constexpr size_t kMaxSpecBytes = size_t{1} << 20;      // 1 MiB per resource
inline constexpr size_t kMaxDetailsBytes = size_t{64} << 10;  // 64 KiB per audit record
inline constexpr size_t kMaxBlobBytes = size_t{16} << 20;     // 16 MiB per blob
inline constexpr size_t kMaxAuditFieldBytes = 4096;           // type, actor, node, ...
inline constexpr uint32_t kMaxChangesPage = 10000;            // ChangesSince limit cap

// Unix microseconds: the stored time representation (SQLite INTEGER columns; PostgreSQL
// timestamptz, which has the same precision).
int64_t ToMicros(TimePoint t);
TimePoint FromMicros(int64_t us);
// `t` truncated to microsecond precision (what a round trip through the store yields).
inline TimePoint TruncateToMicros(TimePoint t) { return FromMicros(ToMicros(t)); }

// Non-empty, at most `max` bytes, no control characters. `what` names the field.
Result<void> ValidateKey(std::string_view what, std::string_view value, size_t max);
// `text` parses as a JSON object of at most `max` bytes.
Result<void> ValidateJsonObject(std::string_view what, std::string_view text, size_t max);
// 64 lowercase hex characters (a SHA-256). Never echoes the value.
Result<void> ValidateTokenHash(std::string_view hash);
// "Kind/name" for messages.
std::string ResourceKey(std::string_view kind, std::string_view name);

// The checks ApplyWithBlobs makes before opening a transaction: valid keys and specs, no
// (kind, name) or blob name twice, blob sizes.
Result<void> ValidateApplyBatch(std::span<const ResourceWrite> writes,
                                std::span<const BlobWrite> blobs);
Result<void> ValidateBlob(std::string_view name, size_t size);
Result<void> ValidateJoinToken(const JoinTokenRecord& token);
Result<void> ValidateNode(const NodeRecord& node);

// The event as it will be stored and hashed: time at µs precision (stamped with `clock` if
// unset), details "{}" if empty. A validation failure rolls back the caller's transaction.
Result<AuditEvent> NormalizeAuditEvent(const AuditEvent& e, const Clock& clock);

// AuditFilter::binding. Details are compact JSON written by nlohmann::json (the server's own
// records, and agents' events after re-serialisation), so a record naming the binding contains
// `"binding":` followed by the JSON string of the name; inside a JSON string every quote is
// escaped, so this text only occurs as a real member. The database prefilters on it (a plain
// substring search: no JSON parser that a "\u0000" in some record could make fail, or a NUL
// could truncate); MatchesAuditBinding then keeps only records whose top-level member is it.
std::string AuditBindingNeedle(std::string_view binding);
bool MatchesAuditBinding(std::string_view details_json, std::string_view binding);
// The same for any top-level string member (AuditFilter::serial: member "serial").
std::string AuditMemberNeedle(std::string_view member, std::string_view value);
bool MatchesAuditMember(std::string_view details_json, std::string_view member,
                        std::string_view value);

}  // namespace sigil::store::internal
