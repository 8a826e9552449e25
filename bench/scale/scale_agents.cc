// sigil_scale_agents: N simulated node agents in one process against a running `sigil server`
// (bench/scale/run.sh starts the server and drives this program; docs/benchmarks.md,
// "Control plane at scale").
//
// To the server every simulated agent is a real one: its own join token (admin API
// POST /api/v1/tokens, what `sigil token create` sends), first contact that checks the pinned CA
// (agent::FetchPinnedRoot, the agent's code), its own P-256 key and CSR, Join over its own
// connection, then its own gRPC channel and TLS connection with its node SVID as client
// certificate (agent::ServerConnection::Open, the agent's code) and one Sync stream from
// revision 0. The streams use gRPC's asynchronous API: a few completion queues with one thread
// each (--cq-threads), no thread per agent.
//
// A snapshot is walked at the wire level (revision, flag, number of upserts; the resources are
// skipped, not parsed), so the generator's own CPU on the shared cores stays small; deltas are
// parsed in full. Phases, each bounded in time:
//   tokens   N join tokens through the admin API (--token-parallel HTTPS connections)
//   joins    N joins, --join-parallel at a time
//   connect  N channels + Sync streams, at most --connect-parallel waiting for their snapshot
//   idle     --measure-seconds with nothing changing: server CPU, RSS, threads, store queries,
//            messages the agents received
//   rounds   --rounds times `sigil apply` of one changed Service; time from the apply's start
//            and from its return to the delta's arrival at each agent; server CPU and queries
//
// Output: readable lines, and `RESULT key=value ...` lines for the driver. Exit status 1 when
// a phase failed or timed out (the message says which and why).
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
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

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/version_info.h>
#include <httplib.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <nlohmann/json.hpp>

#include "agent/core/first_contact.h"
#include "agent/core/server_connection.h"
#include "common/clock.h"
#include "common/host_port.h"
#include "common/secret_bytes.h"
#include "core/certificate.h"
#include "core/csr.h"
#include "core/join_token.h"
#include "core/keys.h"
#include "core/trust_bundle.h"
#include "core/x509_svid.h"
#include "proto/agent.grpc.pb.h"

