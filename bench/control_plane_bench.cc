// sigil_control_plane_bench: control-plane throughput and fan-out, end to end.
//
// Everything is real: the agent API over gRPC + TLS (mTLS with node SVIDs) on 127.0.0.1, the
// admin API over HTTPS + mTLS, SqliteStore files (WAL, synchronous=FULL) in a temp directory.
// Each figure is printed next to an in-run baseline that skips the transport;
// docs/benchmarks.md records runs.
//
//   [1] SignWorkloadSVID throughput from many nodes (own node SVID + own channel each) and
//       several concurrent callers, run in a child process (this binary, --svid-client) so
//       the server's CPU time is measured on its own; baseline ControlPlane::SignWorkloadSvid
//       in-process with the same number of threads.
//   [2] One multi-document apply of N WorkloadIdentity objects through the admin API;
//       baseline store::Store::Apply of the same writes and audit events.
//   [3] Sync fan-out: N open streams (gRPC callback API, in this process), one AccessPolicy
//       commit, time until every stream has the delta; baseline the same with one stream.
//
// Only public APIs: ControlPlane, AgentApi/StartAgentApi, AdminApi, SqliteStore; admin
// requests go through cpp-httplib's SSLClient set up like the CLI's admin client.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/version_info.h>
#include <httplib.h>
#include <openssl/opensslv.h>
#include <openssl/ssl.h>
#include <nlohmann/json.hpp>

#include "core/certificate.h"
#include "core/csr.h"
#include "core/kek.h"
#include "core/keys.h"
#include "proto/agent.grpc.pb.h"
#include "resources/parse.h"
#include "resources/resource.h"
#include "server/admin_api.h"
#include "server/agent_api.h"
#include "server/control_plane.h"
#include "server/log.h"
#include "store/sqlite_store.h"

namespace sigil::bench {
namespace {

namespace pb = sigil::agent::v1;
using Steady = std::chrono::steady_clock;
using server::AgentApi;
using server::ControlPlane;

constexpr std::string_view kTrustDomain = "bench.example";
constexpr std::string_view kWebId = "spiffe://bench.example/ns/web";
constexpr auto kRpcDeadline = std::chrono::seconds(10);

// ---------------------------------------------------------------------------------------
// Small utilities.

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "sigil_control_plane_bench: " << what << "\n";
  std::exit(1);
}

template <typename T>
T Must(Result<T> r, const std::string& what) {
  if (!r.ok()) Die(what + ": " + r.error().ToString());
  return std::move(r).value();
}

double SecondsSince(Steady::time_point t0) {
  return std::chrono::duration<double>(Steady::now() - t0).count();
}

double Ms(Steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// User + system CPU time of the whole process (clients and server), in seconds.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto tv = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return tv(u.ru_utime) + tv(u.ru_stime);
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

int ProcessThreads() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("Threads:")) {
      return static_cast<int>(std::strtol(line.c_str() + 8, nullptr, 10));
    }
  }
  return -1;
}

// Nearest-rank percentile of `v` (sorted in place); 0 for an empty vector.
double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

std::string Fixed(double v, int decimals) {
  char buf[64];
  (void)std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Pad(std::string s, size_t width, bool left = false) {
  if (s.size() >= width) return s;
  std::string fill(width - s.size(), ' ');
  return left ? s + fill : fill + s;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// ---------------------------------------------------------------------------------------
// Flags: --name=value or --name value; integers unless noted.

struct Options {
  int nodes = 50;            // [1] distinct node credentials and channels
  int callers = 8;           // [1] concurrent caller threads (gRPC and in-process alike)
  double seconds = 10;       // [1] time bound per run
  int max_svids = 100000;    // [1] count bound per run
  int csr_pool = 1000;       // [1] pre-generated CSRs, used round robin
  int identities = 1;        // [1] WorkloadIdentity objects in the store (1 matches)
  int objects = 10000;       // [2] WorkloadIdentity documents in the apply
  int apply_runs = 3;        // [2] repetitions, each on fresh stores
  int streams = 1000;        // [3] Sync streams
  int stream_nodes = 1000;   // [3] distinct node credentials/channels the streams use
  int rounds = 5;            // [3] policy changes timed per configuration
  double idle_seconds = 3;   // [3] idle window (CPU of open streams) per configuration
  std::string dir = "/tmp";  // where the temp directory goes
  std::string only;          // comma-separated subset of svid,apply,fanout,events
  bool keep = false;         // keep the temp directory
};

void Usage() {
  std::cout << R"(usage: sigil_control_plane_bench [flags]
  --nodes N          [1] nodes (own node SVID and gRPC channel each)       (50)
  --callers N        [1] concurrent callers, gRPC and in-process baseline   (8)
  --seconds S        [1] time bound per run                                 (10)
  --max-svids N      [1] count bound per run                                (100000)
  --csr-pool N       [1] pre-generated CSRs, used round robin               (1000)
  --identities N     [1] WorkloadIdentity objects in the store              (1)
  --objects N        [2] WorkloadIdentity documents in one admin apply      (10000)
  --apply-runs N     [2] repetitions, each on fresh stores                  (3)
  --streams N        [3] Sync streams                                       (1000)
  --stream-nodes N   [3] distinct node credentials/channels for the streams (1000)
  --rounds N         [3] timed policy changes per configuration             (5)
  --idle-seconds S   [3] idle window measuring the CPU of open streams      (3)
  --only LIST        run a subset: svid,apply,fanout,events
  --dir DIR          parent of the temp directory                           (/tmp)
  --keep             keep the temp directory (SQLite files)
)";
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    if (name == "-h" || name == "--help") {
      Usage();
      std::exit(0);
    }
    if (!name.starts_with("--")) Die("unexpected argument " + name);
    name = name.substr(2);
    if (name == "keep") {
      o.keep = true;
      continue;
    }
    std::string value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      Die("--" + name + " needs a value");
    }
    auto integer = [&](int* out, int min) {
      char* end = nullptr;
      long v = std::strtol(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || v < min || v > 10'000'000) {
        Die("--" + name + ": \"" + value + "\" is not an integer >= " + std::to_string(min));
      }
      *out = static_cast<int>(v);
    };
    if (name == "nodes") {
      integer(&o.nodes, 1);
    } else if (name == "callers") {
      integer(&o.callers, 1);
    } else if (name == "seconds") {
      char* end = nullptr;
      o.seconds = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0' || o.seconds <= 0) Die("--seconds: bad value");
    } else if (name == "idle-seconds") {
      char* end = nullptr;
      o.idle_seconds = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0' || o.idle_seconds <= 0) {
        Die("--idle-seconds: bad value");
      }
    } else if (name == "max-svids") {
      integer(&o.max_svids, 1);
    } else if (name == "csr-pool") {
      integer(&o.csr_pool, 1);
    } else if (name == "identities") {
      integer(&o.identities, 1);
    } else if (name == "apply-runs") {
      integer(&o.apply_runs, 1);
    } else if (name == "objects") {
      integer(&o.objects, 1);
    } else if (name == "streams") {
      integer(&o.streams, 1);
    } else if (name == "stream-nodes") {
      integer(&o.stream_nodes, 1);
    } else if (name == "rounds") {
      integer(&o.rounds, 1);
    } else if (name == "dir") {
      o.dir = value;
    } else if (name == "only") {
      o.only = value;
    } else {
      Die("unknown flag --" + name + " (see --help)");
    }
  }
  o.stream_nodes = std::min(o.stream_nodes, o.streams);
  return o;
}

