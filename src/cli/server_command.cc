// `sigil server`: the control plane process (admin API over HTTPS, agent API over gRPC).
//
// Data directory layout (created 0700 on first start):
//   sigil.db            SQLite store (CA keys and secrets only as KEK-sealed blobs)
//   kek                 key-encryption key, 0600 (unless --kek-file points elsewhere)
//   admin/              cert.pem, key.pem (0600), bundle.pem: spiffe://TD/sigil/admin
//   admin-readonly/     the same for spiffe://TD/sigil/admin/readonly
//   tls/                the server's own TLS identity for the agent API (gRPC re-reads it):
//                       server.key (0600; new each start), server.crt, roots.pem
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

#include "cli/admin_credential_files.h"
#include "cli/commands.h"
#include "cli/daemon.h"
#include "cli/flags.h"
#include "cli/store_backup.h"
#include "common/duration.h"
#include "common/file_util.h"
#include "common/host_port.h"
#include "server/admin_api.h"
#include "server/agent_api.h"
#include "server/ca_state.h"
#include "server/control_plane.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/server_identity.h"
#include "store/store_url.h"

namespace sigil::cli {
namespace {

constexpr int kDefaultMetricsPort = 9090;

// The trust domain: the CA's once one exists in the store (the CaState resource: with several
// replicas starting at once, the replica that created the CA decided it), else the one stored
// at the first start, else --trust-domain.
Result<core::TrustDomain> ResolveTrustDomain(store::Store& store, const std::string& flag,
                                             bool* first) {
  SIGIL_ASSIGN_OR_RETURN(std::optional<std::string> ca_td, server::StoredCaTrustDomain(store));
  if (ca_td) {
    if (!flag.empty() && flag != *ca_td) {
      return FailedPrecondition("--trust-domain " + flag +
                                " differs from the store's CA, which belongs to trust domain " +
                                *ca_td);
    }
    SIGIL_ASSIGN_OR_RETURN(auto td, core::TrustDomain::Parse(*ca_td));
    // A replica that lost the race to create the CA may have written its own flag here.
    auto blob = store.GetBlob(std::string(kTrustDomainBlob));
    if (!blob.ok() || std::string(blob->begin(), blob->end()) != *ca_td) {
      SIGIL_TRY(store.PutBlob(
          std::string(kTrustDomainBlob),
          std::span(reinterpret_cast<const uint8_t*>(ca_td->data()), ca_td->size()), {}));
    }
    *first = false;
    return td;
  }
  auto blob = store.GetBlob(std::string(kTrustDomainBlob));
  if (blob.ok()) {
    std::string stored(blob->begin(), blob->end());
    if (!flag.empty() && flag != stored) {
      return FailedPrecondition("--trust-domain " + flag +
                                " differs from the trust domain this store was initialised with, " +
                                stored);
    }
    *first = false;
    return core::TrustDomain::Parse(stored);
  }
  if (blob.error().code() != ErrorCode::kNotFound) return std::move(blob).error();
  if (flag.empty()) return InvalidArgument("--trust-domain is required on first start");
  SIGIL_ASSIGN_OR_RETURN(auto td, core::TrustDomain::Parse(flag));
  store::AuditEvent e;
  e.type = "server.init";
  e.actor = "server";
  e.details_json = nlohmann::json{{"trust_domain", td.name()}}.dump();
  SIGIL_TRY(
      store.PutBlob(std::string(kTrustDomainBlob),
                    std::span(reinterpret_cast<const uint8_t*>(td.name().data()), td.name().size()),
                    std::span(&e, 1)));
  *first = true;
  return td;
}

Result<void> WriteBundle(server::ControlPlane& cp, const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return {};
  return WriteFileAtomic(dir + "/bundle.pem", cp.Bundle().X509AuthoritiesPem(), 0644);
}

struct Flags {
  std::string data_dir, trust_domain, kek_file, ready_file;
  std::string store;  // empty: SQLite at DIR/sigil.db
  std::string admin_listen = "127.0.0.1:8443";
  std::string agent_listen = "0.0.0.0:8081";
  std::string metrics_listen;  // empty: 127.0.0.1:kDefaultMetricsPort
  std::string log_format = "text";
  Seconds ca_ttl = core::kDefaultCaTtl;
  std::string server_names;  // comma-separated DNS SANs; empty: localhost + hostname
  Seconds server_cert_ttl = server::kDefaultNodeSvidTtl;
  Seconds node_svid_ttl = server::kDefaultNodeSvidTtl;
  Seconds admin_cert_ttl = server::kAdminCredentialTtl;
  Seconds node_rejoin_grace = server::kDefaultNodeRejoinGrace;
};

// Shortest --node-svid-ttl / --admin-cert-ttl: renewal at half-life needs a few ticks.
constexpr Seconds kMinCredentialTtl{10};

std::vector<std::string> ServerNames(const std::string& flag) {
  std::vector<std::string> names;
  if (flag.empty()) {
    names.push_back("localhost");
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0 && host[0] != '\0' &&
        std::string_view(host) != "localhost") {
      names.emplace_back(host);
    }
    return names;
  }
  size_t start = 0;
  while (start <= flag.size()) {
    size_t comma = flag.find(',', start);
    if (comma == std::string::npos) comma = flag.size();
    if (comma > start) names.push_back(flag.substr(start, comma - start));
    start = comma + 1;
  }
  return names;
}

// Background upkeep: every second CA rotation steps (a `sigil ca rotate --activate-after` of a
// few seconds activates on time), bundle files, server certificate and admin credential
// renewal (FastTick, in-memory checks); every `interval` join-token expiry audits and the rest
// (Tick, store queries).
class Maintenance {
 public:
  Maintenance(server::ControlPlane& cp, server::ServerIdentity& identity, server::Logger& log,
              std::chrono::seconds interval, std::string data_dir)
      : cp_(cp),
        identity_(identity),
        log_(log),
        interval_(interval),
        data_dir_(std::move(data_dir)),
        bundle_written_(cp.Bundle().sequence()),
        admin_files_{AdminCredentialFiles(cp, data_dir_ + "/admin", false),
                     AdminCredentialFiles(cp, data_dir_ + "/admin-readonly", true)} {
    thread_ = std::thread([this] { Run(); });
  }
  ~Maintenance() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    auto next_tick = std::chrono::steady_clock::now() + interval_;
    while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; })) {
      lock.unlock();
      FastTick();
      if (std::chrono::steady_clock::now() >= next_tick) {
        Tick();
        next_tick = std::chrono::steady_clock::now() + interval_;
      }
      lock.lock();
    }
  }
  void FastTick();
  void Tick();

  server::ControlPlane& cp_;
  server::ServerIdentity& identity_;
  server::Logger& log_;
  const std::chrono::seconds interval_;
  const std::string data_dir_;
  uint64_t bundle_written_;  // the bundle sequence DIR/admin*/bundle.pem hold
  AdminCredentialFiles admin_files_[2];
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

