#include "store/pg_test_cluster.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace sigil::store::testing {
namespace {

constexpr char kDefaultBindir[] = "/usr/lib/postgresql/15/bin";

std::mutex g_shared_mu;
std::unique_ptr<PgTestCluster> g_shared;  // guarded by g_shared_mu

// In a forked child: closes every descriptor above stderr (close_range(2), Linux 5.9).
void CloseFrom3() { ::syscall(SYS_close_range, 3U, ~0U, 0U); }

// Waits for `pid` at most `timeout`, then kills it. Returns its wait status.
Result<int> WaitBounded(pid_t pid, std::chrono::seconds timeout, const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (true) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return Internal(what + ": waitpid: " + std::strerror(errno));
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return Internal(what + ": still running after " + std::to_string(timeout.count()) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string Tail(const std::string& path, size_t max = 4000) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > max ? "..." + s.substr(s.size() - max) : s;
}

class PgClusterEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { PgTestCluster::ShutdownShared(); }
};

// Registered at static initialisation of the test binary; gtest owns it.
[[maybe_unused]] ::testing::Environment* const g_environment =
    ::testing::AddGlobalTestEnvironment(new PgClusterEnvironment);

}  // namespace

Result<PgTestCluster*> PgTestCluster::Shared() {
  std::lock_guard lock(g_shared_mu);
  if (!g_shared) {
    SIGIL_ASSIGN_OR_RETURN(g_shared, Create());
  }
  return g_shared.get();
}

void PgTestCluster::ShutdownShared() {
  std::unique_ptr<PgTestCluster> cluster;
  {
    std::lock_guard lock(g_shared_mu);
    cluster = std::move(g_shared);
  }
  cluster.reset();
}

Result<std::unique_ptr<PgTestCluster>> PgTestCluster::Create() {
  std::unique_ptr<PgTestCluster> c(new PgTestCluster());
  const char* env_bindir = std::getenv("SIGIL_PG_BINDIR");
  c->bindir_ = env_bindir != nullptr && *env_bindir != '\0' ? env_bindir : kDefaultBindir;
  for (const char* tool : {"initdb", "pg_ctl", "postgres"}) {
    const std::string path = c->bindir_ + "/" + tool;
    if (::access(path.c_str(), X_OK) != 0) {
      return FailedPrecondition("PostgreSQL test cluster: " + path +
                                " not found or not executable: install postgresql-15 "
                                "(scripts/setup.sh) or set SIGIL_PG_BINDIR");
    }
  }
  if (::geteuid() == 0) {
    // getpwnam_r: other test threads may be running.
    struct passwd pw {};
    struct passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwnam_r("postgres", &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
      return FailedPrecondition(
          "PostgreSQL test cluster: running as root, and there is no 'postgres' user to run "
          "the server as (installing postgresql-15 creates it)");
    }
    c->as_postgres_ = true;
    c->uid_ = pw.pw_uid;
    c->gid_ = pw.pw_gid;
  } else {
    c->uid_ = ::geteuid();
    c->gid_ = ::getegid();
  }
  char tmpl[] = "/tmp/sigil-pg-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return Internal(std::string("PostgreSQL test cluster: mkdtemp: ") + std::strerror(errno));
  }
  c->dir_ = tmpl;
  if (c->as_postgres_ && ::chown(c->dir_.c_str(), c->uid_, c->gid_) != 0) {
    return Internal("PostgreSQL test cluster: chown " + c->dir_ + ": " + std::strerror(errno));
  }
  // The watchdog first, so even a failing initdb or start leaves nothing behind.
  SIGIL_TRY(c->StartWatchdog());
  // -N: no fsync during initdb (a throwaway cluster); the server itself runs with fsync on.
  SIGIL_TRY(c->RunPgCommand({"initdb", "-D", c->data_dir(), "-U", "postgres", "-A", "trust", "-E",
                             "UTF8", "--locale=C", "-N"},
                            c->dir_ + "/initdb.log", std::chrono::seconds(120)));
  SIGIL_TRY(c->Start());
  return c;
}