bool Enabled(const Options& o, std::string_view part) {
  if (o.only.empty()) return true;
  std::stringstream ss(o.only);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == part) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------
// An in-process control plane on its own SQLite file, with the agent API on 127.0.0.1:0.

struct NodeCredential {
  std::string name;
  std::string chain_pem;
  std::string key_pem;
};

// A node's own channel (and TCP/TLS connection: no subchannel sharing) to 127.0.0.1:port.
std::shared_ptr<grpc::Channel> NodeChannel(int port, const std::string& roots_pem,
                                           const NodeCredential& cred) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = roots_pem;
  ssl.pem_private_key = cred.key_pem;
  ssl.pem_cert_chain = cred.chain_pem;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), grpc::SslCredentials(ssl),
                                   args);
}

class Server {
 public:
  Server(const std::filesystem::path& dir, const std::string& db_name) {
    auto store = Must(store::SqliteStore::Open((dir / db_name).string()), "open store");
    auto kek = Must(core::Kek::LoadOrCreate((dir / (db_name + ".kek")).string()), "kek");
    server::ControlPlaneOptions options{
        {Must(core::TrustDomain::Parse(kTrustDomain), "trust domain")}, {}, {}};
    cp_ =
        Must(ControlPlane::Open(options, std::move(store), std::move(kek), sigil::Clock::System()),
             "open control plane");
    api_ = std::make_unique<AgentApi>(*cp_);
    auto cred = Must(cp_->IssueServerCredential({"localhost"}), "server credential");
    roots_pem_ = cp_->Bundle().X509AuthoritiesPem();
    server::ServerTlsIdentity tls{cred.chain_pem, std::move(cred.key_pem), roots_pem_};
    grpc_ = Must(server::StartAgentApi(*api_, "127.0.0.1:0", tls, &port_), "start agent API");
  }
  ~Server() {
    api_->Shutdown();
    grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  ControlPlane& cp() { return *cp_; }
  store::Store& store() { return cp_->store(); }

  // Joins nodes "<prefix>-<i>" in-process (CreateJoinToken + ControlPlane::JoinNode: the
  // work of the Join RPC minus its transport), each with a fresh P-256 key.
  std::vector<NodeCredential> JoinNodes(const std::string& prefix, int count) {
    std::vector<NodeCredential> out;
    out.reserve(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      std::string name = prefix + "-" + std::to_string(i);
      auto token = Must(cp_->CreateJoinToken(name, Seconds(3600), "bench"), "join token");
      auto key = Must(core::PrivateKey::Generate(core::KeyType::kEcP256), "node key");
      auto csr = Must(core::CreateCsrDer(key), "node CSR");
      auto joined = Must(cp_->JoinNode(token.text.view(), name, csr, "bench"), "join " + name);
      out.push_back({name, core::CertificatesToPem(joined.svid.chain),
                     std::string(Must(key.ToPkcs8Pem(), "node key PEM").view())});
    }
    return out;
  }

  std::shared_ptr<grpc::Channel> Channel(const NodeCredential& cred) const {
    return NodeChannel(port_, roots_pem_, cred);
  }
  int port() const { return port_; }
  const std::string& roots_pem() const { return roots_pem_; }

  // Stores every document of `yaml` the way the admin API does (canonical spec JSON).
  uint64_t ApplyYaml(const std::string& yaml) {
    auto parsed = Must(resources::ParseDocuments(yaml), "parse");
    std::vector<store::ResourceWrite> writes;
    for (const auto& r : parsed) {
      writes.push_back({std::string(resources::KindName(r.kind)), r.name,
                        resources::CanonicalSpecJson(r), store::WriteOp::kUpsert, std::nullopt});
    }
    return Must(store().Apply(writes, {}), "apply").revision;
  }

 private:
  std::unique_ptr<ControlPlane> cp_;
  std::unique_ptr<AgentApi> api_;
  std::unique_ptr<grpc::Server> grpc_;
  std::string roots_pem_;
  int port_ = 0;
};

// ---------------------------------------------------------------------------------------
// A bounded closed-loop run: `threads` callers each call `call(thread, index)` back to back
// until `max_calls` were claimed or `max_seconds` passed. `call` returns "" on success.

struct RunStats {
  uint64_t ok = 0;
  uint64_t errors = 0;
  double seconds = 0;
  double cpu_seconds = 0;
  std::vector<double> latency_ms;
  std::string first_error;

  double Rate() const { return seconds > 0 ? static_cast<double>(ok) / seconds : 0; }
};

RunStats RunClosedLoop(int threads, double max_seconds, int64_t max_calls,
                       const std::function<std::string(int, int64_t)>& call) {
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  std::atomic<int> finished{0};
  std::mutex mu;
  RunStats stats;
  std::vector<std::vector<double>> latency(static_cast<size_t>(threads));
  std::vector<uint64_t> errors(static_cast<size_t>(threads), 0);
  const double cpu0 = CpuSeconds();
  const auto t0 = Steady::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      auto& lat = latency[static_cast<size_t>(t)];
      lat.reserve(65536);
      while (!stop.load(std::memory_order_relaxed)) {
        int64_t i = next.fetch_add(1);
        if (i >= max_calls) break;
        auto c0 = Steady::now();
        std::string err = call(t, i);
        auto c1 = Steady::now();
        if (err.empty()) {
          lat.push_back(Ms(c1 - c0));
        } else {
          ++errors[static_cast<size_t>(t)];
          std::lock_guard lock(mu);
          if (stats.first_error.empty()) stats.first_error = err;
        }
      }
      finished.fetch_add(1);
    });
  }
  const auto deadline = t0 + std::chrono::duration<double>(max_seconds);
  while (finished.load() < threads && Steady::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop.store(true);
  for (auto& w : workers) w.join();
  stats.seconds = SecondsSince(t0);
  stats.cpu_seconds = CpuSeconds() - cpu0;
  for (size_t t = 0; t < latency.size(); ++t) {
    stats.ok += latency[t].size();
    stats.errors += errors[t];
    stats.latency_ms.insert(stats.latency_ms.end(), latency[t].begin(), latency[t].end());
  }
  return stats;
}

