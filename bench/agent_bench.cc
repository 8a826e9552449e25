// sigil_agent_bench: load generator for the node agent's SPIFFE Workload API, as a workload sees
// it: a real `sigil agent` (and a real `sigil server` behind it) on a Unix socket. The driver
// bench/agent_bench.py starts both, applies the resources and runs the phases below;
// docs/benchmarks.md ("Node agent") records runs. Only the generated Workload API stubs are used.
//
//   sigil_agent_bench --socket PATH [--agent-pid PID] [--server-pid PID] MODE [flags]
//
//   latency     One connection from this process. Up to four call kinds (--kinds), one of each
//               per round, in an order that rotates every round:
//                 x509-nohdr  FetchX509SVID without the security header: INVALID_ARGUMENT
//                             (the baseline: gRPC over the same socket, dispatch, no work)
//                 x509        FetchX509SVID: time to the first message, then cancel
//                 jwt-nohdr   FetchJWTSVID without the header: INVALID_ARGUMENT (baseline)
//                 jwt         FetchJWTSVID (unary), audience "bench"
//               After --warmup rounds (untimed) the caller's SVID and JWT are cached.
//   fresh       --count N child processes; child i runs as uid --uid-base + i (or + i mod
//               --uid-count). It is forked from this process before any gRPC object exists
//               (gRPC does not survive fork), drops to that uid (setgroups, setresgid,
//               setresuid), then connects and times FetchX509SVID: the first call for a new uid
//               makes the agent issue (key in its secure heap, CSR, SignWorkloadSVID to the
//               server); --cached more calls on the same connection are served from the cache.
//               --uid-count 1 is the control: the same processes and calls, one identity.
//   throughput  --clients C threads, each with its own channel and connection, calling
//               --rpc (x509, jwt, x509-nohdr or jwt-nohdr) back to back.
//
// Every loop is bounded by a count and a time. With --agent-pid/--server-pid the program reads
// /proc/PID/stat and /proc/PID/status around the timed window (CPU time, threads).
// Output: readable lines, plus "RESULT key=value ..." lines that the driver parses.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "proto/workload.grpc.pb.h"

namespace {

using Steady = std::chrono::steady_clock;
constexpr auto kRpcDeadline = std::chrono::seconds(20);
constexpr auto kConnectDeadline = std::chrono::seconds(10);
constexpr const char* kAudience = "bench";

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "sigil_agent_bench: " << what << "\n";
  std::exit(1);
}

double Us(Steady::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }
double SecondsSince(Steady::time_point t0) {
  return std::chrono::duration<double>(Steady::now() - t0).count();
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

std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == ' ') c = '_';
  }
  return s.empty() ? "-" : s;
}

// Nearest-rank percentile of a sorted vector; 0 when empty.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

struct Summary {
  size_t n = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};

Summary Summarise(std::vector<double> v) {
  Summary s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  if (v.empty()) return s;
  s.p50 = Percentile(v, 50);
  s.p90 = Percentile(v, 90);
  s.p99 = Percentile(v, 99);
  s.max = v.back();
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  return s;
}

double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto tv = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return tv(u.ru_utime) + tv(u.ru_stime);
}

