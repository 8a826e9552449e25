#include "store/store_url.h"

#include "store/pg_conn.h"
#include "store/pg_store.h"
#include "store/sqlite_store.h"

namespace sigil::store {
namespace {

constexpr std::string_view kSqliteScheme = "sqlite://";

}  // namespace

bool IsPostgresUrl(const std::string& spec) {
  return spec.starts_with("postgres://") || spec.starts_with("postgresql://");
}

Result<std::unique_ptr<Store>> OpenStoreUrl(const std::string& spec) {
  if (IsPostgresUrl(spec)) {
    SIGIL_ASSIGN_OR_RETURN(auto pg, PostgresStore::Open(spec));
    return std::unique_ptr<Store>(std::move(pg));
  }
  std::string path = spec.starts_with(kSqliteScheme) ? spec.substr(kSqliteScheme.size()) : spec;
  if (path.empty()) return InvalidArgument("store: empty SQLite path in \"" + spec + "\"");
  SIGIL_ASSIGN_OR_RETURN(auto sqlite, SqliteStore::Open(path));
  return std::unique_ptr<Store>(std::move(sqlite));
}

std::string StoreDisplayName(const std::string& spec) {
  return IsPostgresUrl(spec) ? internal::PgDisplayName(spec) : spec;
}

}  // namespace sigil::store