pb::AttestedProcess WebProcess() {
  pb::AttestedProcess p;
  p.set_pid(4242);
  p.set_uid(1000);
  p.set_gid(1000);
  p.set_exe_path("/usr/bin/web");
  p.set_exe_sha256(std::string(64, 'a'));
  p.set_cgroup("/system.slice/web.service");
  p.add_selectors("unix:gid:1000");
  p.add_selectors("unix:path:/usr/bin/web");
  p.add_selectors("unix:uid:1000");
  return p;
}

server::AttestedProcessInfo WebProcessInfo() {
  pb::AttestedProcess p = WebProcess();
  server::AttestedProcessInfo out;
  out.pid = p.pid();
  out.uid = p.uid();
  out.gid = p.gid();
  out.exe_path = p.exe_path();
  out.exe_sha256 = p.exe_sha256();
  out.cgroup = p.cgroup();
  out.selectors.assign(p.selectors().begin(), p.selectors().end());
  return out;
}

std::string Hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

std::string Unhex(std::string_view hex) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1])));
  }
  return out;
}

// One SignWorkloadSVID call per index: node i % nodes, CSR i % pool.
class SvidCaller {
 public:
  SvidCaller(int port, const std::string& roots_pem, const std::vector<NodeCredential>& nodes,
             std::vector<std::string> csrs)
      : csrs_(std::move(csrs)), process_(WebProcess()) {
    for (const auto& n : nodes) {
      stubs_.push_back(pb::AgentService::NewStub(NodeChannel(port, roots_pem, n)));
    }
  }
  size_t nodes() const { return stubs_.size(); }

  std::string Call(int64_t i) const {
    pb::SignWorkloadSVIDRequest req;
    req.set_csr(csrs_[static_cast<size_t>(i) % csrs_.size()]);
    req.set_spiffe_id(std::string(kWebId));
    *req.mutable_process() = process_;
    pb::SignWorkloadSVIDResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
    grpc::Status st =
        stubs_[static_cast<size_t>(i) % stubs_.size()]->SignWorkloadSVID(&ctx, req, &resp);
    if (!st.ok()) return std::to_string(st.error_code()) + " " + st.error_message();
    if (resp.svid_chain().empty()) return "empty chain";
    return "";
  }

 private:
  std::vector<std::unique_ptr<pb::AgentService::Stub>> stubs_;
  std::vector<std::string> csrs_;
  pb::AttestedProcess process_;
};

// Child mode (--svid-client CONFIG): the simulated agents of [1] in their own process, so that
// the server's CPU time can be measured apart from theirs. Prints "start", then "stop" around
// the timed run, then one JSON line with the results.
int SvidClientMain(const std::string& config_path) {
  std::ifstream in(config_path);
  const nlohmann::json cfg = nlohmann::json::parse(in);
  std::vector<NodeCredential> nodes;
  for (const auto& n : cfg.at("nodes")) {
    nodes.push_back({n.at("name"), n.at("chain"), n.at("key")});
  }
  std::vector<std::string> csrs;
  for (const auto& c : cfg.at("csrs")) csrs.push_back(Unhex(c.get<std::string>()));
  const SvidCaller caller(cfg.at("port"), cfg.at("roots"), nodes, std::move(csrs));
  // Warm-up (untimed): connect every channel (TLS handshake) and issue once per node.
  for (int64_t i = 0; i < static_cast<int64_t>(caller.nodes()); ++i) {
    std::string err = caller.Call(i);
    if (!err.empty()) Die("warm-up SignWorkloadSVID: " + err);
  }
  std::cout << "start" << std::endl;
  RunStats s = RunClosedLoop(cfg.at("callers"), cfg.at("seconds"), cfg.at("max"),
                             [&](int, int64_t i) { return caller.Call(i); });
  std::cout << "stop" << std::endl;
  nlohmann::json out = {{"ok", s.ok},
                        {"errors", s.errors},
                        {"seconds", s.seconds},
                        {"cpu_seconds", s.cpu_seconds},
                        {"p50", Percentile(s.latency_ms, 50)},
                        {"p99", Percentile(s.latency_ms, 99)},
                        {"first_error", s.first_error}};
  std::cout << out.dump() << std::endl;
  return 0;
}

struct SvidRow {
  std::string label;
  uint64_t ok = 0;
  uint64_t errors = 0;
  double seconds = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double server_cpu_s = 0;
  double client_cpu_s = -1;  // < 0: the callers are the server's own threads
  std::string first_error;

  double Rate() const { return seconds > 0 ? static_cast<double>(ok) / seconds : 0; }
  double PerCall(double cpu) const { return ok > 0 ? cpu * 1e6 / static_cast<double>(ok) : 0; }
};

SvidRow RowOf(std::string label, RunStats& s) {
  SvidRow row;
  row.label = std::move(label);
  row.ok = s.ok;
  row.errors = s.errors;
  row.seconds = s.seconds;
  row.p50_ms = Percentile(s.latency_ms, 50);
  row.p99_ms = Percentile(s.latency_ms, 99);
  row.server_cpu_s = s.cpu_seconds;
  row.first_error = s.first_error;
  return row;
}

// Runs the callers in a child process (this binary, --svid-client) against `srv`; this
// process's CPU time between the child's "start" and "stop" is the server's.
SvidRow RunSvidClientProcess(const Options& o, const std::filesystem::path& dir, const Server& srv,
                             const std::vector<NodeCredential>& nodes,
                             const std::vector<std::string>& csrs) {
  nlohmann::json cfg = {{"port", srv.port()},
                        {"roots", srv.roots_pem()},
                        {"callers", o.callers},
                        {"seconds", o.seconds},
                        {"max", o.max_svids}};
  for (const auto& n : nodes) {
    cfg["nodes"].push_back({{"name", n.name}, {"chain", n.chain_pem}, {"key", n.key_pem}});
  }
  for (const auto& c : csrs) cfg["csrs"].push_back(Hex(Bytes(c)));
  const std::filesystem::path cfg_path = dir / "svid-client.json";
  {
    std::ofstream out(cfg_path);
    out << cfg.dump();
    if (!out) Die("cannot write " + cfg_path.string());
  }
  std::filesystem::permissions(
      cfg_path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) Die("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  std::string flag = "--svid-client";
  std::string path = cfg_path.string();
  char* argv[] = {exe.data(), flag.data(), path.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv, environ) != 0) {
    Die("cannot start the client process");
  }
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  FILE* from_child = fdopen(fds[0], "r");
  double cpu0 = 0;
  double cpu1 = 0;
  std::string result;
  char line[4096];
  while (std::fgets(line, sizeof line, from_child) != nullptr) {
    std::string_view text(line);
    if (text == "start\n") {
      cpu0 = CpuSeconds();
    } else if (text == "stop\n") {
      cpu1 = CpuSeconds();
    } else {
      result += text;
    }
  }
  (void)std::fclose(from_child);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || result.empty()) {
    Die("the client process failed (wait status " + std::to_string(status) + ")");
  }
  const nlohmann::json r = nlohmann::json::parse(result);
  SvidRow row;
  row.label = "agent API SignWorkloadSVID (gRPC)";
  row.ok = r.at("ok");
  row.errors = r.at("errors");
  row.seconds = r.at("seconds");
  row.p50_ms = r.at("p50");
  row.p99_ms = r.at("p99");
  row.server_cpu_s = cpu1 - cpu0;
  row.client_cpu_s = r.at("cpu_seconds");
  row.first_error = r.at("first_error");
  return row;
}

