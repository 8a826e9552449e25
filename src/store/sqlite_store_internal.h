// Private to the SqliteStore translation units: the write-transaction helper (input
// validation shared with PostgresStore is in store_common.h).
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "store/sqlite_store.h"
#include "store/store_common.h"

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
