// `sigil server backup` and `sigil server restore` (store_backup.cc), and the KEK check the
// server and the restore share. docs/operations.md, "Backup and restore".
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "core/kek.h"
#include "store/store.h"

namespace sigil::cli {

// The store blob holding the trust domain (written on the server's first start).
inline constexpr std::string_view kTrustDomainBlob = "config/trust-domain";

// The KEK for `store` from `kek_path`. A store that already holds the sealed authority set
// (every store a server has run on) needs exactly the key it was sealed under: a missing file
// is an error, never a new key (which could not open anything), and so is another key; both
// errors name the file and the key ids. A store without it (first start) gets
// Kek::LoadOrCreate.
Result<core::Kek> LoadKekForStore(store::Store& store, const std::string& kek_path);

}  // namespace sigil::cli