std::string RunRow(const SvidRow& s) {
  std::string row = Pad(s.label, 34, true) + Pad(std::to_string(s.ok), 8) +
                    Pad(Fixed(s.seconds, 2), 7) + Pad(Fixed(s.Rate(), 0), 8) +
                    Pad(Fixed(s.p50_ms, 2), 8) + Pad(Fixed(s.p99_ms, 2), 8) +
                    Pad(Fixed(s.PerCall(s.server_cpu_s), 0), 9) +
                    Pad(s.client_cpu_s < 0 ? "-" : Fixed(s.PerCall(s.client_cpu_s), 0), 9) +
                    Pad(std::to_string(s.errors), 7);
  if (!s.first_error.empty()) row += "\n      first error: " + s.first_error;
  return row;
}

// ---------------------------------------------------------------------------------------
// [1] Workload SVID issuance.

void BenchSvid(const Options& o, const std::filesystem::path& dir) {
  std::cout << "\n[1] Workload X.509-SVID issuance: " << o.nodes << " nodes (own node SVID + own "
            << "gRPC/TLS channel each), " << o.callers << " concurrent callers, bound "
            << Fixed(o.seconds, 0) << " s or " << o.max_svids << " SVIDs per run\n";
  Server srv(dir, "svid.db");
  std::string yaml;
  for (int i = 0; i < o.identities; ++i) {
    // The matching identity is the last one by name, so matching walks all of them.
    std::string name = i + 1 == o.identities ? "web" : "decoy-" + std::to_string(i);
    std::string id = i + 1 == o.identities ? std::string(kWebId)
                                           : "spiffe://bench.example/ns/decoy-" + std::to_string(i);
    yaml += "apiVersion: sigil.dev/v1alpha1\nkind: WorkloadIdentity\nmetadata: {name: " + name +
            "}\nspec:\n  spiffeId: " + id +
            "\n  selectors: [unix:uid:1000, unix:path:/usr/bin/web]\n  dnsNames: [web.internal]\n"
            "  ttl: 30m\n---\n";
  }
  srv.ApplyYaml(yaml);

  auto t_join = Steady::now();
  std::vector<NodeCredential> nodes = srv.JoinNodes("svid-node", o.nodes);
  const double join_s = SecondsSince(t_join);

  // Agents generate workload keys and CSRs; that is not the server's cost, so it is done here
  // up front and the pool is reused round robin (the server does the full CSR parse, proof of
  // possession check and issuance for every request regardless).
  auto t_csr = Steady::now();
  std::vector<std::string> csrs;
  for (int i = 0; i < o.csr_pool; ++i) {
    auto key = Must(core::PrivateKey::Generate(core::KeyType::kEcP256), "workload key");
    auto der = Must(core::CreateCsrDer(key), "workload CSR");
    csrs.emplace_back(der.begin(), der.end());
  }
  const double csr_ms = SecondsSince(t_csr) * 1000 / o.csr_pool;

  SvidRow over_grpc = RunSvidClientProcess(o, dir, srv, nodes, csrs);

  const server::AttestedProcessInfo info = WebProcessInfo();
  RunStats direct_stats =
      RunClosedLoop(o.callers, o.seconds, o.max_svids, [&](int, int64_t i) -> std::string {
        const std::string& csr = csrs[static_cast<size_t>(i) % csrs.size()];
        auto svid = srv.cp().SignWorkloadSvid(nodes[static_cast<size_t>(i) % nodes.size()].name,
                                              std::string(kWebId), Bytes(csr), info);
        return svid.ok() ? "" : svid.error().ToString();
      });
  SvidRow direct = RowOf("ControlPlane::SignWorkloadSvid", direct_stats);

  // The store's share: every issuance appends one audit record in its own fsynced
  // transaction on the store's single connection; alone, that is a ceiling.
  store::AuditEvent event;
  event.type = "svid.issue";
  event.actor = "bench";
  event.node = "svid-node-0";
  event.identity = std::string(kWebId);
  event.pid = 4242;
  event.exe = "/usr/bin/web";
  event.details_json = nlohmann::json{
      {"workload_identity", "web"},
      {"exe_sha256", std::string(64, 'a')},
      {"uid", 1000},
      {"gid", 1000},
      {"cgroup", "/system.slice/web.service"},
      {"container_id", ""},
      {"serial", std::string(32, 'f')},
      {"expires",
       1800000000}}.dump();
  RunStats audit_stats = RunClosedLoop(o.callers, std::min(o.seconds, 3.0), o.max_svids,
                                       [&](int, int64_t) -> std::string {
                                         auto r = srv.store().AppendAudit(std::span(&event, 1));
                                         return r.ok() ? "" : r.error().ToString();
                                       });
  SvidRow audit = RowOf("Store::AppendAudit alone (ceiling)", audit_stats);

  std::cout
      << "  setup: " << o.nodes << " nodes joined in-process in " << Fixed(join_s, 2) << " s; "
      << o.csr_pool << " CSRs pre-generated (" << Fixed(csr_ms, 3) << " ms each, excluded); "
      << o.identities
      << " WorkloadIdentity object(s) in the store; the gRPC callers run in a child process\n";
  std::cout << "  " << Pad("path", 34, true) << Pad("SVIDs", 8) << Pad("secs", 7) << Pad("per s", 8)
            << Pad("p50 ms", 8) << Pad("p99 ms", 8) << Pad("srv CPU", 9) << Pad("cli CPU", 9)
            << Pad("errors", 7) << "\n";
  for (const SvidRow* row : {&over_grpc, &direct, &audit})
    std::cout << "  " << RunRow(*row) << "\n";
  std::cout << "  (srv/cli CPU = CPU microseconds per SVID used by the server process / by the "
               "client process; both share the same cores)\n";
  const double direct_cpu = direct.PerCall(direct.server_cpu_s);
  const double grpc_cpu = over_grpc.PerCall(over_grpc.server_cpu_s);
  std::cout << "  ratios gRPC / in-process: throughput "
            << Fixed(direct.Rate() > 0 ? over_grpc.Rate() / direct.Rate() : 0, 2)
            << ", server CPU per SVID " << Fixed(direct_cpu > 0 ? grpc_cpu / direct_cpu : 0, 2)
            << "x\n";
  const double cores = std::thread::hardware_concurrency();
  std::cout << "  target >= 2000 SVIDs/s over gRPC: "
            << (over_grpc.Rate() >= 2000 ? "met" : "MISSED") << " ("
            << Fixed(over_grpc.Rate() / 2000 * 100, 0) << "% of target); bounds: server CPU "
            << Fixed(cores * 1e6 / std::max(1.0, grpc_cpu), 0) << "/s on " << Fixed(cores, 0)
            << " dedicated cores, serial audit commits " << Fixed(audit.Rate(), 0) << "/s\n";
}