void Maintenance::FastTick() {
  if (auto rotated = cp_.RotateIfDue(); !rotated.ok()) {
    log_.Error("ca.rotate.fail", {{"error", rotated.error().message()}});
  } else if (*rotated) {
    log_.Info("ca.rotate", {{"bundle_sequence", cp_.Bundle().sequence()}});
  }
  // The bundle files follow the bundle whatever changed it (a step above, `sigil ca rotate`).
  if (const uint64_t sequence = cp_.Bundle().sequence(); sequence != bundle_written_) {
    bool ok = true;
    for (const auto& dir : {data_dir_ + "/admin", data_dir_ + "/admin-readonly"}) {
      if (auto r = WriteBundle(cp_, dir); !r.ok()) {
        ok = false;
        log_.Error("bundle.write.fail", {{"error", r.error().message()}});
      }
    }
    if (ok) bundle_written_ = sequence;
  }
  if (auto renewed = identity_.Refresh(); !renewed.ok()) {
    log_.Error("server.credential.renew.fail", {{"error", renewed.error().message()}});
  } else if (*renewed) {
    auto m = identity_.Current();
    log_.Info("server.credential.renew",
              {{"serial", m->serial}, {"expires", ToUnixSeconds(m->not_after)}});
  }
  for (auto& files : admin_files_) {
    if (auto renewed = files.RenewIfDue(); !renewed.ok()) {
      log_.Error("admin.credential.renew.fail", {{"error", renewed.error().message()}});
    } else if (*renewed) {
      log_.Info("admin.credential.renew", {{"dir", files.dir()}});
    }
  }
}