Result<void> PgTestCluster::StartWatchdog() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return Internal(std::string("PostgreSQL test cluster: pipe: ") + std::strerror(errno));
  }
  OwnedFd read_end(fds[0]);
  watchdog_pipe_.Reset(fds[1]);
  // Runs when every write end is closed, i.e. this process is gone (the destructor closes it
  // too, after a clean stop). SIGQUIT is PostgreSQL's immediate shutdown.
  const std::string script =
      "cat >/dev/null; "
      "pid=$(head -n1 '" +
      data_dir() +
      "/postmaster.pid' 2>/dev/null); "
      "if [ -n \"$pid\" ]; then kill -QUIT \"$pid\" 2>/dev/null; i=0; "
      "while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; "
      "kill -KILL \"$pid\" 2>/dev/null; fi; "
      "rm -rf '" +
      dir_ + "'";
  const char* argv[] = {"/bin/sh", "-c", script.c_str(), nullptr};
  const char* envp[] = {"PATH=/usr/bin:/bin", nullptr};
  const pid_t pid = ::fork();
  if (pid < 0)
    return Internal(std::string("PostgreSQL test cluster: fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::setsid();  // survives a kill of the test's process group
    ::dup2(read_end.get(), 0);
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    CloseFrom3();
    ::execve(argv[0], const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  watchdog_pid_ = pid;
  return Ok();
}

Result<void> PgTestCluster::RunPgCommand(const std::vector<std::string>& args,
                                         const std::string& log,
                                         std::chrono::seconds timeout) const {
  const std::string tool = bindir_ + "/" + args[0];
  std::vector<const char*> argv;
  argv.push_back(tool.c_str());
  for (size_t i = 1; i < args.size(); ++i) argv.push_back(args[i].c_str());
  argv.push_back(nullptr);
  const std::string home = "HOME=" + dir_;
  const char* envp[] = {"PATH=/usr/bin:/bin", "LC_ALL=C", home.c_str(), nullptr};
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    return Internal("PostgreSQL test cluster: open " + log + ": " + std::strerror(errno));
  OwnedFd log_owner(log_fd);
  const pid_t pid = ::fork();
  if (pid < 0)
    return Internal(std::string("PostgreSQL test cluster: fork: ") + std::strerror(errno));
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec: other threads may exist.
    const int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    CloseFrom3();  // the server must not inherit test descriptors (e.g. the watchdog pipe)
    if (as_postgres_ &&
        (::setgroups(0, nullptr) != 0 || ::setgid(gid_) != 0 || ::setuid(uid_) != 0)) {
      ::_exit(126);
    }
    ::execve(argv[0], const_cast<char* const*>(argv.data()), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  SIGIL_ASSIGN_OR_RETURN(int status, WaitBounded(pid, timeout, args[0]));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Internal("PostgreSQL test cluster: " + args[0] + " failed (status " +
                    std::to_string(status) + "): " + Tail(log, 2000));
  }
  return Ok();
}

Result<void> PgTestCluster::Start() {
  // Unix socket only, in our private directory; small shared memory (many clusters may run
  // side by side in parallel test processes).
  const std::string opts = "-k " + dir_ +
                           " -c listen_addresses='' -c shared_buffers=16MB"
                           " -c max_connections=200 -c fsync=on";
  SIGIL_TRY(RunPgCommand({"pg_ctl", "-D", data_dir(), "-l", dir_ + "/server.log", "-w", "-t", "60",
                          "-o", opts, "start"},
                         dir_ + "/pg_ctl.log", std::chrono::seconds(90)));
  running_ = true;
  return Ok();
}

Result<void> PgTestCluster::Stop() {
  SIGIL_TRY(RunPgCommand({"pg_ctl", "-D", data_dir(), "-m", "fast", "-w", "-t", "60", "stop"},
                         dir_ + "/pg_ctl.log", std::chrono::seconds(90)));
  running_ = false;
  return Ok();
}

Result<void> PgTestCluster::Crash() {
  SIGIL_TRY(RunPgCommand({"pg_ctl", "-D", data_dir(), "-m", "immediate", "-w", "-t", "60", "stop"},
                         dir_ + "/pg_ctl.log", std::chrono::seconds(90)));
  running_ = false;
  return Ok();
}

std::string PgTestCluster::ServerLogTail() const { return Tail(dir_ + "/server.log"); }
std::string PgTestCluster::ServerLog() const {
  return Tail(dir_ + "/server.log", std::string::npos);
}

void PgTestCluster::Destroy() {
  if (running_) (void)Stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  watchdog_pipe_.Reset();  // the watchdog wakes, finds nothing to do, exits
  if (watchdog_pid_ > 0) (void)WaitBounded(watchdog_pid_, std::chrono::seconds(20), "watchdog");
  watchdog_pid_ = -1;
}

PgTestCluster::~PgTestCluster() { Destroy(); }

std::string PgTestCluster::UrlFor(const std::string& database) const {
  return "postgresql:///" + database + "?host=" + dir_ + "&user=postgres";
}

Result<std::string> PgTestCluster::CreateDatabase(std::string* name) {
  std::string db;
  {
    std::lock_guard lock(db_mu_);
    db = "sigil_test_" + std::to_string(++next_db_);
  }
  SIGIL_TRY(PgExec(UrlFor("postgres"), "CREATE DATABASE " + db));
  if (name != nullptr) *name = db;
  return UrlFor(db);
}

Result<void> PgTestCluster::DropDatabase(const std::string& name) {
  return PgExec(UrlFor("postgres"), "DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
}

namespace {

struct PgConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PgResultClearer {
  void operator()(PGresult* r) const { PQclear(r); }
};

Result<std::unique_ptr<PGresult, PgResultClearer>> RawExec(const std::string& url,
                                                           const std::string& sql) {
  std::unique_ptr<PGconn, PgConnCloser> conn(PQconnectdb(url.c_str()));
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return Unavailable("test libpq: connect: " + std::string(PQerrorMessage(conn.get())));
  }
  PQsetNoticeProcessor(
      conn.get(), [](void*, const char*) {}, nullptr);
  std::unique_ptr<PGresult, PgResultClearer> res(PQexec(conn.get(), sql.c_str()));
  const ExecStatusType st = PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    return Internal("test libpq: " + std::string(PQerrorMessage(conn.get())));
  }
  return res;
}

}  // namespace

Result<std::unique_ptr<PgRawSession>> PgRawSession::Connect(const std::string& url) {
  PGconn* conn = PQconnectdb(url.c_str());
  std::unique_ptr<PgRawSession> session(new PgRawSession(conn));
  if (PQstatus(conn) != CONNECTION_OK) {
    return Unavailable("test libpq: connect: " + std::string(PQerrorMessage(conn)));
  }
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  return session;
}

PgRawSession::~PgRawSession() { PQfinish(static_cast<PGconn*>(conn_)); }

Result<void> PgRawSession::Exec(const std::string& sql) {
  auto* conn = static_cast<PGconn*>(conn_);
  std::unique_ptr<PGresult, PgResultClearer> res(PQexec(conn, sql.c_str()));
  const ExecStatusType st = PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    return Internal("test libpq: " + std::string(PQerrorMessage(conn)));
  }
  return Ok();
}

Result<void> PgExec(const std::string& url, const std::string& sql) {
  SIGIL_TRY(RawExec(url, sql));
  return Ok();
}

Result<std::string> PgQueryText(const std::string& url, const std::string& sql) {
  SIGIL_ASSIGN_OR_RETURN(auto res, RawExec(url, sql));
  if (PQntuples(res.get()) == 0) return NotFound("test libpq: no rows");
  return std::string(PQgetvalue(res.get(), 0, 0));
}

}  // namespace sigil::store::testing