// ---------------------------------------------------------------------------------------
// [2] Admin API apply of N WorkloadIdentity objects.

std::string WorkloadDocuments(int count) {
  std::string yaml;
  yaml.reserve(static_cast<size_t>(count) * 260);
  char name[32];
  for (int i = 0; i < count; ++i) {
    (void)std::snprintf(name, sizeof name, "wl-%05d", i);
    yaml += "apiVersion: sigil.dev/v1alpha1\nkind: WorkloadIdentity\nmetadata: {name: ";
    yaml += name;
    yaml += "}\nspec:\n  spiffeId: spiffe://bench.example/ns/team-" + std::to_string(i % 100) +
            "/" + name + "\n  selectors: [unix:uid:" + std::to_string(10000 + i) +
            ", unix:path:/usr/bin/" + name + "]\n  dnsNames: [" + name +
            ".internal]\n  ttl: 30m\n---\n";
  }
  return yaml;
}

void WriteFile(const std::filesystem::path& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) Die("cannot write " + path.string());
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

// One POST to the admin API on 127.0.0.1:port with the admin credential in `cred_dir`
// (cert.pem, key.pem, bundle.pem), over cpp-httplib as the CLI's admin client does. The server
// chain is verified against bundle.pem (its SPIFFE ID is not checked here).
std::pair<int, std::string> AdminPost(int port, const std::filesystem::path& cred_dir,
                                      const std::string& path, const std::string& body) {
  (void)std::signal(SIGPIPE, SIG_IGN);  // a server closing early must be an error, not a crash
  httplib::SSLClient client("127.0.0.1", port);
  SSL_CTX* ctx = client.ssl_context();
  if (ctx == nullptr) Die("admin client: TLS setup failed");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, (cred_dir / "cert.pem").c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, (cred_dir / "key.pem").c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(ctx, (cred_dir / "bundle.pem").c_str(), nullptr) != 1) {
    Die("admin client: cannot load the admin credential from " + cred_dir.string());
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  client.enable_server_certificate_verification(false);  // no hostname check: chain above
  client.set_connection_timeout(10);
  client.set_read_timeout(60);
  client.set_write_timeout(60);
  auto result = client.Post(path, body, "application/yaml");
  if (!result) Die("admin client: " + httplib::to_string(result.error()));
  return {result->status, result->body};
}

struct ApplyTimes {
  double admin_s = 0;
  double admin_cpu_s = 0;
  double parse_s = 0;
  double store_s = 0;
  double store_cpu_s = 0;
};

// One repetition on fresh stores: the admin API apply, then the store-only baseline.
ApplyTimes ApplyOnce(const std::filesystem::path& dir, int rep, const std::string& yaml,
                     size_t objects) {
  ApplyTimes t;
  const std::string suffix = std::to_string(rep);
  Server srv(dir, "apply-" + suffix + ".db");
  std::ostringstream log_sink;
  server::Logger log(log_sink, server::LogFormat::kText);
  server::AdminApiOptions admin_options;
  admin_options.port = 0;
  auto admin = Must(server::AdminApi::Start(srv.cp(), log, admin_options), "start admin API");
  auto cred = Must(srv.cp().IssueAdminCredential(false, "bench"), "admin credential");
  const std::filesystem::path cred_dir = dir / ("admin-" + suffix);
  std::filesystem::create_directories(cred_dir);
  WriteFile(cred_dir / "cert.pem", cred.chain_pem);
  WriteFile(cred_dir / "key.pem", cred.key_pem.view());
  WriteFile(cred_dir / "bundle.pem", srv.cp().Bundle().X509AuthoritiesPem());

  // What `sigil apply` does: client context, connect, TLS 1.2+ mTLS handshake, POST, response.
  double cpu0 = CpuSeconds();
  auto t0 = Steady::now();
  auto [status, body] = AdminPost(admin->port(), cred_dir, "/apis/sigil.dev/v1alpha1/apply", yaml);
  t.admin_s = SecondsSince(t0);
  t.admin_cpu_s = CpuSeconds() - cpu0;
  if (status != 200) Die("admin apply: HTTP " + std::to_string(status) + ": " + body);
  const size_t results = nlohmann::json::parse(body).at("results").size();
  const size_t stored = Must(srv.store().List("WorkloadIdentity"), "list").items.size();
  if (results != objects || stored != objects) {
    Die("admin apply: " + std::to_string(results) + " results, " + std::to_string(stored) +
        " stored");
  }
  admin->Stop();

  // Baseline: the same writes and audit events (what ApplyBatch builds) into a fresh store.
  auto base_store =
      Must(store::SqliteStore::Open((dir / ("apply-baseline-" + suffix + ".db")).string()), "open");
  t0 = Steady::now();
  auto parsed = Must(resources::ParseDocuments(yaml), "parse");
  t.parse_s = SecondsSince(t0);
  std::vector<store::ResourceWrite> writes;
  std::vector<store::AuditEvent> events;
  for (size_t i = 0; i < parsed.size(); ++i) {
    store::ResourceWrite w;
    w.kind = std::string(resources::KindName(parsed[i].kind));
    w.name = parsed[i].name;
    w.spec_json = resources::CanonicalSpecJson(parsed[i]);
    w.expected_version = parsed[i].resource_version;
    store::AuditEvent e;
    e.type = "resource.apply";
    e.actor = cred.spiffe_id;
    e.details_json = nlohmann::json{{"kind", w.kind}, {"name", w.name}, {"document", i + 1}}.dump();
    writes.push_back(std::move(w));
    events.push_back(std::move(e));
  }
  cpu0 = CpuSeconds();
  t0 = Steady::now();
  auto applied = Must(base_store->Apply(writes, events), "store apply");
  t.store_s = SecondsSince(t0);
  t.store_cpu_s = CpuSeconds() - cpu0;
  if (applied.writes.size() != writes.size()) Die("store apply: wrong result count");
  return t;
}