// The whole of a small file (a /proc entry), empty when it cannot be read.
std::string ReadSmallFile(const std::string& path) {
  std::string out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  for (int i = 0; i < 64; ++i) {  // at most 256 KiB
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// What /proc says about another process (-1 when unknown).
struct ProcSample {
  double cpu_seconds = -1;  // utime + stime
  long rss_kb = -1;         // VmRSS
  long threads = -1;
};

ProcSample SampleProcess(int pid) {
  ProcSample s;
  if (pid <= 0) return s;
  {
    const std::string text = ReadSmallFile("/proc/" + std::to_string(pid) + "/stat");
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    auto close = text.rfind(')');
    if (close != std::string::npos) {
      std::istringstream fields(text.substr(close + 2));
      std::vector<std::string> f;
      std::string x;
      while (fields >> x && f.size() < 13) f.push_back(x);
      if (f.size() == 13) {
        const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
        s.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / hz;
      }
    }
  }
  std::istringstream in(ReadSmallFile("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) s.rss_kb = std::strtol(line.c_str() + 6, nullptr, 10);
    if (line.starts_with("Threads:")) s.threads = std::strtol(line.c_str() + 8, nullptr, 10);
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// Flags.

struct Options {
  std::string socket;
  std::string mode;
  int agent_pid = 0;
  int server_pid = 0;
  // latency
  int calls = 2000;  // rounds (one call of each kind per round)
  int warmup = 50;
  std::string kinds = "x509-nohdr,x509,jwt-nohdr,jwt";
  // fresh
  int uid_base = 20000;
  int count = 1000;
  int uid_count = 0;  // distinct uids, used round robin (0: --count)
  int parallel = 1;
  int cached = 3;
  std::string expect_prefix;  // spiffe ID prefix; the uid is appended
  // throughput
  int clients = 100;
  std::string rpc = "jwt";
  int max_calls = 200000;
  // all
  double seconds = 60;
};

void Usage() {
  std::cout
      << R"(usage: sigil_agent_bench --socket PATH [--agent-pid PID] [--server-pid PID] MODE [flags]
modes and their flags (defaults in brackets):
  latency     --calls N [2000] rounds of 4 calls (x509-nohdr, x509, jwt-nohdr, jwt),
              --kinds LIST [x509-nohdr,x509,jwt-nohdr,jwt] the calls of a round,
              --warmup N [50] untimed rounds first, --seconds S [60]
  fresh       --uid-base U [20000] --count N [1000] child processes as uids U..U+N-1,
              --uid-count M [N] only M distinct uids U..U+M-1, round robin (M=1: one
              identity, the same processes, connections and calls: the control run),
              --parallel P [1] children at a time, --cached K [3] calls after the first,
              --expect-prefix ID [none] (the first SVID must be ID<uid>), --seconds S [60]
  throughput  --clients C [100] --rpc x509|jwt|x509-nohdr|jwt-nohdr [jwt]
              --max-calls N [200000] --seconds S [60]
)";
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      Usage();
      std::exit(0);
    }
    if (!a.starts_with("--")) {
      if (!o.mode.empty()) Die("unexpected argument " + a);
      o.mode = a;
      continue;
    }
    if (i + 1 >= args.size()) Die(a + " needs a value");
    const std::string v = args[++i];
    auto integer = [&]() {
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < 0 || n > 100000000) Die(a + ": bad value " + v);
      return static_cast<int>(n);
    };
    const std::map<std::string, int*> integers = {
        {"--agent-pid", &o.agent_pid}, {"--server-pid", &o.server_pid}, {"--calls", &o.calls},
        {"--warmup", &o.warmup},       {"--uid-base", &o.uid_base},     {"--count", &o.count},
        {"--uid-count", &o.uid_count}, {"--parallel", &o.parallel},     {"--cached", &o.cached},
        {"--clients", &o.clients},     {"--max-calls", &o.max_calls}};
    const std::map<std::string, std::string*> strings = {{"--socket", &o.socket},
                                                         {"--expect-prefix", &o.expect_prefix},
                                                         {"--rpc", &o.rpc},
                                                         {"--kinds", &o.kinds}};
    if (auto it = integers.find(a); it != integers.end()) {
      *it->second = integer();
    } else if (auto st = strings.find(a); st != strings.end()) {
      *st->second = v;
    } else if (a == "--seconds") {
      o.seconds = std::strtod(v.c_str(), nullptr);
      if (!(o.seconds > 0)) Die(a + ": bad value " + v);
    } else {
      Die("unknown flag " + a);
    }
  }
  o.parallel = std::max(1, o.parallel);
  o.clients = std::max(1, o.clients);
  if (o.socket.empty() || o.mode.empty()) {
    Usage();
    std::exit(2);
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// Calls.

struct CallResult {
  bool ok = false;
  double us = 0;
  std::string error;
};

// A channel with its own connection (no subchannel sharing between channels of this process),
// connected before it is returned.
std::unique_ptr<SpiffeWorkloadAPI::Stub> Connect(const std::string& socket, double* connect_us,
                                                 std::string* error) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  const auto t0 = Steady::now();
  auto channel =
      grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + kConnectDeadline)) {
    *error = "could not connect to unix:" + socket;
    return nullptr;
  }
  if (connect_us != nullptr) *connect_us = Us(Steady::now() - t0);
  return SpiffeWorkloadAPI::NewStub(channel);
}

