// `sigil server backup`: an online, consistent copy of the SQLite store while the server runs.
// `sigil server restore`: makes a restored store (a backup copy, or a pg_restore'd database)
// safe to run on. docs/operations.md, "Backup and restore".
#include "cli/store_backup.h"

#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <iostream>
#include <memory>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/admin_credential_files.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "common/file_util.h"
#include "server/control_plane.h"
#include "store/sqlite_backup.h"
#include "store/sqlite_store.h"
#include "store/store_url.h"

namespace sigil::cli {
namespace {

constexpr uint64_t kDefaultBump = 1'000'000'000;
constexpr uint64_t kMaxBump = 1'000'000'000'000'000;  // 1e15: far from int64 overflow
constexpr std::string_view kDocs = "docs/operations.md, \"Backup and restore\"";

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string SqlitePath(const std::string& spec) {
  constexpr std::string_view kScheme = "sqlite://";
  return spec.starts_with(kScheme) ? spec.substr(kScheme.size()) : spec;
}

std::string StoreSpec(const std::string& store_flag, const std::string& data_dir) {
  return store_flag.empty() ? data_dir + "/sigil.db" : store_flag;
}

int Fail(std::string_view cmd, const Error& e) {
  std::cerr << "sigil " << cmd << ": " << e.message() << "\n";
  return kExitFailure;
}

int Usage(std::string_view cmd, std::string_view message, const FlagSet& flags) {
  std::cerr << "sigil " << cmd << ": " << message << "\n\n" << flags.Help();
  return kExitUsage;
}

std::string StringOf(const std::vector<uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

// The key id the store's authority set is sealed under, or empty if there is none yet.
Result<std::string> StoreKekId(store::Store& store, std::vector<uint8_t>* sealed) {
  auto blob = store.GetBlob(std::string(server::kAuthoritiesBlob));
  if (!blob.ok()) {
    if (blob.error().code() == ErrorCode::kNotFound) return std::string();
    return std::move(blob).error();
  }
  auto id = core::Kek::SealedKeyId(*blob);
  if (!id) return Internal("store: blob \"authorities\" is not a sealed blob");
  *sealed = std::move(*blob);
  return *id;
}

}  // namespace

Result<core::Kek> LoadKekForStore(store::Store& store, const std::string& kek_path) {
  std::vector<uint8_t> sealed;
  SIGIL_ASSIGN_OR_RETURN(std::string store_id, StoreKekId(store, &sealed));
  if (store_id.empty()) return core::Kek::LoadOrCreate(kek_path);
  auto kek = core::Kek::Load(kek_path);
  if (!kek.ok()) {
    if (kek.error().code() != ErrorCode::kNotFound) return std::move(kek).error();
    return FailedPrecondition(
        "kek: " + kek_path +
        " does not exist, but this store's secrets (CA keys, credential "
        "secrets) are sealed under KEK " +
        store_id +
        "; a new key cannot open them: put back "
        "the KEK file that was backed up with this store (or point --kek-file at it)");
  }
  if (kek->KeyId() != store_id) {
    return FailedPrecondition("kek: " + kek_path + " holds KEK " + kek->KeyId() +
                              ", but this store's secrets are sealed under KEK " + store_id +
                              ": use the KEK file that belongs to this store (the one backed "
                              "up with it)");
  }
  if (auto opened = kek->Open(sealed, server::kAuthoritiesBlob); !opened.ok()) {
    return std::move(opened).error().WithContext("kek: " + kek_path + " (KEK " + store_id +
                                                 ") cannot open the store's CA keys");
  }
  return kek;
}

// ---------------------------------------------------------------------------------------
// sigil server backup

int RunServerBackup(std::span<const std::string> args) {
  constexpr std::string_view kCmd = "server backup";
  std::string data_dir, store_flag, out;
  FlagSet flags(
      "server backup --out FILE (--data-dir DIR | --store PATH)",
      "Write a consistent copy of the server's SQLite store to FILE while the server keeps "
      "running (SQLite's online backup: one read snapshot, writers are not blocked). FILE must "
      "not exist; it is created 0600. The copy is checked (integrity, audit chain) and its "
      "revision, audit head and KEK id are printed. The store's secrets are sealed under the "
      "KEK, which this copy does NOT contain: back up the KEK file separately. PostgreSQL "
      "stores are backed up with pg_dump --format=custom (" +
          std::string(kDocs) + ").");
  flags.String("out", &out, "the backup file to create (must not exist)", true);
  flags.String("data-dir", &data_dir, "the server's data directory (store DIR/sigil.db)");
  flags.String("store", &store_flag, "the SQLite store file (sqlite://PATH or PATH)");
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (data_dir.empty() && store_flag.empty()) {
    return Usage(kCmd, "give --data-dir DIR or --store PATH", flags);
  }
  const std::string spec = StoreSpec(store_flag, data_dir);
  if (store::IsPostgresUrl(spec)) {
    std::cerr << "sigil " << kCmd << ": " << store::StoreDisplayName(spec)
              << " is a PostgreSQL store: back it up with pg_dump --format=custom, and the KEK "
                 "file separately ("
              << kDocs << ")\n";
    return kExitFailure;
  }
  const std::string path = SqlitePath(spec);
  auto info = store::SqliteOnlineBackup(path, out);
  if (!info.ok()) return Fail(kCmd, info.error());
  std::cout << "backup of " << path << " written to " << out << " (" << info->bytes
            << " bytes, integrity ok)\n";
  if (!info->schema_current) {
    std::cout << "  schema version " << info->schema_version
              << " differs from this sigil's; not inspected further\n";
    return kExitOk;
  }
  // Inspect the copy (never the live store): nothing is migrated, the schema is current.
  auto copy = store::SqliteStore::Open(out);
  if (!copy.ok()) return Fail(kCmd, copy.error());
  auto revision = (*copy)->CurrentRevision();
  auto head = (*copy)->GetAuditHead();
  auto verified = (*copy)->VerifyAudit();
  auto td = (*copy)->GetBlob(std::string(kTrustDomainBlob));
  std::vector<uint8_t> sealed;
  auto kek_id = StoreKekId(**copy, &sealed);
  for (const Error* e :
       {revision.ok() ? nullptr : &revision.error(), head.ok() ? nullptr : &head.error(),
        verified.ok() ? nullptr : &verified.error(), kek_id.ok() ? nullptr : &kek_id.error()}) {
    if (e != nullptr) return Fail(kCmd, e->WithContext("inspecting " + out));
  }
  std::cout << "  trust domain " << (td.ok() ? StringOf(*td) : std::string("(none)"))
            << ", revision " << *revision << ", audit head seq " << head->seq << " sha256 "
            << head->hash << "\n";
  if (!verified->ok) {
    std::cerr << "sigil " << kCmd << ": the audit chain in the copy does not verify at seq "
              << verified->first_bad_seq.value_or(0) << ": " << verified->reason
              << " (the copy is kept: the live store has the same problem)\n";
    return kExitFailure;
  }
  std::cout << "  audit chain verified (" << verified->records_checked << " records)\n";
  if (!kek_id->empty()) {
    std::cout << "  secrets sealed under KEK " << *kek_id
              << ": this backup is useless without that key file; back it up separately "
                 "and keep it apart from this copy\n";
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------------------
// sigil server restore

int RunServerRestore(std::span<const std::string> args) {
  constexpr std::string_view kCmd = "server restore";
  std::string data_dir, store_flag, from, kek_flag, bump_text;
  FlagSet flags(
      "server restore --data-dir DIR [--store URL] [--from BACKUP] [--kek-file FILE] "
      "[--bump-revision N]",
      "Prepare a restored store for `sigil server`; run it while no server uses the store. "
      "SQLite: --from BACKUP copies a `sigil server backup` file to the store path (which must "
      "not exist). PostgreSQL: pg_restore the dump into a fresh database first, then run this "
      "on it. Checks that the KEK opens the store's secrets and that the audit chain verifies, "
      "moves the store revision forward by N (agents resuming Sync get a fresh snapshot; "
      "versions handed out after the backup are never reused), audits store.restore, and "
      "writes admin credentials to DIR/admin and DIR/admin-readonly if they are missing. " +
          std::string(kDocs) + ".");
  flags.String("data-dir", &data_dir, "the data directory the restored server will use", true);
  flags.String("store", &store_flag,
               "the restored store: postgres://... or a SQLite path (default DIR/sigil.db)");
  flags.String("from", &from, "SQLite: the backup file to copy to the store path first");
  flags.String("kek-file", &kek_flag,
               "the KEK the store was sealed under (default DIR/kek; never created here)");
  flags.String("bump-revision", &bump_text,
               "how far to move the revision forward: more than the store changes made after "
               "the backup (default 1000000000)");
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  uint64_t bump = kDefaultBump;
  if (!bump_text.empty()) {
    const char* end = bump_text.data() + bump_text.size();
    auto [ptr, ec] = std::from_chars(bump_text.data(), end, bump);
    if (ec != std::errc() || ptr != end || bump == 0 || bump > kMaxBump) {
      return Usage(kCmd,
                   "--bump-revision: want an integer from 1 to 10^15, got \"" + bump_text + "\"",
                   flags);
    }
  }
  const std::string spec = StoreSpec(store_flag, data_dir);
  const bool postgres = store::IsPostgresUrl(spec);
  const std::string display = store::StoreDisplayName(spec);
  const std::string kek_path = kek_flag.empty() ? data_dir + "/kek" : kek_flag;

  // The KEK first: without it nothing in the backup can be used, so fail before any copy.
  if (!Exists(kek_path)) {
    return Fail(kCmd, FailedPrecondition(
                          "kek: " + kek_path +
                          " does not exist: a restored store needs the KEK "
                          "its secrets were sealed under (backed up separately from the store); "
                          "put it there or point --kek-file at it"));
  }
  auto kek_loaded = core::Kek::Load(kek_path);
  if (!kek_loaded.ok()) return Fail(kCmd, kek_loaded.error());

  if (auto r = MakeDirs(data_dir, 0700); !r.ok()) return Fail(kCmd, r.error());
  if (!from.empty()) {
    if (postgres) {
      return Usage(kCmd,
                   "--from copies a SQLite backup file; restore a PostgreSQL dump with "
                   "pg_restore into a fresh database, then run this without --from",
                   flags);
    }
    auto copied = store::SqliteOnlineBackup(from, SqlitePath(spec));
    if (!copied.ok()) return Fail(kCmd, copied.error());
    std::cout << "copied " << from << " to " << SqlitePath(spec) << " (" << copied->bytes
              << " bytes, integrity ok)\n";
  } else if (!postgres && !Exists(SqlitePath(spec))) {
    return Fail(kCmd, FailedPrecondition("store: " + SqlitePath(spec) +
                                         " does not exist: give --from BACKUP to copy a "
                                         "backup there"));
  }
  // Checks before anything changes; a copy made above is removed again if one fails, so the
  // command can simply be run again.
  std::unique_ptr<store::Store> opened;
  auto fail_checks = [&](const Error& e) {
    if (!from.empty()) {
      opened.reset();
      for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((SqlitePath(spec) + suffix).c_str());
      std::cerr << "sigil " << kCmd << ": removed the copy " << SqlitePath(spec) << "\n";
    }
    return Fail(kCmd, e);
  };
  auto opened_or = store::OpenStoreUrl(spec);
  if (!opened_or.ok()) return fail_checks(opened_or.error());
  opened = std::move(*opened_or);
  store::Store& store = *opened;
  auto td_blob = store.GetBlob(std::string(kTrustDomainBlob));
  if (!td_blob.ok()) {
    if (td_blob.error().code() != ErrorCode::kNotFound) return fail_checks(td_blob.error());
    return fail_checks(FailedPrecondition("store: " + display +
                                          " holds no Sigil state (no trust domain): restore the "
                                          "backup into it first"));
  }
  auto td = core::TrustDomain::Parse(StringOf(*td_blob));
  if (!td.ok()) return fail_checks(td.error().WithContext("store: trust domain"));
  auto kek = LoadKekForStore(store, kek_path);
  if (!kek.ok()) return fail_checks(kek.error());
  if (auto r = store.IntegrityCheck(); !r.ok()) return fail_checks(r.error());
  auto verified = store.VerifyAudit();
  if (!verified.ok()) return fail_checks(verified.error());
  if (!verified->ok) {
    return fail_checks(FailedPrecondition("store: the audit chain does not verify at seq " +
                                          std::to_string(verified->first_bad_seq.value_or(0)) +
                                          ": " + verified->reason + "; nothing was changed"));
  }
  auto head = store.GetAuditHead();
  if (!head.ok()) return fail_checks(head.error());
  auto revision = store.CurrentRevision();
  if (!revision.ok()) return fail_checks(revision.error());

  store::AuditEvent event;
  event.type = "store.restore";
  event.actor = "sigil server restore";
  event.details_json = nlohmann::json{
      {"from", from.empty() ? display : from},
      {"previous_revision", *revision},
      {"revision", *revision + bump},
      {"bump", bump},
      {"previous_audit_seq", head->seq},
      {"previous_audit_hash", head->hash},
      {"kek_id",
       kek->KeyId()}}.dump();
  auto bumped = store.BumpRevision(bump, std::span(&event, 1));
  if (!bumped.ok()) return fail_checks(bumped.error());

  server::ControlPlaneOptions options{{*td}, {}, {}};
  auto cp = server::ControlPlane::Open(std::move(options), std::move(opened), std::move(*kek),
                                       Clock::System());
  if (!cp.ok()) return Fail(kCmd, cp.error());
  std::cout << "restored " << display << ": trust domain " << td->name() << ", CA sha256 "
            << (*cp)->Root().Fingerprint() << "\n"
            << "  audit chain verified (" << verified->records_checked
            << " records); store.restore recorded after seq " << head->seq << "\n"
            << "  revision " << *revision << " -> " << *bumped
            << " (agents resuming Sync get a fresh snapshot)\n";
  const std::string admin_dir = data_dir + "/admin";
  const std::string readonly_dir = data_dir + "/admin-readonly";
  for (auto [dir, ro] : {std::pair{admin_dir, false}, std::pair{readonly_dir, true}}) {
    if (Exists(dir)) {
      std::cout << "  kept the admin credentials in " << dir << "\n";
      continue;
    }
    if (auto r = WriteAdminCredential(**cp, dir, ro); !r.ok()) return Fail(kCmd, r.error());
    std::cout << "  admin credentials written to " << dir << "\n";
  }
  std::cout << "start the server with this store and KEK; what a restore loses: " << kDocs << "\n";
  return kExitOk;
}

}  // namespace sigil::cli