void BenchApply(const Options& o, const std::filesystem::path& dir) {
  const std::string yaml = WorkloadDocuments(o.objects);
  std::cout << "\n[2] Apply of " << o.objects << " WorkloadIdentity objects: one multi-document "
            << "YAML body of " << Fixed(static_cast<double>(yaml.size()) / 1e6, 2) << " MB, "
            << o.apply_runs << " runs on fresh stores (median, min-max)\n";
  std::vector<ApplyTimes> runs;
  for (int rep = 0; rep < o.apply_runs; ++rep) {
    runs.push_back(ApplyOnce(dir, rep, yaml, static_cast<size_t>(o.objects)));
  }
  auto stat = [&](double ApplyTimes::*field) {
    std::vector<double> v;
    for (const auto& r : runs) v.push_back(r.*field);
    std::sort(v.begin(), v.end());
    return std::array<double, 3>{Percentile(v, 50), v.front(), v.back()};
  };
  const auto admin = stat(&ApplyTimes::admin_s);
  const auto admin_cpu = stat(&ApplyTimes::admin_cpu_s);
  const auto store_t = stat(&ApplyTimes::store_s);
  const auto store_cpu = stat(&ApplyTimes::store_cpu_s);
  const auto parse = stat(&ApplyTimes::parse_s);
  const double n = o.objects;
  auto row = [&](const std::string& label, const std::array<double, 3>& secs,
                 const std::string& cpu) {
    std::cout << "  " << Pad(label, 44, true) << Pad(Fixed(secs[0], 3), 8)
              << Pad(Fixed(secs[1], 3) + "-" + Fixed(secs[2], 3), 13)
              << Pad(Fixed(n / secs[0], 0), 11) << Pad(cpu, 8)
              << Pad(Fixed(store_t[0] / secs[0], 2), 7) << "\n";
  };
  std::cout << "  " << Pad("path", 48, true) << Pad("secs", 8) << Pad("min-max", 13)
            << Pad("objects/s", 11) << Pad("CPU s", 8) << Pad("ratio", 7) << "\n";
  row("admin API POST /apply (HTTPS, mTLS, client)", admin, Fixed(admin_cpu[0], 2));
  row("store::Store::Apply (same writes + audit)", store_t, Fixed(store_cpu[0], 2));
  row("  part: resources::ParseDocuments alone", parse, "");
  std::cout << "  (ratio = store-only seconds / path seconds; the admin path = parse + validate "
               "+ store + TLS/HTTP + a JSON response with one entry per object)\n";
}

// ---------------------------------------------------------------------------------------
// [3] Sync fan-out.

class FanoutState {
 public:
  explicit FanoutState(int rounds) : deltas_(static_cast<size_t>(rounds), 0) {}

  void Snapshot() { Bump(snapshots_); }
  void Delta(int round) { Bump(deltas_[static_cast<size_t>(round)]); }
  void Done(const grpc::Status& status) {
    std::lock_guard lock(mu_);
    ++done_;
    if (status.error_code() != grpc::StatusCode::CANCELLED && !status.ok() &&
        first_error_.empty()) {
      first_error_ = std::to_string(status.error_code()) + " " + status.error_message();
    }
    cv_.notify_all();
  }

  // Waits until the counter reaches `target`; false on timeout.
  bool WaitSnapshots(int target, std::chrono::seconds timeout) {
    return Wait(snapshots_, target, timeout);
  }
  bool WaitDeltas(int round, int target, std::chrono::seconds timeout) {
    return Wait(deltas_[static_cast<size_t>(round)], target, timeout);
  }
  bool WaitDone(int target, std::chrono::seconds timeout) { return Wait(done_, target, timeout); }
  int snapshots() {
    std::lock_guard lock(mu_);
    return snapshots_;
  }
  int deltas(int round) {
    std::lock_guard lock(mu_);
    return deltas_[static_cast<size_t>(round)];
  }
  std::string first_error() {
    std::lock_guard lock(mu_);
    return first_error_;
  }

 private:
  void Bump(int& counter) {
    std::lock_guard lock(mu_);
    if (++counter == waiting_for_) cv_.notify_all();
  }
  bool Wait(int& counter, int target, std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    waiting_for_ = target;
    bool ok = cv_.wait_for(lock, timeout, [&] { return counter >= target; });
    waiting_for_ = -1;
    return ok;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_for_ = -1;
  int snapshots_ = 0;
  int done_ = 0;
  std::vector<int> deltas_;
  std::string first_error_;
};

constexpr std::string_view kRoundPrefix = "fanout-r";

// One simulated agent's Sync stream on the gRPC callback API (no thread per stream here).
class SyncStream final : public grpc::ClientReadReactor<pb::SyncResponse> {
 public:
  SyncStream(FanoutState& state, pb::AgentService::Stub& stub, int rounds)
      : state_(state), arrival_(static_cast<size_t>(rounds)) {
    stub.async()->Sync(&ctx_, &req_, this);
    StartRead(&msg_);
    StartCall();
  }
  void Cancel() { ctx_.TryCancel(); }
  Steady::time_point arrival(int round) const { return arrival_[static_cast<size_t>(round)]; }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    const auto now = Steady::now();
    if (msg_.snapshot()) {
      state_.Snapshot();
    } else {
      for (const auto& r : msg_.upserts()) {
        if (r.kind() != "AccessPolicy" || !r.name().starts_with(kRoundPrefix)) continue;
        long round = std::strtol(r.name().c_str() + kRoundPrefix.size(), nullptr, 10);
        if (round < 0 || static_cast<size_t>(round) >= arrival_.size()) continue;
        arrival_[static_cast<size_t>(round)] = now;
        state_.Delta(static_cast<int>(round));
      }
    }
    StartRead(&msg_);
  }
  void OnDone(const grpc::Status& status) override { state_.Done(status); }

 private:
  FanoutState& state_;
  grpc::ClientContext ctx_;
  pb::SyncRequest req_;
  pb::SyncResponse msg_;
  std::vector<Steady::time_point> arrival_;
};

struct RoundResult {
  double commit_ms = 0;  // Store::Apply of the policy (fsynced commit)
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  int received = 0;
};

struct FanoutResult {
  int streams = 0;
  double open_s = 0;      // open every stream and receive every snapshot
  double idle_cores = 0;  // process CPU while all streams sit idle
  int threads = 0;        // process threads with the streams open
  std::vector<RoundResult> rounds;
  std::string error;
};