// FetchX509SVID; with the header, the time to the first message (then the stream is
// cancelled); without it, the time to the INVALID_ARGUMENT status.
CallResult CallX509(SpiffeWorkloadAPI::Stub& stub, bool header, const std::string& expect_id) {
  CallResult r;
  grpc::ClientContext ctx;
  if (header) ctx.AddMetadata("workload.spiffe.io", "true");
  ctx.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  const auto t0 = Steady::now();
  auto reader = stub.FetchX509SVID(&ctx, X509SVIDRequest());
  X509SVIDResponse response;
  const bool got = reader->Read(&response);
  r.us = Us(Steady::now() - t0);
  if (got) ctx.TryCancel();
  const grpc::Status status = reader->Finish();
  if (header) {
    if (!got) {
      r.error = "code " + std::to_string(status.error_code()) + ": " + status.error_message();
    } else if (response.svids_size() < 1 || response.svids(0).x509_svid().empty() ||
               response.svids(0).x509_svid_key().empty()) {
      r.error = "response without an SVID";
    } else if (!expect_id.empty() && response.svids(0).spiffe_id() != expect_id) {
      r.error = "got " + response.svids(0).spiffe_id() + ", expected " + expect_id;
    } else {
      r.ok = true;
    }
  } else if (got) {
    r.error = "an SVID without the security header";
  } else if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
    r.error = "code " + std::to_string(status.error_code()) + ": " + status.error_message();
  } else {
    r.ok = true;
  }
  return r;
}

CallResult CallJwt(SpiffeWorkloadAPI::Stub& stub, bool header) {
  CallResult r;
  grpc::ClientContext ctx;
  if (header) ctx.AddMetadata("workload.spiffe.io", "true");
  ctx.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
  JWTSVIDRequest request;
  request.add_audience(kAudience);
  JWTSVIDResponse response;
  const auto t0 = Steady::now();
  const grpc::Status status = stub.FetchJWTSVID(&ctx, request, &response);
  r.us = Us(Steady::now() - t0);
  if (header) {
    if (!status.ok()) {
      r.error = "code " + std::to_string(status.error_code()) + ": " + status.error_message();
    } else if (response.svids_size() < 1 || response.svids(0).svid().empty()) {
      r.error = "response without a JWT-SVID";
    } else {
      r.ok = true;
    }
  } else if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
    r.error = "code " + std::to_string(status.error_code()) + ": " + status.error_message();
  } else {
    r.ok = true;
  }
  return r;
}

enum class Kind { kX509NoHeader, kX509, kJwtNoHeader, kJwt };
constexpr std::array<Kind, 4> kKinds = {Kind::kX509NoHeader, Kind::kX509, Kind::kJwtNoHeader,
                                        Kind::kJwt};

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kX509NoHeader:
      return "x509-nohdr";
    case Kind::kX509:
      return "x509";
    case Kind::kJwtNoHeader:
      return "jwt-nohdr";
    case Kind::kJwt:
      return "jwt";
  }
  return "?";
}

bool KindFromName(const std::string& name, Kind* out) {
  for (Kind k : kKinds) {
    if (name == KindName(k)) {
      *out = k;
      return true;
    }
  }
  return false;
}

CallResult Call(SpiffeWorkloadAPI::Stub& stub, Kind kind) {
  switch (kind) {
    case Kind::kX509NoHeader:
      return CallX509(stub, false, "");
    case Kind::kX509:
      return CallX509(stub, true, "");
    case Kind::kJwtNoHeader:
      return CallJwt(stub, false);
    case Kind::kJwt:
      return CallJwt(stub, true);
  }
  return {};
}

// Agent (and server) CPU and threads around a timed window.
struct Window {
  ProcSample agent0, server0;
  double self0 = 0;
  Steady::time_point t0;
};

Window OpenWindow(const Options& o) {
  return {SampleProcess(o.agent_pid), SampleProcess(o.server_pid), SelfCpuSeconds(), Steady::now()};
}