void Maintenance::Tick() {
  // Normally another replica's CA change arrives through the change feed at once; this catches
  // one whose re-read failed then (a store hiccup).
  if (auto refreshed = cp_.RefreshAuthorities(); !refreshed.ok()) {
    log_.Error("ca.refresh.fail", {{"error", refreshed.error().message()}});
  } else if (*refreshed) {
    log_.Info("ca.refresh", {{"bundle_sequence", cp_.Bundle().sequence()},
                             {"version", cp_.authorities_version()}});
  }
  if (auto expired = cp_.SweepExpiredTokens(); !expired.ok()) {
    log_.Error("token.sweep.fail", {{"error", expired.error().message()}});
  } else if (*expired > 0) {
    log_.Info("token.expired", {{"count", *expired}});
  }
  if (auto pruned = cp_.PruneExpiredRevocations(); !pruned.ok()) {
    log_.Error("revoke.prune.fail", {{"error", pruned.error().message()}});
  } else if (*pruned > 0) {
    log_.Info("revoke.expired", {{"count", *pruned}});
  }
}

int Serve(const Flags& f, server::Logger& log) {
  auto fail = [&](std::string_view what, const Error& e) {
    log.Error("server.fail", {{"step", what}, {"error", e.message()}});
    return kExitFailure;
  };
  auto admin_addr = SplitHostPort("--admin-listen", f.admin_listen);
  if (!admin_addr.ok()) return fail("flags", admin_addr.error());
  // --metrics-listen: empty means the default address, where a bind failure (e.g. another
  // server on this host) only disables metrics; an explicit address must bind.
  const bool metrics_default = f.metrics_listen.empty();
  const bool metrics_on = f.metrics_listen != "off";
  std::pair<std::string, int> metrics_addr{"127.0.0.1", kDefaultMetricsPort};
  if (metrics_on && !metrics_default) {
    auto parsed = SplitHostPort("--metrics-listen", f.metrics_listen);
    if (!parsed.ok()) return fail("flags", parsed.error());
    metrics_addr = *parsed;
  }
  if (auto r = MakeDirs(f.data_dir, 0700); !r.ok()) return fail("data-dir", r.error());
  ::chmod(f.data_dir.c_str(), 0700);
  auto store = store::OpenStoreUrl(f.store.empty() ? f.data_dir + "/sigil.db" : f.store);
  if (!store.ok()) return fail("store", store.error());
  // Never a new KEK for a store that already holds sealed secrets (e.g. a restored one).
  auto kek = LoadKekForStore(**store, f.kek_file.empty() ? f.data_dir + "/kek" : f.kek_file);
  if (!kek.ok()) return fail("kek", kek.error());
  bool first = false;
  auto td = ResolveTrustDomain(**store, f.trust_domain, &first);
  if (!td.ok()) return fail("trust-domain", td.error());
  server::ControlPlaneOptions options{{*td}, {}, {}};
  options.ca.ttl = f.ca_ttl;
  options.server_svid_ttl = f.server_cert_ttl;
  options.node_svid_ttl = f.node_svid_ttl;
  options.admin_svid_ttl = f.admin_cert_ttl;
  options.node_rejoin_grace = f.node_rejoin_grace;
  auto cp = server::ControlPlane::Open(std::move(options), std::move(*store), std::move(*kek),
                                       Clock::System());
  if (!cp.ok()) return fail("control-plane", cp.error());
  server::ControlPlane& plane = **cp;
  const std::string admin_dir = f.data_dir + "/admin";
  const std::string readonly_dir = f.data_dir + "/admin-readonly";
  // Admin credentials: on the first start, and for a data directory that has none yet (another
  // replica on the same store, or a server moved to a new host): whoever runs the server with
  // the store and its KEK holds the CA anyway.
  const bool init = first || plane.created_authorities();
  std::vector<std::string> written;
  for (auto [dir, ro] : {std::pair{admin_dir, false}, std::pair{readonly_dir, true}}) {
    struct stat st {};
    if (!init && ::stat((dir + "/cert.pem").c_str(), &st) == 0) continue;
    if (auto r = WriteAdminCredential(plane, dir, ro); !r.ok()) {
      return fail("admin-credential", r.error());
    }
    written.push_back(dir);
  }
  if (init) {
    log.Info("server.init", {{"trust_domain", td->name()},
                             {"admin_credentials", admin_dir},
                             {"readonly_credentials", readonly_dir}});
  } else if (!written.empty()) {
    log.Info("admin.credential.create",
             {{"dirs", written}, {"reason", "none in this data directory yet"}});
  }
  if (!written.empty()) {
    std::cout << "Admin credentials written to " << admin_dir << " (read-only: " << readonly_dir
              << ")\n"
              << std::flush;
  }
  for (const auto& dir : {admin_dir, readonly_dir}) {
    if (auto r = WriteBundle(plane, dir); !r.ok()) return fail("bundle", r.error());
  }

  // Metrics (Prometheus text format on a plain-HTTP listener), see src/server/metrics.h.
  server::metrics::Registry metrics_registry;
  server::metrics::ServerMetrics metrics(metrics_registry);
  plane.AttachMetrics(&metrics);
  metrics_registry.AddCallbackGauge(
      "sigil_store_revision", "Current revision of the resource store.", [&plane]() -> double {
        auto rev = plane.store().CurrentRevision();
        if (!rev.ok()) throw std::runtime_error("store revision unavailable");
        return static_cast<double>(*rev);
      });

  // The server's TLS identity, shared by the admin and agent APIs and renewed at half-life.
  auto identity =
      server::ServerIdentity::Create(plane, ServerNames(f.server_names), f.data_dir + "/tls");
  if (!identity.ok()) return fail("server-credential", identity.error());

  server::AdminApiOptions admin_opts;
  admin_opts.identity = identity->get();
  admin_opts.host = admin_addr->first;
  admin_opts.port = admin_addr->second;
  admin_opts.metrics = &metrics;
  auto admin = server::AdminApi::Start(plane, log, admin_opts);
  if (!admin.ok()) return fail("admin-api", admin.error());
  std::string ready = "admin=" + admin_opts.host + ":" + std::to_string((*admin)->port()) + "\n";

  // Agent API (gRPC), see src/server/agent_api.h.
  server::AgentApi agent_service(plane);
  agent_service.AttachMetrics(&metrics);
  std::unique_ptr<grpc::Server> agent_server;
  if (!f.agent_listen.empty() && f.agent_listen != "off") {
    server::ServerTlsIdentity tls;
    tls.key_file = (*identity)->key_path();
    tls.chain_file = (*identity)->chain_path();
    tls.roots_file = (*identity)->roots_path();
    tls.refresh_seconds =
        static_cast<unsigned>(std::clamp<int64_t>(f.server_cert_ttl.count() / 8, 1, 60));
    int agent_port = 0;
    auto started = server::StartAgentApi(agent_service, f.agent_listen, tls, &agent_port);
    if (!started.ok()) return fail("agent-api", started.error());
    agent_server = std::move(*started);
    auto agent_addr = SplitHostPort("--agent-listen", f.agent_listen);
    ready += "agent=" + (agent_addr.ok() ? agent_addr->first : std::string("?")) + ":" +
             std::to_string(agent_port) + "\n";
    log.Info("agent.listen", {{"address", f.agent_listen}, {"port", agent_port}});
  }
  std::unique_ptr<server::MetricsServer> metrics_server;
  if (metrics_on) {
    auto started = server::MetricsServer::Start(metrics_registry, log, metrics_addr.first,
                                                metrics_addr.second);
    if (started.ok()) {
      metrics_server = std::move(*started);
      ready +=
          "metrics=" + metrics_addr.first + ":" + std::to_string(metrics_server->port()) + "\n";
      log.Info("metrics.listen", {{"host", metrics_addr.first}, {"port", metrics_server->port()}});
    } else if (metrics_default) {
      log.Warn("metrics.disabled", {{"error", started.error().message()}});
    } else {
      return fail("metrics", started.error());
    }
  }
  log.Info("admin.listen", {{"host", admin_opts.host}, {"port", (*admin)->port()}});
  if (!f.ready_file.empty()) {
    if (auto r = WriteFileAtomic(f.ready_file, ready, 0644); !r.ok())
      return fail("ready-file", r.error());
  }

  auto maintenance = std::make_unique<Maintenance>(
      plane, **identity, log,
      std::chrono::seconds(std::clamp<int64_t>(f.server_cert_ttl.count() / 8, 1, 10)), f.data_dir);

  const std::string_view sig = WaitForTermination();
  maintenance.reset();
  log.Info("server.shutdown", {{"signal", sig}});
  // The agent API's change feed runs even with --agent-listen off: stop it before the control
  // plane (whose bundle its thread reads) goes away.
  agent_service.Shutdown();
  if (agent_server) {
    agent_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(3));
  }
  if (metrics_server) metrics_server->Stop();
  (*admin)->Stop();
  admin->reset();
  cp->reset();  // closes the store
  log.Info("server.stopped");
  return kExitOk;
}

}  // namespace