// Opens `count` streams over `stubs` (round robin), waits for their snapshots, measures idle
// CPU, then times `rounds` policy commits (round numbers first_round...).
FanoutResult RunFanout(Server& srv, std::vector<std::unique_ptr<pb::AgentService::Stub>>& stubs,
                       int count, int first_round, int rounds, int total_rounds,
                       double idle_seconds) {
  FanoutResult out;
  out.streams = count;
  FanoutState state(total_rounds);
  std::vector<std::unique_ptr<SyncStream>> streams;
  streams.reserve(static_cast<size_t>(count));
  auto t0 = Steady::now();
  for (int i = 0; i < count; ++i) {
    streams.push_back(std::make_unique<SyncStream>(
        state, *stubs[static_cast<size_t>(i) % stubs.size()], total_rounds));
  }
  if (!state.WaitSnapshots(count, std::chrono::seconds(60))) {
    out.error = "only " + std::to_string(state.snapshots()) + " of " + std::to_string(count) +
                " snapshots arrived within 60 s " + state.first_error();
  } else {
    out.open_s = SecondsSince(t0);
    out.threads = ProcessThreads();
    // Idle cost of the open streams (server-side waits and re-checks; clients do nothing).
    double cpu0 = CpuSeconds();
    auto idle0 = Steady::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds));
    out.idle_cores = (CpuSeconds() - cpu0) / SecondsSince(idle0);
    for (int r = first_round; r < first_round + rounds; ++r) {
      const std::string name = std::string(kRoundPrefix) + std::to_string(r);
      auto parsed =
          Must(resources::ParseDocuments(
                   "apiVersion: sigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: " + name +
                   "}\nspec:\n  sources: [\"" + std::string(kWebId) +
                   "\"]\n  destinations: [db]\n  action: allow\n"),
               "policy");
      store::ResourceWrite w{"AccessPolicy", name, resources::CanonicalSpecJson(parsed.at(0)),
                             store::WriteOp::kUpsert, std::nullopt};
      store::AuditEvent e;
      e.type = "resource.apply";
      e.actor = "spiffe://bench.example/sigil/admin";
      e.details_json = nlohmann::json{{"kind", w.kind}, {"name", w.name}, {"document", 1}}.dump();
      RoundResult rr;
      const auto c0 = Steady::now();
      Must(srv.store().Apply(std::span(&w, 1), std::span(&e, 1)), "policy apply");
      rr.commit_ms = Ms(Steady::now() - c0);
      bool all = state.WaitDeltas(r, count, std::chrono::seconds(30));
      rr.received = state.deltas(r);
      std::vector<double> lat;
      for (const auto& s : streams) {
        if (s->arrival(r) != Steady::time_point{}) lat.push_back(Ms(s->arrival(r) - c0));
      }
      rr.max_ms = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end());
      rr.p50_ms = Percentile(lat, 50);
      rr.p99_ms = Percentile(lat, 99);
      out.rounds.push_back(rr);
      if (!all) {
        out.error = "round " + std::to_string(r) + ": only " + std::to_string(rr.received) +
                    " of " + std::to_string(count) + " streams got the delta within 30 s";
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  }
  for (auto& s : streams) s->Cancel();
  if (!state.WaitDone(count, std::chrono::seconds(30))) {
    // Never free a reactor gRPC may still call into.
    for (auto& s : streams) (void)s.release();
    if (out.error.empty()) out.error = "streams did not finish after cancellation";
  }
  return out;
}

void PrintFanout(const std::string& label, const FanoutResult& f) {
  for (size_t i = 0; i < f.rounds.size(); ++i) {
    const RoundResult& r = f.rounds[i];
    std::cout << "  " << Pad(i == 0 ? label : "", 22, true) << Pad(std::to_string(i + 1), 6)
              << Pad(Fixed(r.commit_ms, 2), 10) << Pad(Fixed(r.p50_ms, 2), 9)
              << Pad(Fixed(r.p99_ms, 2), 9) << Pad(Fixed(r.max_ms, 2), 9)
              << Pad(std::to_string(r.received), 9) << "\n";
  }
  if (!f.error.empty()) std::cout << "  ERROR: " << f.error << "\n";
}

double MedianOf(const FanoutResult& f, double RoundResult::*field) {
  std::vector<double> v;
  for (const auto& r : f.rounds) v.push_back(r.*field);
  return Percentile(v, 50);
}

void BenchFanout(const Options& o, const std::filesystem::path& dir) {
  std::cout << "\n[3] Sync fan-out: " << o.streams << " streams over " << o.stream_nodes
            << " node credentials (own channel each), one AccessPolicy commit per round, "
            << o.rounds << " rounds\n";
  Server srv(dir, "fanout.db");
  srv.ApplyYaml(R"(apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {name: web}
spec:
  spiffeId: spiffe://bench.example/ns/web
  selectors: [unix:uid:1000, unix:path:/usr/bin/web]
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: db}
spec:
  mode: mutual
  addresses: ["db.internal:5432"]
  identity: spiffe://bench.example/ns/db
)");
  auto t_join = Steady::now();
  std::vector<NodeCredential> nodes = srv.JoinNodes("agent", o.stream_nodes);
  const double join_s = SecondsSince(t_join);
  std::vector<std::unique_ptr<pb::AgentService::Stub>> stubs;
  for (const auto& n : nodes) stubs.push_back(pb::AgentService::NewStub(srv.Channel(n)));
  const int threads_before = ProcessThreads();

  std::vector<std::unique_ptr<pb::AgentService::Stub>> one;
  one.push_back(pb::AgentService::NewStub(srv.Channel(nodes.front())));
  FanoutResult base = RunFanout(srv, one, 1, 0, o.rounds, 2 * o.rounds, o.idle_seconds);
  FanoutResult full =
      RunFanout(srv, stubs, o.streams, o.rounds, o.rounds, 2 * o.rounds, o.idle_seconds);

  std::cout << "  setup: " << o.stream_nodes << " nodes joined in-process in " << Fixed(join_s, 2)
            << " s; process threads before streams: " << threads_before << "\n";
  std::cout << "  " << Pad("streams", 8) << Pad("open+snapshot s", 17) << Pad("threads", 9)
            << Pad("idle cores", 12) << "\n";
  for (const FanoutResult* f : {&base, &full}) {
    std::cout << "  " << Pad(std::to_string(f->streams), 8) << Pad(Fixed(f->open_s, 3), 17)
              << Pad(std::to_string(f->threads), 9) << Pad(Fixed(f->idle_cores, 3), 12) << "\n";
  }
  std::cout << "  delivery latency, from just before the policy's Store::Apply to the delta's "
               "arrival at each stream (ms):\n";
  std::cout << "  " << Pad("", 22, true) << Pad("round", 6) << Pad("commit", 10) << Pad("p50", 9)
            << Pad("p99", 9) << Pad("max", 9) << Pad("streams", 9) << "\n";
  PrintFanout("1 stream (baseline)", base);
  PrintFanout(std::to_string(o.streams) + " streams", full);
  const double base_max = MedianOf(base, &RoundResult::max_ms);
  const double full_max = MedianOf(full, &RoundResult::max_ms);
  double worst = 0;
  for (const auto& r : full.rounds) worst = std::max(worst, r.max_ms);
  std::cout << "  time until every stream had the delta, median over rounds: " << Fixed(full_max, 1)
            << " ms with " << o.streams << " streams vs " << Fixed(base_max, 1)
            << " ms with 1 (ratio " << Fixed(base_max > 0 ? full_max / base_max : 0, 0)
            << "x); worst round " << Fixed(worst, 1) << " ms\n";
  std::cout << "  target < 1000 ms (worst round): "
            << (full.error.empty() && worst < 1000 ? "met" : "MISSED") << "\n";
}