namespace sigil::bench {
namespace {

namespace pb = sigil::agent::v1;
using Steady = std::chrono::steady_clock;

constexpr std::string_view kSyncMethod = "/sigil.agent.v1.AgentService/Sync";
constexpr std::string_view kChangeService = "scale-change";
constexpr std::string_view kRoundMarker = "round-";

// ---------------------------------------------------------------------------------------
// Small utilities.

[[noreturn]] void Die(const std::string& what) {
  std::cout << std::flush;
  std::cerr << "sigil_scale_agents: " << what << "\n";
  std::exit(1);
}

double SecondsSince(Steady::time_point t0) {
  return std::chrono::duration<double>(Steady::now() - t0).count();
}
double Ms(Steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string Fixed(double v, int decimals) {
  char buf[64];
  (void)std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// Nearest-rank percentile (sorts `v`); 0 when empty.
double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

struct Dist {
  double p50 = 0, p99 = 0, max = 0;
};
Dist DistOf(std::vector<double> v) {
  Dist d;
  d.p50 = Percentile(v, 50);
  d.p99 = Percentile(v, 99);
  d.max = v.empty() ? 0 : v.back();
  return d;
}

// A whole (small) file, e.g. under /proc; "" when unreadable.
std::string Slurp(const std::string& path) {
  std::string out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// One process's counters from /proc (the server's, or this process's with pid 0).
struct ProcStats {
  bool ok = false;
  double cpu_s = 0;  // utime + stime
  long rss_kb = 0, hwm_kb = 0;
  long threads = 0;
  long sockets = 0;  // open socket descriptors
};

ProcStats ReadProc(long pid) {
  ProcStats s;
  const std::string dir = pid > 0 ? "/proc/" + std::to_string(pid) : "/proc/self";
  const std::string text = Slurp(dir + "/stat");
  size_t close = text.rfind(')');
  if (close == std::string::npos) return s;
  std::istringstream fields(text.substr(close + 2));
  std::vector<std::string> f;
  for (std::string x; fields >> x;) f.push_back(x);
  // After "(comm) ": state is field 3 of stat(5), so field N is f[N - 3].
  if (f.size() < 18) return s;
  const auto tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  s.cpu_s = (std::stod(f[11]) + std::stod(f[12])) / tick;  // utime (14), stime (15)
  s.threads = std::stol(f[17]);                            // num_threads (20)
  std::ifstream status(dir + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmRSS:")) s.rss_kb = std::strtol(line.c_str() + 6, nullptr, 10);
    if (line.starts_with("VmHWM:")) s.hwm_kb = std::strtol(line.c_str() + 6, nullptr, 10);
  }
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/fd", ec)) {
    std::error_code ec2;
    auto target = std::filesystem::read_symlink(e.path(), ec2);
    if (!ec2 && target.string().starts_with("socket:")) ++s.sockets;
  }
  s.ok = true;
  return s;
}

// CPU seconds of process `root` and its direct children (a PostgreSQL postmaster and its
// backends); 0 when root is 0.
double TreeCpuSeconds(long root) {
  if (root <= 0) return 0;
  const auto tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  double total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = e.path().filename().string();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string text = Slurp((e.path() / "stat").string());
    size_t close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(text.substr(close + 2));
    std::vector<std::string> f;
    for (std::string x; fields >> x && f.size() < 13;) f.push_back(x);
    if (f.size() < 13) continue;
    if (std::stol(pid) != root && std::stol(f[1]) != root) continue;  // ppid is field 4
    total += (std::stod(f[11]) + std::stod(f[12])) / tick;
  }
  return total;
}

// ---------------------------------------------------------------------------------------
// Flags.

struct Options {
  int agents = 5000;
  std::string server;       // agent API HOST:PORT
  std::string admin;        // admin API https://HOST:PORT
  std::string credentials;  // admin credential directory (cert.pem, key.pem, bundle.pem)
  std::string sigil;        // the sigil binary, for `sigil apply`
  long server_pid = 0;      // 0: no server figures
  long db_pid = 0;          // PostgreSQL postmaster: CPU of it and its children
  std::string metrics;      // HOST:PORT of the server's /metrics ("" : no query counts)
  std::string node_prefix = "scale";
  std::string work_dir = "/tmp";
  int token_parallel = 4;
  int join_parallel = 8;
  int connect_parallel = 64;    // streams waiting for their snapshot at once
  int cq_threads = 2;           // completion queues (one thread each) for the streams
  double measure_seconds = 60;  // idle window
  int rounds = 3;
  double phase_timeout = 600;  // bound of the tokens, joins and connect phases, each
  double round_timeout = 60;
};

void Usage() {
  std::cout
      << R"(usage: sigil_scale_agents --server HOST:PORT --admin https://HOST:PORT --credentials DIR
                          [--sigil PATH] [--server-pid PID] [--metrics HOST:PORT] [flags]
  --agents N            simulated agents (own token, key, node SVID, connection each)  (5000)
  --server HOST:PORT    the server's agent API
  --admin URL           the server's admin API (join tokens; `sigil apply` for the rounds)
  --credentials DIR     admin credential directory (cert.pem, key.pem, bundle.pem)
  --sigil PATH          sigil binary used for `sigil apply` in the rounds
  --server-pid PID      read the server's CPU, RSS, threads and sockets from /proc
  --metrics HOST:PORT   the server's /metrics (sigil_store_queries_total)
  --db-pid PID          PostgreSQL postmaster: CPU of it and its backends
  --node-prefix P       node names P-0 ... P-(N-1)                                    (scale)
  --work-dir DIR        where the round's YAML file is written                        (/tmp)
  --token-parallel N    concurrent admin API connections creating tokens              (4)
  --join-parallel N     concurrent joins                                              (8)
  --connect-parallel N  streams waiting for their snapshot at once (0: all at once)   (64)
  --cq-threads N        completion queues, one thread each, for the streams         (2)
  --measure-seconds S   idle window                                                   (60)
  --rounds N            policy changes timed                                          (3)
  --phase-timeout S     bound of the token, join and connect phases, each             (600)
  --round-timeout S     bound of one round's delivery                                 (60)
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
    if (!name.starts_with("--")) Die("unexpected argument \"" + name + "\" (see --help)");
    name = name.substr(2);
    std::string value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else {
      if (i + 1 >= args.size()) Die("--" + name + " needs a value");
      value = args[++i];
    }
    auto integer = [&](int lo, int hi) {
      char* end = nullptr;
      long v = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || v < lo || v > hi) {
        Die("--" + name + ": \"" + value + "\" is not an integer in " + std::to_string(lo) + ".." +
            std::to_string(hi));
      }
      return static_cast<int>(v);
    };
    auto seconds = [&](double lo, double hi) {
      char* end = nullptr;
      double v = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !(v >= lo && v <= hi)) {
        Die("--" + name + ": \"" + value + "\" is not a number of seconds in " + Fixed(lo, 0) +
            ".." + Fixed(hi, 0));
      }
      return v;
    };
    if (name == "agents") {
      o.agents = integer(1, 100000);
    } else if (name == "server") {
      o.server = value;
    } else if (name == "admin") {
      o.admin = value;
    } else if (name == "credentials") {
      o.credentials = value;
    } else if (name == "sigil") {
      o.sigil = value;
    } else if (name == "server-pid") {
      o.server_pid = integer(1, 1 << 30);
    } else if (name == "db-pid") {
      o.db_pid = integer(1, 1 << 30);
    } else if (name == "metrics") {
      o.metrics = value;
    } else if (name == "node-prefix") {
      o.node_prefix = value;
    } else if (name == "work-dir") {
      o.work_dir = value;
    } else if (name == "token-parallel") {
      o.token_parallel = integer(1, 64);
    } else if (name == "join-parallel") {
      o.join_parallel = integer(1, 256);
    } else if (name == "connect-parallel") {
      o.connect_parallel = integer(0, 100000);
    } else if (name == "cq-threads") {
      o.cq_threads = integer(1, 64);
    } else if (name == "measure-seconds") {
      o.measure_seconds = seconds(0, 3600);
    } else if (name == "rounds") {
      o.rounds = integer(0, 100);
    } else if (name == "phase-timeout") {
      o.phase_timeout = seconds(1, 7200);
    } else if (name == "round-timeout") {
      o.round_timeout = seconds(1, 3600);
    } else {
      Die("unknown flag --" + name + " (see --help)");
    }
  }
  if (o.server.empty()) Die("--server: required (the agent API, HOST:PORT)");
  if (o.admin.empty()) Die("--admin: required (the admin API, https://HOST:PORT)");
  if (o.credentials.empty()) Die("--credentials: required (the admin credential directory)");
  if (o.rounds > 0 && o.sigil.empty()) Die("--sigil: required when --rounds > 0");
  if (o.connect_parallel == 0) o.connect_parallel = o.agents;
  return o;
}

// ---------------------------------------------------------------------------------------
// Admin API: join tokens, over cpp-httplib set up as the CLI's admin client does (mTLS with the
// admin credential, the server chain verified against bundle.pem).

std::pair<std::string, int> AdminHostPort(const std::string& url) {
  std::string rest = url;
  if (rest.starts_with("https://")) rest = rest.substr(8);
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  auto hp = SplitHostPort("--admin", rest);
  if (!hp.ok()) Die(hp.error().ToString());
  return *hp;
}