std::string CloseWindow(const Options& o, const Window& w, size_t calls) {
  const ProcSample a = SampleProcess(o.agent_pid), s = SampleProcess(o.server_pid);
  const double n = static_cast<double>(std::max<size_t>(calls, 1));
  std::string out = "self_cpu_us_per_call=" + Fixed((SelfCpuSeconds() - w.self0) * 1e6 / n, 1);
  if (a.cpu_seconds >= 0 && w.agent0.cpu_seconds >= 0) {
    out += " agent_cpu_us_per_call=" + Fixed((a.cpu_seconds - w.agent0.cpu_seconds) * 1e6 / n, 1) +
           " agent_threads_end=" + std::to_string(a.threads) +
           " agent_rss_kb_end=" + std::to_string(a.rss_kb);
  }
  if (s.cpu_seconds >= 0 && w.server0.cpu_seconds >= 0) {
    out += " server_cpu_us_per_call=" + Fixed((s.cpu_seconds - w.server0.cpu_seconds) * 1e6 / n, 1);
  }
  return out;
}

std::string SummaryFields(const Summary& s) {
  return "n=" + std::to_string(s.n) + " p50_us=" + Fixed(s.p50, 1) + " p90_us=" + Fixed(s.p90, 1) +
         " p99_us=" + Fixed(s.p99, 1) + " max_us=" + Fixed(s.max, 1) +
         " mean_us=" + Fixed(s.mean, 1);
}

std::string Row(const std::string& name, const Summary& s, size_t errors) {
  return "  " + Pad(name, 22, true) + Pad(std::to_string(s.n), 7) + Pad(Fixed(s.p50 / 1e3, 3), 9) +
         Pad(Fixed(s.p90 / 1e3, 3), 9) + Pad(Fixed(s.p99 / 1e3, 3), 9) +
         Pad(Fixed(s.max / 1e3, 3), 9) + Pad(Fixed(s.mean / 1e3, 3), 9) +
         Pad(std::to_string(errors), 7);
}

const char* kRowHeader =
    "  kind                        n  p50 ms   p90 ms   p99 ms   max ms  mean ms errors";

// ---------------------------------------------------------------------------------------
// latency