int RunServer(std::span<const std::string> args) {
  if (!args.empty() && args[0] == "backup") return RunServerBackup(args.subspan(1));
  if (!args.empty() && args[0] == "restore") return RunServerRestore(args.subspan(1));
  Flags f;
  FlagSet flags(
      "server --data-dir DIR [--config FILE] [--trust-domain TD] [--store URL] "
      "[--admin-listen HOST:PORT] "
      "[--agent-listen HOST:PORT] [--metrics-listen HOST:PORT] [--kek-file FILE] [--log-format "
      "text|json] [--ca-ttl DUR] [--server-name NAMES] [--server-cert-ttl DUR] "
      "[--node-svid-ttl DUR] [--node-rejoin-grace DUR] [--admin-cert-ttl DUR] "
      "[--ready-file PATH]",
      "Run the Sigil control plane. The first start creates the data directory, the KEK, the "
      "CA and the admin credentials (DIR/admin, DIR/admin-readonly). See also `sigil server "
      "backup` and `sigil server restore`.");
  flags.ConfigFile(
      "YAML file of flag values (keys are the flag names without --; command-line "
      "flags win)");
  flags.String("data-dir", &f.data_dir, "data directory (created 0700)", f.data_dir.empty());
  flags.String("trust-domain", &f.trust_domain, "trust domain (required on first start)");
  flags.String("store", &f.store,
               "store: postgres://... or postgresql://... (PostgreSQL), or a SQLite file path "
               "or sqlite://PATH (default DIR/sigil.db)");
  flags.String("admin-listen", &f.admin_listen, "admin API address (default 127.0.0.1:8443)");
  flags.String("agent-listen", &f.agent_listen,
               "agent API address (default 0.0.0.0:8081; \"off\" disables it)");
  flags.String("metrics-listen", &f.metrics_listen,
               "Prometheus /metrics address, plain HTTP (default 127.0.0.1:9090; \"off\" "
               "disables it)");
  flags.String("kek-file", &f.kek_file, "key-encryption key file (default DIR/kek)");
  flags.String("log-format", &f.log_format, "text or json (default text)");
  flags.Duration("ca-ttl", &f.ca_ttl, "CA certificate lifetime on first start");
  flags.String("server-name", &f.server_names,
               "comma-separated DNS names for the server certificate, as agents and admins dial "
               "it (default: localhost and this host's name)");
  flags.Duration("server-cert-ttl", &f.server_cert_ttl,
                 "lifetime of the server's own TLS certificate, renewed at half-life (default "
                 "24h)");
  flags.Duration("node-svid-ttl", &f.node_svid_ttl,
                 "lifetime of node SVIDs (agents renew at half-life; default 24h, at least 10s)");
  flags.Duration("node-rejoin-grace", &f.node_rejoin_grace,
                 "how long after its node SVID expired an agent may still rejoin with that "
                 "SVID's key instead of a new join token (default 72h; 0s disables rejoin)");
  flags.Duration("admin-cert-ttl", &f.admin_cert_ttl,
                 "lifetime of admin client certificates, capped by the CA (the server renews "
                 "DIR/admin and DIR/admin-readonly at half-life and after a CA rotation; default "
                 "2190h, at least 10s)");
  flags.String(
      "ready-file", &f.ready_file,
      "write \"admin=HOST:PORT\" (and \"agent=...\", \"metrics=...\") here once listening");
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  for (auto [name, ttl] : {std::pair{"--node-svid-ttl", f.node_svid_ttl},
                           std::pair{"--admin-cert-ttl", f.admin_cert_ttl}}) {
    if (ttl < kMinCredentialTtl) {
      std::cerr << "sigil server: " << name << " must be at least "
                << FormatDuration(kMinCredentialTtl) << ", got " << FormatDuration(ttl) << "\n";
      return kExitUsage;
    }
  }
  std::optional<LogFormat> format = PrepareDaemon(f.log_format, flags);
  if (!format) return kExitUsage;
  server::Logger log(std::cerr, *format);
  return Serve(f, log);
}

}  // namespace sigil::cli
