// Private to the SqliteStore translation units: input validation shared by them and the
// write-transaction helper.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "store/sqlite_store.h"

namespace sigil::store::internal {

inline constexpr size_t kMaxKindBytes = 63;
inline constexpr size_t kMaxNameBytes = 253;
inline constexpr size_t kMaxSpecBytes = size_t{1} << 20;      // 1 MiB per resource
inline constexpr size_t kMaxDetailsBytes = size_t{64} << 10;  // 64 KiB per audit record
inline constexpr size_t kMaxBlobBytes = size_t{16} << 20;     // 16 MiB per blob
inline constexpr size_t kMaxAuditFieldBytes = 4096;           // type, actor, node, ...

// Non-empty, at most `max` bytes, no control characters. `what` names the field.
Result<void> ValidateKey(std::string_view what, std::string_view value, size_t max);
// `text` parses as a JSON object of at most `max` bytes.
Result<void> ValidateJsonObject(std::string_view what, std::string_view text, size_t max);
// 64 lowercase hex characters (a SHA-256). Never echoes the value.
Result<void> ValidateTokenHash(std::string_view hash);
// "Kind/name" for messages.
std::string ResourceKey(std::string_view kind, std::string_view name);

}  // namespace sigil::store::internal

namespace sigil::store {

template <class F>
auto SqliteStore::InWriteTxn(F&& body) -> decltype(body()) {
  SIGIL_ASSIGN_OR_RETURN(auto tx,
                         internal::Transaction::Begin(*conn_, internal::Transaction::Mode::kWrite));
  auto result = body();
  if (!result.ok()) return result;  // ~Transaction rolls back
  SIGIL_TRY(tx.Commit());
  return result;
}

}  // namespace sigil::store