int RunLatency(const Options& o) {
  std::vector<Kind> kinds;
  for (size_t pos = 0; pos <= o.kinds.size();) {
    size_t comma = o.kinds.find(',', pos);
    if (comma == std::string::npos) comma = o.kinds.size();
    Kind k{};
    if (!KindFromName(o.kinds.substr(pos, comma - pos), &k)) Die("--kinds: bad list " + o.kinds);
    kinds.push_back(k);
    pos = comma + 1;
  }
  std::string error;
  double connect_us = 0;
  auto stub = Connect(o.socket, &connect_us, &error);
  if (!stub) Die(error);
  std::cout << "latency: one connection (connected in " << Fixed(connect_us / 1e3, 2) << " ms), "
            << o.warmup << " warm-up rounds, then up to " << o.calls << " rounds or " << o.seconds
            << " s; one call of each kind per round (" << o.kinds << ")\n";
  for (int i = 0; i < o.warmup; ++i) {
    for (Kind k : kinds) {
      CallResult r = Call(*stub, k);
      if (!r.ok) Die(std::string("warm-up ") + KindName(k) + ": " + r.error);
    }
  }
  std::map<Kind, std::vector<double>> times;
  std::map<Kind, size_t> errors;
  std::map<Kind, std::string> first_error;
  const Window w = OpenWindow(o);
  const auto deadline = Steady::now() + std::chrono::duration<double>(o.seconds);
  int rounds = 0;
  for (; rounds < o.calls && Steady::now() < deadline; ++rounds) {
    for (size_t j = 0; j < kinds.size(); ++j) {
      const Kind k = kinds[(j + static_cast<size_t>(rounds)) % kinds.size()];
      CallResult r = Call(*stub, k);
      if (r.ok) {
        times[k].push_back(r.us);
      } else {
        ++errors[k];
        if (first_error[k].empty()) first_error[k] = r.error;
      }
    }
  }
  const double secs = SecondsSince(w.t0);
  const std::string window = CloseWindow(o, w, static_cast<size_t>(rounds) * kinds.size());
  std::cout << "  " << rounds << " rounds in " << Fixed(secs, 2) << " s\n" << kRowHeader << "\n";
  std::map<Kind, Summary> sums;
  for (Kind k : kinds) {
    sums[k] = Summarise(times[k]);
    std::cout << Row(KindName(k), sums[k], errors[k]) << "\n";
    if (!first_error[k].empty()) std::cout << "    first error: " << first_error[k] << "\n";
  }
  auto ratio = [](double a, double b) { return b > 0 ? Fixed(a / b, 2) : std::string("-"); };
  std::cout << "  ratios to the no-header baseline of the same RPC (p50, p99): x509 "
            << ratio(sums[Kind::kX509].p50, sums[Kind::kX509NoHeader].p50) << ", "
            << ratio(sums[Kind::kX509].p99, sums[Kind::kX509NoHeader].p99) << "; jwt "
            << ratio(sums[Kind::kJwt].p50, sums[Kind::kJwtNoHeader].p50) << ", "
            << ratio(sums[Kind::kJwt].p99, sums[Kind::kJwtNoHeader].p99) << "\n";
  std::cout << "  window: " << window << " (per call of any kind)\n";
  for (Kind k : kinds) {
    std::cout << "RESULT phase=latency kind=" << KindName(k) << " " << SummaryFields(sums[k])
              << " errors=" << errors[k] << "\n";
  }
  std::cout << "RESULT phase=latency kind=window rounds=" << rounds << " secs=" << Fixed(secs, 3)
            << " " << window << "\n";
  std::cout.flush();
  size_t total_errors = 0;
  for (auto& [k, n] : errors) total_errors += n;
  return total_errors == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// fresh: one child process per uid.

// In the child, after fork: drop to `uid`, connect, time the calls, write one line to `fd`.
[[noreturn]] void ChildExit(int fd, const std::string& line) {
  const std::string l = line + "\n";
  (void)!::write(fd, l.data(), l.size());
  ::close(fd);
  ::_exit(0);
}

[[noreturn]] void FreshChild(const Options& o, int uid, int fd) {
  const auto id = static_cast<uid_t>(uid);
  if (::setgroups(0, nullptr) != 0 || ::setresgid(id, id, id) != 0 ||
      ::setresuid(id, id, id) != 0 || ::geteuid() != id || ::getuid() != id) {
    ChildExit(fd, "err " + std::to_string(uid) + " cannot_drop_privileges:_" +
                      OneLine(std::strerror(errno)));
  }
  std::string line;
  {
    std::string error;
    double connect_us = 0;
    auto stub = Connect(o.socket, &connect_us, &error);
    if (!stub) ChildExit(fd, "err " + std::to_string(uid) + " " + OneLine(error));
    const std::string expect = o.expect_prefix.empty() ? "" : o.expect_prefix + std::to_string(uid);
    CallResult fresh = CallX509(*stub, true, expect);
    if (!fresh.ok) ChildExit(fd, "err " + std::to_string(uid) + " fresh:_" + OneLine(fresh.error));
    line = "ok " + std::to_string(uid) + " " + Fixed(connect_us, 1) + " " + Fixed(fresh.us, 1);
    for (int i = 0; i < o.cached; ++i) {
      CallResult again = CallX509(*stub, true, expect);
      if (!again.ok)
        ChildExit(fd, "err " + std::to_string(uid) + " cached:_" + OneLine(again.error));
      line += " " + Fixed(again.us, 1);
    }
  }  // the channel is closed before _exit
  ChildExit(fd, line);
}

int RunFresh(const Options& o) {
  if (::geteuid() != 0) Die("fresh: must run as root (children switch to other uids)");
  const int uid_count = o.uid_count > 0 ? std::min(o.uid_count, o.count) : o.count;
  std::cout << "fresh: " << o.count << " child processes, uids " << o.uid_base << ".."
            << (o.uid_base + uid_count - 1) << (uid_count < o.count ? " round robin" : "") << ", "
            << o.parallel << " at a time; each connects, times FetchX509SVID (issued if first "
            << "for its uid), then " << o.cached << " more on the same connection (cached); bound "
            << o.seconds << " s\n";
  std::cout.flush();  // children inherit the stdio buffer
  struct Child {
    pid_t pid;
    int fd;
    int uid;
    Steady::time_point started;
    std::string out;
  };
  std::vector<Child> running;
  std::vector<double> connect, fresh, cached;
  size_t errors = 0;
  std::vector<std::string> error_lines;
  long max_threads = 0;
  int next = 0, done = 0;
  const Window w = OpenWindow(o);
  const auto deadline = Steady::now() + std::chrono::duration<double>(o.seconds);
  constexpr auto kChildTimeout = std::chrono::seconds(30);
  auto record_error = [&](const std::string& e) {
    ++errors;
    if (error_lines.size() < 5) error_lines.push_back(e);
  };
  while ((next < o.count || !running.empty())) {
    const bool time_left = Steady::now() < deadline;
    while (time_left && next < o.count && running.size() < static_cast<size_t>(o.parallel)) {
      int fds[2];
      if (::pipe(fds) != 0) Die("pipe");
      const int uid = o.uid_base + next % uid_count;
      const pid_t pid = ::fork();
      if (pid < 0) Die("fork");
      if (pid == 0) {
        ::close(fds[0]);
        for (const Child& c : running) ::close(c.fd);
        FreshChild(o, uid, fds[1]);
      }
      ::close(fds[1]);
      running.push_back({pid, fds[0], uid, Steady::now(), {}});
      ++next;
    }
    if (running.empty()) break;  // out of time, nothing left to wait for
    std::vector<pollfd> pfds;
    for (const Child& c : running) pfds.push_back({c.fd, POLLIN, 0});
    (void)::poll(pfds.data(), pfds.size(), 100);
    if (o.agent_pid > 0) max_threads = std::max(max_threads, SampleProcess(o.agent_pid).threads);
    for (size_t i = 0; i < running.size();) {
      Child& c = running[i];
      bool eof = false;
      if (pfds[i].revents != 0) {
        char buf[512];
        const ssize_t n = ::read(c.fd, buf, sizeof buf);
        if (n > 0)
          c.out.append(buf, static_cast<size_t>(n));
        else
          eof = true;
      }
      const bool late = Steady::now() - c.started > kChildTimeout;
      if (!eof && !late) {
        ++i;
        continue;
      }
      if (late && !eof) ::kill(c.pid, SIGKILL);
      int status = 0;
      ::waitpid(c.pid, &status, 0);
      ::close(c.fd);
      ++done;
      std::istringstream in(c.out);
      std::string tag;
      int uid = 0;
      in >> tag >> uid;
      if (tag == "ok") {
        double cu = 0, fu = 0, x = 0;
        in >> cu >> fu;
        connect.push_back(cu);
        fresh.push_back(fu);
        while (in >> x) cached.push_back(x);
      } else if (late && !eof) {
        record_error("uid " + std::to_string(c.uid) + ": killed after 30 s");
      } else {
        std::string rest;
        std::getline(in, rest);
        record_error("uid " + std::to_string(c.uid) + ":" + (rest.empty() ? " no output" : rest));
      }
      pfds.erase(pfds.begin() + static_cast<long>(i));
      running.erase(running.begin() + static_cast<long>(i));
    }
  }
  const double secs = SecondsSince(w.t0);
  const std::string window = CloseWindow(o, w, static_cast<size_t>(done));
  if (next < o.count) {
    record_error("time bound reached: " + std::to_string(o.count - next) + " uids not started");
  }
  const Summary c = Summarise(connect), f = Summarise(fresh), k = Summarise(cached);
  std::cout << "  " << done << " children in " << Fixed(secs, 2) << " s ("
            << Fixed(static_cast<double>(done) / secs, 1)
            << " per s, fork + gRPC setup + connect + calls); agent threads max " << max_threads
            << "\n"
            << kRowHeader << "\n"
            << Row("connect", c, 0) << "\n"
            << Row(uid_count < o.count ? "x509 1st call (" + std::to_string(uid_count) + " uid)"
                                       : "x509 1st call (issued)",
                   f, errors)
            << "\n"
            << Row("x509 next calls (cached)", k, 0) << "\n";
  for (const std::string& e : error_lines) std::cout << "    error: " << e << "\n";
  std::cout << "  window: " << window << " (per child)\n";
  std::cout << "RESULT phase=fresh kind=connect " << SummaryFields(c) << "\n"
            << "RESULT phase=fresh kind=x509-first distinct_uids=" << uid_count << " "
            << SummaryFields(f) << " errors=" << errors << "\n"
            << "RESULT phase=fresh kind=x509-next " << SummaryFields(k) << "\n"
            << "RESULT phase=fresh kind=window children=" << done << " secs=" << Fixed(secs, 3)
            << " agent_threads_max=" << max_threads << " " << window << "\n";
  std::cout.flush();
  return errors == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// throughput: C threads, one connection each.

int RunThroughput(const Options& o) {
  Kind kind{};
  if (!KindFromName(o.rpc, &kind)) Die("--rpc: one of x509, jwt, x509-nohdr, jwt-nohdr");
  const auto clients = static_cast<size_t>(o.clients);
  std::vector<std::unique_ptr<SpiffeWorkloadAPI::Stub>> stubs;
  for (size_t i = 0; i < clients; ++i) {
    std::string error;
    auto stub = Connect(o.socket, nullptr, &error);
    if (!stub) Die(error);
    // One untimed call per connection: the SVID/JWT is cached and the connection warm.
    CallResult r = Call(*stub, kind);
    if (!r.ok) Die(std::string("warm-up ") + KindName(kind) + ": " + r.error);
    stubs.push_back(std::move(stub));
  }
  std::atomic<long> budget{o.max_calls};
  std::atomic<long> max_threads{0};
  std::atomic<bool> stop_sampler{false};
  std::vector<std::vector<double>> times(clients);
  std::vector<size_t> errors(clients, 0);
  std::vector<std::string> first_error(clients);
  std::latch start(static_cast<std::ptrdiff_t>(clients) + 1);
  const auto bound = std::chrono::duration<double>(o.seconds);
  Steady::time_point deadline;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      while (budget.fetch_sub(1) > 0 && Steady::now() < deadline) {
        CallResult r = Call(*stubs[i], kind);
        if (r.ok) {
          times[i].push_back(r.us);
        } else {
          ++errors[i];
          if (first_error[i].empty()) first_error[i] = r.error;
        }
      }
    });
  }
  std::thread sampler([&] {
    for (int i = 0; i < 100000 && !stop_sampler.load(); ++i) {
      if (o.agent_pid > 0) {
        long t = SampleProcess(o.agent_pid).threads;
        long seen = max_threads.load();
        while (t > seen && !max_threads.compare_exchange_weak(seen, t)) {
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  const Window w = OpenWindow(o);
  deadline = w.t0 + std::chrono::duration_cast<Steady::duration>(bound);
  start.arrive_and_wait();
  for (auto& t : threads) t.join();
  const double secs = SecondsSince(w.t0);
  std::vector<double> all;
  size_t total_errors = 0;
  std::string an_error;
  for (size_t i = 0; i < clients; ++i) {
    all.insert(all.end(), times[i].begin(), times[i].end());
    total_errors += errors[i];
    if (an_error.empty()) an_error = first_error[i];
  }
  const std::string window = CloseWindow(o, w, all.size() + total_errors);
  stop_sampler = true;
  sampler.join();
  const Summary s = Summarise(all);
  const double rate = static_cast<double>(all.size()) / secs;
  std::cout << "throughput: " << KindName(kind) << ", " << clients
            << " clients (own connection each), bound " << o.max_calls << " calls or " << o.seconds
            << " s\n  " << all.size() << " calls in " << Fixed(secs, 2) << " s: " << Fixed(rate, 0)
            << " per s; agent threads max " << max_threads.load() << "\n"
            << kRowHeader << "\n"
            << Row(KindName(kind), s, total_errors) << "\n";
  if (!an_error.empty()) std::cout << "    first error: " << an_error << "\n";
  std::cout << "  window: " << window << "\n";
  std::cout << "RESULT phase=throughput kind=" << KindName(kind) << " clients=" << clients
            << " secs=" << Fixed(secs, 3) << " per_s=" << Fixed(rate, 1) << " " << SummaryFields(s)
            << " errors=" << total_errors << " agent_threads_max=" << max_threads.load() << " "
            << window << "\n";
  std::cout.flush();
  // Channels close before the process exits (the agent sees every connection end).
  stubs.clear();
  return total_errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseFlags(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  if (o.mode == "latency") return RunLatency(o);
  if (o.mode == "fresh") return RunFresh(o);
  if (o.mode == "throughput") return RunThroughput(o);
  Die("unknown mode " + o.mode);
}