std::unique_ptr<httplib::SSLClient> AdminClient(const Options& o) {
  auto [host, port] = AdminHostPort(o.admin);
  auto client = std::make_unique<httplib::SSLClient>(host, port);
  SSL_CTX* ctx = client->ssl_context();
  if (ctx == nullptr) Die("admin client: TLS setup failed");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  const std::filesystem::path dir = o.credentials;
  if (SSL_CTX_use_certificate_chain_file(ctx, (dir / "cert.pem").c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, (dir / "key.pem").c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(ctx, (dir / "bundle.pem").c_str(), nullptr) != 1) {
    Die("admin client: cannot load the admin credential from " + dir.string());
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  client->enable_server_certificate_verification(false);  // chain checked above; no host name
  client->set_keep_alive(true);
  client->set_connection_timeout(10);
  client->set_read_timeout(60);
  client->set_write_timeout(60);
  return client;
}

std::string NodeName(const Options& o, int i) { return o.node_prefix + "-" + std::to_string(i); }

// Runs fn(i) for i in [0, n) on `threads` threads; stops early when fn returns an error text
// or `timeout` passes. Returns the first error ("" when all ran).
template <typename Fn>
std::string ParallelFor(int n, int threads, double timeout, Fn fn) {
  std::atomic<int> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::string first_error;
  const auto deadline = Steady::now() + std::chrono::duration_cast<Steady::duration>(
                                            std::chrono::duration<double>(timeout));
  std::vector<std::thread> pool;
  for (int t = 0; t < std::min(threads, n); ++t) {
    pool.emplace_back([&] {
      while (!stop.load()) {
        const int i = next.fetch_add(1);
        if (i >= n) return;
        std::string err = Steady::now() > deadline ? std::string("timed out") : fn(i);
        if (!err.empty()) {
          std::lock_guard lock(mu);
          if (first_error.empty()) first_error = "item " + std::to_string(i) + ": " + err;
          stop = true;
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  return first_error;
}

// ---------------------------------------------------------------------------------------
// Joined nodes.

struct NodeCred {
  std::string name;
  core::TrustDomain trust_domain;
  std::string roots_pem;  // the pinned root
  std::string chain_pem;
  SecretBytes key_pem;
};

// What a real agent does on first start (src/agent/core/agent.cc): first contact with the pinned
// CA, a fresh key and CSR, Join over a connection that trusts only that root, the SVID checked
// against the returned bundle and key.
Result<NodeCred> JoinOne(const Options& o, const std::string& name, const std::string& token_text,
                         double* join_rpc_ms) {
  SIGIL_ASSIGN_OR_RETURN(core::JoinToken token, core::JoinToken::Parse(token_text));
  SIGIL_ASSIGN_OR_RETURN(agent::PinnedServer pinned,
                         agent::FetchPinnedRoot(o.server, token, std::chrono::seconds(30)));
  SIGIL_ASSIGN_OR_RETURN(auto key, core::PrivateKey::Generate(core::KeyType::kEcP256));
  SIGIL_ASSIGN_OR_RETURN(auto csr, core::CreateCsrDer(key));
  const std::string root_pem = pinned.root.ToPem();
  SIGIL_ASSIGN_OR_RETURN(
      auto conn, agent::ServerConnection::Open(o.server, pinned.trust_domain, root_pem, "", {}));
  pb::JoinRequest req;
  req.set_token(std::string(token.Text().view()));
  req.set_node_name(name);
  req.set_csr(std::string(csr.begin(), csr.end()));
  pb::JoinResponse resp;
  auto ctx = agent::ServerConnection::Context(std::chrono::seconds(60));
  const auto t0 = Steady::now();
  grpc::Status st = conn->stub().Join(ctx.get(), req, &resp);
  *join_rpc_ms = Ms(Steady::now() - t0);
  if (!st.ok()) return agent::FromGrpcStatus(st, "join " + o.server);
  const std::string& der = resp.svid_chain();
  SIGIL_ASSIGN_OR_RETURN(
      auto chain,
      core::ParseCertificatesDer({reinterpret_cast<const uint8_t*>(der.data()), der.size()}));
  SIGIL_ASSIGN_OR_RETURN(
      auto bundle, core::TrustBundle::ParseJwks(pinned.trust_domain, resp.trust_bundle_jwks()));
  core::BundleSet bundles;
  bundles.Put(std::make_shared<core::TrustBundle>(bundle));
  SIGIL_ASSIGN_OR_RETURN(auto id, core::VerifyX509Svid(chain, bundles, Clock::System().Now()));
  SIGIL_ASSIGN_OR_RETURN(auto leaf_key, chain.front().PublicKeyOf());
  if (id.str() != resp.spiffe_id() || leaf_key.ToDer() != key.Public().ToDer()) {
    return Internal("join: the server returned an SVID for another identity or key");
  }
  NodeCred out{name, pinned.trust_domain, root_pem, core::CertificatesToPem(chain), {}};
  SIGIL_ASSIGN_OR_RETURN(out.key_pem, key.ToPkcs8Pem());
  return out;
}

// ---------------------------------------------------------------------------------------
// Sync messages at the wire level: the top-level fields of a SyncResponse, skipping the
// contents of length-delimited ones (resources), over the slices gRPC received.

class SliceReader {
 public:
  explicit SliceReader(const std::vector<grpc::Slice>& slices) : slices_(slices) {}
  bool AtEnd() {
    while (si_ < slices_.size() && off_ >= slices_[si_].size()) {
      ++si_;
      off_ = 0;
    }
    return si_ >= slices_.size();
  }
  bool Byte(uint8_t* b) {
    if (AtEnd()) return false;
    *b = slices_[si_].begin()[off_++];
    return true;
  }
  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = 0;
      if (!Byte(&b)) return false;
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  bool Skip(uint64_t n) {
    while (n > 0) {
      if (AtEnd()) return false;
      const uint64_t here = std::min<uint64_t>(n, slices_[si_].size() - off_);
      off_ += here;
      n -= here;
    }
    return true;
  }

 private:
  const std::vector<grpc::Slice>& slices_;
  size_t si_ = 0;
  size_t off_ = 0;
};

struct WireSummary {
  bool ok = false;
  uint64_t revision = 0;
  bool snapshot = false;
  uint64_t upserts = 0;
  uint64_t deletes = 0;
};

WireSummary ScanSyncResponse(const std::vector<grpc::Slice>& slices) {
  WireSummary w;
  SliceReader r(slices);
  while (!r.AtEnd()) {
    uint64_t tag = 0, v = 0;
    if (!r.Varint(&tag)) return w;
    const uint64_t field = tag >> 3;
    switch (tag & 7) {
      case 0:
        if (!r.Varint(&v)) return w;
        if (field == 1) w.revision = v;
        if (field == 2) w.snapshot = v != 0;
        break;
      case 1:
        if (!r.Skip(8)) return w;
        break;
      case 2:
        if (!r.Varint(&v) || !r.Skip(v)) return w;
        if (field == 3) ++w.upserts;
        if (field == 4) ++w.deletes;
        break;
      case 5:
        if (!r.Skip(4)) return w;
        break;
      default:
        return w;
    }
  }
  w.ok = true;
  return w;
}

// ---------------------------------------------------------------------------------------
// Simulated agents.

struct Shared {
  explicit Shared(int rounds) : round_deltas(static_cast<size_t>(rounds) + 1, 0) {}
  std::mutex mu;
  std::condition_variable cv;
  int snapshots = 0;  // streams that have their first snapshot
  int waiting = 0;    // streams started and still without a snapshot
  int done = 0;       // streams ended (OnDone)
  int failed = 0;     // ended with an error before cancellation
  std::string first_error;
  std::vector<int> round_deltas;      // streams that saw round r
  std::atomic<uint64_t> messages{0};  // every message received, snapshots included
  std::atomic<uint64_t> message_bytes{0};
  std::atomic<uint64_t> resnapshots{0};  // snapshots after the first
  std::atomic<bool> cancelling{false};
};

// One simulated agent's Sync stream on gRPC's asynchronous API: every stream belongs to one of a
// few completion queues, each drained by one thread (CqLoop). (The callback API delivered
// deltas up to ~100 ms late in this process with the epoll1 poller, which would have been
// measured as server latency; with completion queues our own threads poll.)
class SimAgent {
 public:
  enum class Op { kStart, kWrite, kRead, kFinish };
  struct Tag {
    SimAgent* agent;
    Op op;
  };

  SimAgent(Shared& shared, std::unique_ptr<agent::ServerConnection> conn, int rounds)
      : shared_(shared),
        conn_(std::move(conn)),
        stub_(conn_->channel()),
        arrival_(static_cast<size_t>(rounds) + 1) {}

  void Start(grpc::CompletionQueue* cq) {
    started_ = Steady::now();
    req_.set_from_revision(0);
    call_ = stub_.PrepareCall(&ctx_, std::string(kSyncMethod), cq);
    call_->StartCall(&start_tag_);
  }
  void Cancel() { ctx_.TryCancel(); }

  Steady::time_point started() const { return started_; }
  Steady::time_point snapshot_at() const { return snapshot_at_; }
  uint64_t snapshot_bytes() const { return snapshot_bytes_; }
  uint64_t snapshot_upserts() const { return snapshot_upserts_; }
  uint64_t snapshot_revision() const { return snapshot_revision_; }
  Steady::time_point arrival(int round) const { return arrival_[static_cast<size_t>(round)]; }

  // One completion of this stream's operations (called by the queue's thread only).
  void OnEvent(Op op, bool ok) {
    switch (op) {
      case Op::kStart:
        if (!ok) {
          call_->Finish(&status_, &finish_tag_);
          return;
        }
        call_->WriteLast(req_, grpc::WriteOptions(), &write_tag_);
        call_->Read(&buf_, &read_tag_);
        return;
      case Op::kWrite:
        return;
      case Op::kRead:
        if (!ok) {
          call_->Finish(&status_, &finish_tag_);
          return;
        }
        Handle(Steady::now());
        buf_.Clear();
        call_->Read(&buf_, &read_tag_);
        return;
      case Op::kFinish:
        OnDone(status_);
        return;
    }
  }

  void OnDone(const grpc::Status& status) {
    std::lock_guard lock(shared_.mu);
    ++shared_.done;
    if (snapshot_at_ == Steady::time_point{}) --shared_.waiting;
    if (!shared_.cancelling.load()) {  // every stream should stay open until we cancel it
      ++shared_.failed;
      if (shared_.first_error.empty()) {
        shared_.first_error = "stream ended: code " + std::to_string(status.error_code()) + ": " +
                              status.error_message();
      }
    }
    shared_.cv.notify_all();
  }

 private:
  void Handle(Steady::time_point now) {
    std::vector<grpc::Slice> slices;
    if (!buf_.Dump(&slices).ok()) return;
    const uint64_t bytes = buf_.Length();
    shared_.messages.fetch_add(1);
    shared_.message_bytes.fetch_add(bytes);
    WireSummary w = ScanSyncResponse(slices);
    if (!w.ok) {
      Fail("malformed SyncResponse (" + std::to_string(bytes) + " bytes)");
      return;
    }
    if (w.snapshot) {
      if (snapshot_at_ != Steady::time_point{}) {
        shared_.resnapshots.fetch_add(1);
        return;
      }
      snapshot_at_ = now;
      snapshot_bytes_ = bytes;
      snapshot_upserts_ = w.upserts;
      snapshot_revision_ = w.revision;
      std::lock_guard lock(shared_.mu);
      ++shared_.snapshots;
      --shared_.waiting;
      shared_.cv.notify_all();
      return;
    }
    // A delta: parse it in full, as an agent applies it.
    std::string flat;
    flat.reserve(bytes);
    for (const auto& s : slices) flat.append(reinterpret_cast<const char*>(s.begin()), s.size());
    pb::SyncResponse msg;
    if (!msg.ParseFromString(flat)) {
      Fail("unparsable delta (" + std::to_string(bytes) + " bytes)");
      return;
    }
    for (const auto& r : msg.upserts()) {
      if (r.kind() != "Service" || r.name() != kChangeService) continue;
      const size_t at = r.spec_json().find(kRoundMarker);
      if (at == std::string::npos) continue;
      const long round = std::strtol(r.spec_json().c_str() + at + kRoundMarker.size(), nullptr, 10);
      if (round <= 0 || static_cast<size_t>(round) >= arrival_.size()) continue;
      if (arrival_[static_cast<size_t>(round)] != Steady::time_point{}) continue;
      arrival_[static_cast<size_t>(round)] = now;
      std::lock_guard lock(shared_.mu);
      ++shared_.round_deltas[static_cast<size_t>(round)];
      shared_.cv.notify_all();
    }
  }
  void Fail(const std::string& what) {
    {
      std::lock_guard lock(shared_.mu);
      if (shared_.first_error.empty()) shared_.first_error = what;
    }
    ctx_.TryCancel();
  }

  Shared& shared_;
  std::unique_ptr<agent::ServerConnection> conn_;
  grpc::TemplatedGenericStub<pb::SyncRequest, grpc::ByteBuffer> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<pb::SyncRequest, grpc::ByteBuffer>> call_;
  Tag start_tag_{this, Op::kStart};
  Tag write_tag_{this, Op::kWrite};
  Tag read_tag_{this, Op::kRead};
  Tag finish_tag_{this, Op::kFinish};
  grpc::Status status_;
  pb::SyncRequest req_;
  grpc::ByteBuffer buf_;
  Steady::time_point started_{};
  Steady::time_point snapshot_at_{};
  uint64_t snapshot_bytes_ = 0;
  uint64_t snapshot_upserts_ = 0;
  uint64_t snapshot_revision_ = 0;
  std::vector<Steady::time_point> arrival_;  // [round], set once by the reactor
};

// Drains one completion queue until it is shut down and empty.
void CqLoop(grpc::CompletionQueue* cq) {
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
    auto* t = static_cast<SimAgent::Tag*>(tag);
    t->agent->OnEvent(t->op, ok);
  }
}

// ---------------------------------------------------------------------------------------
// Server figures.

// sigil_store_queries_total from the server's /metrics; -1 when unavailable.
double StoreQueries(const Options& o) {
  if (o.metrics.empty()) return -1;
  auto hp = SplitHostPort("--metrics", o.metrics);
  if (!hp.ok()) Die(hp.error().ToString());
  httplib::Client client(hp->first, hp->second);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return -1;
  std::istringstream in(res->body);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("sigil_store_queries_total ")) {
      return std::strtod(line.c_str() + std::strlen("sigil_store_queries_total "), nullptr);
    }
  }
  return -1;
}

struct Window {
  ProcStats server;
  ProcStats self;
  double db_cpu_s = 0;
  double queries = -1;
  Steady::time_point at;
};
Window Sample(const Options& o) {
  Window w;
  w.queries = StoreQueries(o);  // first: its own query is inside the window
  w.server = o.server_pid > 0 ? ReadProc(o.server_pid) : ProcStats{};
  w.self = ReadProc(0);
  w.db_cpu_s = TreeCpuSeconds(o.db_pid);
  w.at = Steady::now();
  return w;
}

// Runs argv, stdout+stderr to `log`; returns the exit status (or -1).
int RunCommand(const std::vector<std::string>& argv, const std::string& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// ---------------------------------------------------------------------------------------

int Main(int argc, char** argv) {
  const Options o = ParseFlags(argc, argv);
  (void)std::signal(SIGPIPE, SIG_IGN);
  // Descriptors: one connection per agent, plus the join connections while they close.
  rlimit nofile{};
  const rlim_t want = static_cast<rlim_t>(o.agents) * 2 + 1024;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    if (nofile.rlim_max < want) {
      rlimit raised{want, want};
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0) nofile = raised;
    }
    if (nofile.rlim_cur < nofile.rlim_max) {
      nofile.rlim_cur = nofile.rlim_max;
      (void)setrlimit(RLIMIT_NOFILE, &nofile);
    }
    (void)getrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (nofile.rlim_cur < static_cast<rlim_t>(o.agents) + 256) {
    Die("RLIMIT_NOFILE is " + std::to_string(nofile.rlim_cur) + ", too low for " +
        std::to_string(o.agents) + " connections (run as root or raise the hard limit)");
  }
  std::cout << "sigil_scale_agents: " << o.agents << " agents against " << o.server << "; "
            << std::thread::hardware_concurrency() << " cores, gRPC " << grpc::Version()
            << ", RLIMIT_NOFILE " << nofile.rlim_cur << ", load average " << LoadAverage()
            << std::endl;
  if (o.server_pid > 0 && !ReadProc(o.server_pid).ok) {
    Die("--server-pid " + std::to_string(o.server_pid) + ": no such process");
  }
  if (!o.metrics.empty() && StoreQueries(o) < 0) {
    Die("--metrics " + o.metrics + ": no sigil_store_queries_total on /metrics");
  }

  // --- tokens --------------------------------------------------------------------------
  const auto t_all = Steady::now();
  std::vector<std::string> tokens(static_cast<size_t>(o.agents));
  {
    const auto t0 = Steady::now();
    std::vector<std::unique_ptr<httplib::SSLClient>> clients;
    for (int i = 0; i < o.token_parallel; ++i) clients.push_back(AdminClient(o));
    std::atomic<int> next_client{0};
    thread_local int my_client = -1;
    std::string err = ParallelFor(o.agents, o.token_parallel, o.phase_timeout, [&](int i) {
      if (my_client < 0) my_client = next_client.fetch_add(1);
      nlohmann::json body = {{"node", NodeName(o, i)}, {"ttl", 3600}};
      auto res = clients[static_cast<size_t>(my_client)]->Post("/api/v1/tokens", body.dump(),
                                                               "application/json");
      if (!res) return "POST /api/v1/tokens: " + httplib::to_string(res.error());
      if (res->status != 200) {
        return "POST /api/v1/tokens: HTTP " + std::to_string(res->status) + ": " + res->body;
      }
      auto j = nlohmann::json::parse(res->body, nullptr, false);
      if (!j.is_object() || !j.contains("token") || !j["token"].is_string()) {
        return std::string("POST /api/v1/tokens: no token in the answer");
      }
      tokens[static_cast<size_t>(i)] = j["token"].get<std::string>();
      return std::string();
    });
    if (!err.empty()) Die("tokens: " + err);
    const double s = SecondsSince(t0);
    std::cout << "tokens: " << o.agents << " join tokens via POST /api/v1/tokens ("
              << o.token_parallel << " connections) in " << Fixed(s, 2) << " s ("
              << Fixed(o.agents / s, 0) << "/s)" << std::endl;
    std::cout << "RESULT phase=tokens n=" << o.agents << " secs=" << Fixed(s, 3) << std::endl;
  }

  // --- joins ---------------------------------------------------------------------------
  std::vector<std::optional<NodeCred>> nodes(static_cast<size_t>(o.agents));
  {
    const auto t0 = Steady::now();
    std::vector<double> rpc_ms(static_cast<size_t>(o.agents), 0);
    std::string err = ParallelFor(o.agents, o.join_parallel, o.phase_timeout, [&](int i) {
      auto& token = tokens[static_cast<size_t>(i)];
      auto joined = JoinOne(o, NodeName(o, i), token, &rpc_ms[static_cast<size_t>(i)]);
      OPENSSL_cleanse(token.data(), token.size());
      if (!joined.ok()) return joined.error().ToString();
      nodes[static_cast<size_t>(i)] = std::move(*joined);
      return std::string();
    });
    if (!err.empty()) Die("joins: " + err);
    const double s = SecondsSince(t0);
    Dist d = DistOf(rpc_ms);
    std::cout << "joins: " << o.agents << " nodes joined (first contact + key + CSR + Join RPC, "
              << o.join_parallel << " at a time) in " << Fixed(s, 2) << " s ("
              << Fixed(o.agents / s, 0) << "/s); Join RPC p50 " << Fixed(d.p50, 1) << " ms, p99 "
              << Fixed(d.p99, 1) << " ms, max " << Fixed(d.max, 1) << " ms" << std::endl;
    std::cout << "RESULT phase=joins n=" << o.agents << " secs=" << Fixed(s, 3)
              << " rpc_p50_ms=" << Fixed(d.p50, 2) << " rpc_p99_ms=" << Fixed(d.p99, 2)
              << std::endl;
  }

  // --- connect: channels, Sync streams, snapshots -----------------------------------------
  Shared shared(o.rounds);
  // Completion queues and their threads, declared before the agents: destroyed after them.
  std::vector<std::unique_ptr<grpc::CompletionQueue>> cqs;
  std::vector<std::thread> cq_threads;
  for (int i = 0; i < o.cq_threads; ++i) {
    cqs.push_back(std::make_unique<grpc::CompletionQueue>());
    cq_threads.emplace_back(CqLoop, cqs.back().get());
  }
  std::vector<std::unique_ptr<SimAgent>> agents;
  agents.reserve(static_cast<size_t>(o.agents));
  const Window before_connect = Sample(o);
  {
    const auto t0 = Steady::now();
    const auto deadline = t0 + std::chrono::duration_cast<Steady::duration>(
                                   std::chrono::duration<double>(o.phase_timeout));
    for (int i = 0; i < o.agents; ++i) {
      {
        std::unique_lock lock(shared.mu);
        if (!shared.cv.wait_until(lock, deadline, [&] {
              return shared.waiting < o.connect_parallel || !shared.first_error.empty();
            })) {
          Die("connect: timed out after " + Fixed(o.phase_timeout, 0) + " s with " +
              std::to_string(shared.snapshots) + " snapshots");
        }
        if (!shared.first_error.empty()) Die("connect: " + shared.first_error);
        ++shared.waiting;
      }
      const NodeCred& n = *nodes[static_cast<size_t>(i)];
      auto conn = agent::ServerConnection::Open(o.server, n.trust_domain, n.roots_pem, n.chain_pem,
                                                n.key_pem);
      if (!conn.ok()) Die("connect: " + conn.error().ToString());
      agents.push_back(std::make_unique<SimAgent>(shared, std::move(*conn), o.rounds));
      agents.back()->Start(cqs[static_cast<size_t>(i) % cqs.size()].get());
    }
    {
      std::unique_lock lock(shared.mu);
      if (!shared.cv.wait_until(lock, deadline, [&] {
            return shared.snapshots == o.agents || !shared.first_error.empty();
          })) {
        Die("connect: timed out after " + Fixed(o.phase_timeout, 0) + " s with " +
            std::to_string(shared.snapshots) + " of " + std::to_string(o.agents) + " snapshots");
      }
      if (!shared.first_error.empty()) Die("connect: " + shared.first_error);
    }
    const double s = SecondsSince(t0);
    const Window after = Sample(o);
    std::vector<double> lat;
    uint64_t min_bytes = UINT64_MAX, max_bytes = 0, upserts = 0, total_bytes = 0;
    for (const auto& a : agents) {
      lat.push_back(Ms(a->snapshot_at() - a->started()));
      min_bytes = std::min(min_bytes, a->snapshot_bytes());
      max_bytes = std::max(max_bytes, a->snapshot_bytes());
      total_bytes += a->snapshot_bytes();
      upserts = std::max(upserts, a->snapshot_upserts());
    }
    Dist d = DistOf(lat);
    const double srv_cpu = after.server.cpu_s - before_connect.server.cpu_s;
    const double q = after.queries - before_connect.queries;
    std::cout << "connect: " << o.agents << " channels (own TLS connection and node SVID each) + "
              << "Sync(from_revision=0), at most " << o.connect_parallel
              << " waiting for a snapshot: all snapshots in " << Fixed(s, 2) << " s ("
              << Fixed(o.agents / s, 0) << " agents/s)" << std::endl;
    std::cout << "  snapshot: " << upserts << " resources, "
              << Fixed(static_cast<double>(max_bytes) / 1048576.0, 2) << " MiB (min " << min_bytes
              << ", max " << max_bytes << " bytes), "
              << Fixed(static_cast<double>(total_bytes) / 1073741824.0, 2)
              << " GiB to all agents; per stream from "
              << "call start to snapshot: p50 " << Fixed(d.p50, 1) << " ms, p99 " << Fixed(d.p99, 1)
              << " ms, max " << Fixed(d.max, 1) << " ms" << std::endl;
    if (o.server_pid > 0) {
      std::cout << "  server during connect: CPU " << Fixed(srv_cpu, 2) << " s ("
                << Fixed(srv_cpu / s, 2) << " cores, " << Fixed(srv_cpu * 1e3 / o.agents, 2)
                << " ms per agent), RSS " << after.server.rss_kb / 1024 << " MiB (peak "
                << after.server.hwm_kb / 1024 << "), threads " << after.server.threads
                << ", sockets " << after.server.sockets;
      if (q >= 0) std::cout << ", store queries " << Fixed(q, 0);
      if (o.db_pid > 0) {
        std::cout << ", PostgreSQL CPU " << Fixed(after.db_cpu_s - before_connect.db_cpu_s, 2)
                  << " s";
      }
      std::cout << std::endl;
    }
    std::cout << "  generator: CPU " << Fixed(after.self.cpu_s - before_connect.self.cpu_s, 2)
              << " s, RSS " << after.self.rss_kb / 1024 << " MiB, threads " << after.self.threads
              << ", sockets " << after.self.sockets << std::endl;
    std::cout << "RESULT phase=connect n=" << o.agents << " secs=" << Fixed(s, 3)
              << " snapshot_bytes=" << max_bytes << " snapshot_resources=" << upserts
              << " p50_ms=" << Fixed(d.p50, 2) << " p99_ms=" << Fixed(d.p99, 2)
              << " max_ms=" << Fixed(d.max, 2) << " server_cpu_s=" << Fixed(srv_cpu, 3)
              << " server_rss_kb=" << after.server.rss_kb
              << " server_hwm_kb=" << after.server.hwm_kb
              << " server_threads=" << after.server.threads
              << " server_sockets=" << after.server.sockets << " queries=" << Fixed(q, 0)
              << " db_cpu_s=" << Fixed(after.db_cpu_s - before_connect.db_cpu_s, 3)
              << " gen_rss_kb=" << after.self.rss_kb << " gen_sockets=" << after.self.sockets
              << " total_s=" << Fixed(SecondsSince(t_all), 3) << std::endl;
  }

  // --- idle ----------------------------------------------------------------------------
  {
    const uint64_t msgs0 = shared.messages.load();
    const Window w0 = Sample(o);
    std::this_thread::sleep_for(std::chrono::duration<double>(o.measure_seconds));
    const Window w1 = Sample(o);
    const double secs = std::chrono::duration<double>(w1.at - w0.at).count();
    const double cpu = w1.server.cpu_s - w0.server.cpu_s;
    // The window's second scrape is one query of its own (sigil_store_revision).
    const double q = w1.queries - w0.queries;
    const uint64_t msgs = shared.messages.load() - msgs0;
    std::cout << "idle: " << Fixed(secs, 1) << " s with " << o.agents
              << " open streams and nothing changing";
    if (o.server_pid > 0) {
      std::cout << ": server CPU " << Fixed(cpu, 2) << " s = " << Fixed(cpu / secs, 4) << " cores ("
                << Fixed(cpu / secs / o.agents * 1e6, 1) << " us per agent per s), RSS "
                << w1.server.rss_kb / 1024 << " MiB (peak " << w1.server.hwm_kb / 1024
                << "), threads " << w1.server.threads;
    }
    if (q >= 0)
      std::cout << ", store queries " << Fixed(q, 0) << " = " << Fixed(q / secs, 2) << "/s";
    const double db = w1.db_cpu_s - w0.db_cpu_s;
    if (o.db_pid > 0) std::cout << ", PostgreSQL CPU " << Fixed(db / secs, 4) << " cores";
    std::cout << ", messages to agents " << msgs << "; generator CPU "
              << Fixed((w1.self.cpu_s - w0.self.cpu_s) / secs, 4) << " cores" << std::endl;
    std::cout << "RESULT phase=idle n=" << o.agents << " secs=" << Fixed(secs, 3)
              << " server_cpu_s=" << Fixed(cpu, 3) << " server_cores=" << Fixed(cpu / secs, 5)
              << " server_rss_kb=" << w1.server.rss_kb << " server_hwm_kb=" << w1.server.hwm_kb
              << " server_threads=" << w1.server.threads << " queries=" << Fixed(q, 0)
              << " queries_per_s=" << Fixed(q / secs, 3) << " db_cores=" << Fixed(db / secs, 5)
              << " messages=" << msgs << std::endl;
  }

  // --- rounds: one policy change each -----------------------------------------------------
  int exit_code = 0;
  for (int r = 1; r <= o.rounds; ++r) {
    const std::string file = o.work_dir + "/scale-change-" + std::to_string(r) + ".yaml";
    {
      std::ofstream out(file);
      out << "apiVersion: sigil.dev/v1alpha1\nkind: Service\nmetadata: {name: " << kChangeService
          << "}\nspec:\n  mode: passthrough\n  addresses: [\"" << kRoundMarker << r
          << ".scale.internal:443\"]\n";
    }
    const std::string log = file + ".log";
    const Window w0 = Sample(o);
    const auto t0 = Steady::now();
    const int rc = RunCommand(
        {o.sigil, "apply", "-f", file, "--server", o.admin, "--credentials", o.credentials}, log);
    const auto t1 = Steady::now();
    if (rc != 0)
      Die("round " + std::to_string(r) + ": sigil apply exited " + std::to_string(rc) + ":\n" +
          Slurp(log));
    bool all = false;
    {
      std::unique_lock lock(shared.mu);
      all = shared.cv.wait_for(lock, std::chrono::duration<double>(o.round_timeout), [&] {
        return shared.round_deltas[static_cast<size_t>(r)] == o.agents;
      });
    }
    const Window w1 = Sample(o);
    std::vector<double> from_start, from_return;
    for (const auto& a : agents) {
      if (a->arrival(r) == Steady::time_point{}) continue;
      from_start.push_back(Ms(a->arrival(r) - t0));
      from_return.push_back(Ms(a->arrival(r) - t1));
    }
    const int got = static_cast<int>(from_start.size());
    Dist ds = DistOf(from_start), dr = DistOf(from_return);
    const double cpu = w1.server.cpu_s - w0.server.cpu_s;
    const double q = w1.queries - w0.queries;
    std::cout << "round " << r << ": sigil apply (1 Service) took " << Fixed(Ms(t1 - t0), 1)
              << " ms; delta at " << got << "/" << o.agents
              << " agents; from the apply's start: p50 " << Fixed(ds.p50, 1) << ", p99 "
              << Fixed(ds.p99, 1) << ", max " << Fixed(ds.max, 1) << " ms; from its return: p50 "
              << Fixed(dr.p50, 1) << ", p99 " << Fixed(dr.p99, 1) << ", max " << Fixed(dr.max, 1)
              << " ms";
    if (o.server_pid > 0) {
      std::cout << "; server CPU " << Fixed(cpu * 1e3, 0) << " ms ("
                << Fixed(cpu * 1e6 / o.agents, 1) << " us per agent)";
    }
    if (q >= 0) std::cout << ", store queries " << Fixed(q, 0);
    std::cout << std::endl;
    std::cout << "RESULT phase=round round=" << r << " n=" << o.agents << " got=" << got
              << " apply_ms=" << Fixed(Ms(t1 - t0), 2) << " start_p50_ms=" << Fixed(ds.p50, 2)
              << " start_p99_ms=" << Fixed(ds.p99, 2) << " start_max_ms=" << Fixed(ds.max, 2)
              << " return_p50_ms=" << Fixed(dr.p50, 2) << " return_p99_ms=" << Fixed(dr.p99, 2)
              << " return_max_ms=" << Fixed(dr.max, 2) << " server_cpu_ms=" << Fixed(cpu * 1e3, 1)
              << " queries=" << Fixed(q, 0)
              << " db_cpu_ms=" << Fixed((w1.db_cpu_s - w0.db_cpu_s) * 1e3, 1) << std::endl;
    if (!all) {
      std::cout << "round " << r << ": only " << got << " of " << o.agents
                << " agents got the delta within " << Fixed(o.round_timeout, 0) << " s"
                << std::endl;
      exit_code = 1;
      break;
    }
    std::filesystem::remove(file);
    std::filesystem::remove(log);
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }

  // --- end -----------------------------------------------------------------------------
  {
    std::lock_guard lock(shared.mu);
    if (shared.failed > 0) {
      std::cout << "error: " << shared.failed
                << " streams ended early; first: " << shared.first_error << std::endl;
      exit_code = 1;
    }
  }
  std::cout << "streams: " << shared.messages.load() << " messages, "
            << Fixed(static_cast<double>(shared.message_bytes.load()) / 1048576.0, 1)
            << " MiB received; " << shared.resnapshots.load() << " snapshots after the first"
            << std::endl;
  shared.cancelling = true;
  for (auto& a : agents) a->Cancel();
  {
    std::unique_lock lock(shared.mu);
    if (!shared.cv.wait_for(lock, std::chrono::seconds(60),
                            [&] { return shared.done == static_cast<int>(agents.size()); })) {
      // Never free a reactor gRPC may still call into.
      std::cout << "warning: " << agents.size() - static_cast<size_t>(shared.done)
                << " streams did not end after cancellation" << std::endl;
      std::cout << std::flush;
      std::_Exit(exit_code == 0 ? 1 : exit_code);
    }
  }
  for (auto& cq : cqs) cq->Shutdown();
  for (auto& t : cq_threads) t.join();
  return exit_code;
}

}  // namespace
}  // namespace sigil::bench

int main(int argc, char** argv) { return sigil::bench::Main(argc, argv); }