// ---------------------------------------------------------------------------------------
// [4] Agent event ingestion: what the server spends per audit record an agent reports, in the
// batches agents send (32 records per report), in-process. Two record shapes: one request per
// record (what agents sent before) and 32 (a connection's batch of injected requests,
// dataplane/proxy/inject_audit.h). Baseline: Store::AppendAudit of the same records already
// built.

void BenchEventsBatch(const std::filesystem::path& dir, size_t kBatch, size_t kRequests) {
  const int kBatches = static_cast<int>(std::max<size_t>(51200 / (kBatch * kRequests), 40));
  std::cout << "\n[4] Agent event ingestion: " << kBatches << " reports of " << kBatch
            << " dataplane.inject records of " << kRequests
            << " request(s) each, in-process (no gRPC)\n";
  Server srv(dir, "events-" + std::to_string(kBatch) + "x" + std::to_string(kRequests) + ".db");
  std::vector<ControlPlane::AgentEventIn> batch;
  for (size_t i = 0; i < kBatch; ++i) {
    ControlPlane::AgentEventIn e;
    e.type = "dataplane.inject";
    e.time_unix_ms = 1800000000000 + static_cast<int64_t>(i);
    e.identity = "spiffe://bench.example/bench/wrk";
    e.pid = 4242;
    e.exe = "/usr/bin/wrk";
    nlohmann::json requests = nlohmann::json::array();
    for (size_t r = 0; r < kRequests; ++r) {
      requests.push_back({{"time_unix_ms", 1800000000000 + static_cast<int64_t>(i * 100 + r)},
                          {"method", "GET"},
                          {"host", "10.80.0.2"},
                          {"path", "/v1/items/" + std::to_string(i * 100 + r)}});
    }
    e.details_json =
        nlohmann::json{{"binding", "bench-bearer"}, {"service", "api"}, {"requests", requests}}
            .dump();
    batch.push_back(std::move(e));
  }
  auto run = [&](const std::function<void()>& one) {
    const double cpu0 = CpuSeconds();
    const auto t0 = Steady::now();
    for (int b = 0; b < kBatches; ++b) one();
    const double n = static_cast<double>(static_cast<size_t>(kBatches) * kBatch);
    return std::pair<double, double>{SecondsSince(t0) * 1e6 / n, (CpuSeconds() - cpu0) * 1e6 / n};
  };
  const auto [record_us, record_cpu] =
      run([&] { Must(srv.cp().RecordAgentEvents("agent-0", batch), "RecordAgentEvents"); });
  // The records RecordAgentEvents builds, appended directly.
  std::vector<store::AuditEvent> built;
  for (const auto& e : batch) {
    store::AuditEvent a;
    a.type = e.type;
    a.actor = "agent:agent-0";
    a.node = "agent-0";
    a.identity = e.identity;
    a.pid = e.pid;
    a.exe = e.exe;
    auto d = nlohmann::json::parse(e.details_json);
    d["agent_time_unix_ms"] = e.time_unix_ms;
    a.details_json = d.dump();
    built.push_back(std::move(a));
  }
  const auto [append_us, append_cpu] =
      run([&] { Must(srv.store().AppendAudit(built), "AppendAudit"); });
  const double per = static_cast<double>(kRequests);
  std::cout << "  " << Pad("path", 48, true) << Pad("us/record", 11) << Pad("CPU us/record", 15)
            << Pad("CPU us/request", 16) << "\n";
  std::cout << "  " << Pad("ControlPlane::RecordAgentEvents", 48, true)
            << Pad(Fixed(record_us, 2), 11) << Pad(Fixed(record_cpu, 2), 15)
            << Pad(Fixed(record_cpu / per, 2), 16) << "\n";
  std::cout << "  " << Pad("Store::AppendAudit of built records (baseline)", 48, true)
            << Pad(Fixed(append_us, 2), 11) << Pad(Fixed(append_cpu, 2), 15)
            << Pad(Fixed(append_cpu / per, 2), 16) << "\n";
  std::cout << "  ratio RecordAgentEvents / AppendAudit CPU: "
            << Fixed(append_cpu > 0 ? record_cpu / append_cpu : 0, 2) << "\n";
  auto verify = Must(srv.store().VerifyAudit(), "verify");
  if (!verify.ok) Die("audit chain broken after the event bench: " + verify.reason);
}

void BenchEvents(const std::filesystem::path& dir) {
  BenchEventsBatch(dir, 32, 1);
  BenchEventsBatch(dir, 32, 32);
}

int Main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--svid-client") return SvidClientMain(argv[2]);
  const Options o = ParseFlags(argc, argv);
  // Sockets: two ends of every stream's connection live in this process.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  std::string tmpl = o.dir + "/sigil-cp-bench-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp in " + o.dir + " failed");
  const std::filesystem::path dir = tmpl;

  std::cout << "sigil_control_plane_bench: " << std::thread::hardware_concurrency()
            << " cores, gRPC " << grpc::Version() << ", " << OPENSSL_VERSION_TEXT
            << ", SQLite files in " << dir.string() << " (WAL, synchronous=FULL), load average "
            << LoadAverage() << "\n";
  if (Enabled(o, "svid")) BenchSvid(o, dir);
  if (Enabled(o, "apply")) BenchApply(o, dir);
  if (Enabled(o, "fanout")) BenchFanout(o, dir);
  if (Enabled(o, "events")) BenchEvents(dir);
  std::cout << "\nload average at the end: " << LoadAverage() << "\n";
  if (!o.keep) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace sigil::bench

int main(int argc, char** argv) { return sigil::bench::Main(argc, argv); }
