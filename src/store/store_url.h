// Opens the Store named by a `--store` value:
//   postgres://... or postgresql://...   PostgresStore (a libpq connection URL)
//   sqlite:///abs/path or sqlite://rel   SqliteStore on that file
//   anything else                        SqliteStore on that path
#pragma once

#include <memory>
#include <string>

#include "common/result.h"
#include "store/store.h"

namespace sigil::store {

bool IsPostgresUrl(const std::string& spec);
Result<std::unique_ptr<Store>> OpenStoreUrl(const std::string& spec);
// `spec` with any password removed, for logs.
std::string StoreDisplayName(const std::string& spec);

}  // namespace sigil::store
