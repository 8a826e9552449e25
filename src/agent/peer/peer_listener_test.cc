// PeerListener with a real gRPC server and real client processes over the Unix socket.
// Clients are a separate executable (testdata/test_client.cc) started with fork+exec: gRPC
// must not run in a forked copy of this (multi-threaded) test process.
#include "agent/peer/peer_listener.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "peer_test.grpc.pb.h"

namespace sigil::agent::peer {
namespace {

using namespace std::chrono_literals;
using sigil::peer::test::PeerEcho;
using sigil::peer::test::WhoReply;
using sigil::peer::test::WhoRequest;

constexpr uid_t kNobody = 65534;

// "Pid:" of a pidfd, from /proc/self/fdinfo.
int64_t PidOfPidfd(int pidfd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(pidfd));
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("Pid:")) return std::stoll(line.substr(4));
  }
  return -1;
}

int CountPidfds() {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec);
    if (!ec && target.string() == "anon_inode:[pidfd]") ++n;
  }
  return n;
}

struct HoldResult {
  std::optional<PeerInfo> before;
  std::optional<PeerInfo> after;
  std::string peer;
};

class EchoService final : public PeerEcho::Service {
 public:
  std::atomic<PeerListener*> listener{nullptr};

  grpc::Status Who(grpc::ServerContext* ctx, const WhoRequest* req, WhoReply* reply) override {
    PeerListener* l = listener.load();
    std::optional<PeerInfo> info = l != nullptr ? l->PeerOf(*ctx) : std::nullopt;
    reply->set_peer(ctx->peer());
    reply->set_found(info.has_value());
    if (info) {
      reply->set_pid(info->pid);
      reply->set_uid(info->uid);
      reply->set_gid(info->gid);
      reply->set_pidfd_pid(PidOfPidfd(info->pidfd_raw()));
      reply->set_pidfd_from_socket(info->pidfd_from_socket);
      reply->set_connection_id(info->connection_id);
    }
    if (req->hold_ms() > 0) {
      {
        std::lock_guard lock(mu_);
        ++holds_started_;
        hold_peers_.push_back(ctx->peer());
      }
      cv_.notify_all();
      std::this_thread::sleep_for(std::chrono::milliseconds(req->hold_ms()));
      HoldResult r{info, l != nullptr ? l->PeerOf(*ctx) : std::nullopt, ctx->peer()};
      {
        std::lock_guard lock(mu_);
        holds_done_.push_back(std::move(r));
      }
      cv_.notify_all();
    }
    return grpc::Status::OK;
  }

  bool WaitHoldsStarted(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 20s, [&] { return holds_started_ >= n; });
  }
  std::vector<HoldResult> WaitHoldsDone(size_t n) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, 20s, [&] { return holds_done_.size() >= n; });
    return holds_done_;
  }
  std::vector<std::string> HoldPeers() {
    std::lock_guard lock(mu_);
    return hold_peers_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int holds_started_ = 0;
  std::vector<std::string> hold_peers_;
  std::vector<HoldResult> holds_done_;
};

// A client process; its stdout is collected by Finish().
class Client {
 public:
  static Client Start(const std::string& socket, std::vector<std::string> args,
                      std::optional<uid_t> uid = std::nullopt) {
    std::vector<std::string> all = {SIGIL_PEER_TEST_CLIENT, socket};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) std::abort();
    Client c;
    c.pid_ = ::fork();
    if (c.pid_ == 0) {
      // Async-signal-safe calls only until exec.
      ::dup2(out[1], 1);
      if (uid) {
        if (::setgroups(0, nullptr) != 0 || ::setresgid(*uid, *uid, *uid) != 0 ||
            ::setresuid(*uid, *uid, *uid) != 0) {
          _exit(126);
        }
      }
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    ::close(out[1]);
    c.out_ = out[0];
    return c;
  }
  Client(Client&& o) noexcept : pid_(std::exchange(o.pid_, -1)), out_(std::exchange(o.out_, -1)) {}
  ~Client() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  pid_t pid() const { return pid_; }
  void Kill() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // Returns stdout; *status = exit status.
  std::string Finish(int* status) {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(out_, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return out;
  }

 private:
  Client() = default;
  pid_t pid_ = -1;
  int out_ = -1;
};

std::map<std::string, std::string> ParseLine(const std::string& text) {
  std::map<std::string, std::string> kv;
  std::istringstream in(text.substr(0, text.find('\n')));
  std::string tok;
  while (in >> tok) {
    size_t eq = tok.find('=');
    if (eq != std::string::npos) kv[tok.substr(0, eq)] = tok.substr(eq + 1);
  }
  return kv;
}

class PeerListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sigil-peer-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);  // unprivileged clients must reach the socket
    socket_ = dir_ + "/agent.sock";
    grpc::ServerBuilder builder;  // no listening port: channels come from PeerListener
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (listener_) listener_->Stop();
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() + 5s);
      server_->Wait();
    }
    listener_.reset();
    std::filesystem::remove_all(dir_);
  }

  void StartListener(const ListenOptions& options = {}, std::string path = "") {
    auto l = PeerListener::Listen(path.empty() ? socket_ : path, server_.get(), options);
    ASSERT_TRUE(l.ok()) << l.error().ToString();
    listener_ = std::move(l).value();
    service_.listener.store(listener_.get());
  }

  std::map<std::string, std::string> RunOnce(std::optional<uid_t> uid = std::nullopt,
                                             pid_t* pid = nullptr) {
    Client c = Client::Start(socket_, {"once"}, uid);
    if (pid != nullptr) *pid = c.pid();
    int status = -1;
    std::string out = c.Finish(&status);
    EXPECT_EQ(status, 0) << out;
    return ParseLine(out);
  }

  bool WaitForConnections(size_t n, std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (listener_->GetStats().connections == n) return true;
      std::this_thread::sleep_for(10ms);
    }
    return listener_->GetStats().connections == n;
  }

  std::string dir_;
  std::string socket_;
  EchoService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<PeerListener> listener_;
};

TEST_F(PeerListenerTest, AttributesTheCallToTheClientProcess) {
  StartListener();
  pid_t child = 0;
  auto r = RunOnce(std::nullopt, &child);
  EXPECT_EQ(r["found"], "1");
  EXPECT_EQ(r["pid"], std::to_string(child));
  EXPECT_EQ(r["self"], std::to_string(child));
  EXPECT_EQ(r["pidfd_pid"], std::to_string(child));
  EXPECT_EQ(r["uid_seen"], std::to_string(::getuid()));
  EXPECT_EQ(r["gid_seen"], std::to_string(::getgid()));
  EXPECT_EQ(r["from_socket"], "1");  // kernel >= 6.5: SO_PEERPIDFD
  // peer() is "fd:N" with N from the listener's range.
  ASSERT_TRUE(r["peer"].starts_with("fd:")) << r["peer"];
  int n = std::stoi(r["peer"].substr(3));
  auto stats = listener_->GetStats();
  std::cout << "[ info ] ServerContext::peer() = \"" << r["peer"] << "\", fd range ["
            << stats.fd_range_begin << ", " << stats.fd_range_end << ")\n";
  EXPECT_GE(n, stats.fd_range_begin);
  EXPECT_LT(n, stats.fd_range_end);
  EXPECT_EQ(stats.accepted, 1u);
}

TEST_F(PeerListenerTest, UnprivilegedClientUid) {
  StartListener();
  pid_t child = 0;
  auto r = RunOnce(kNobody, &child);
  EXPECT_EQ(r["found"], "1");
  EXPECT_EQ(r["uid"], std::to_string(kNobody));  // the client's own view
  EXPECT_EQ(r["uid_seen"], std::to_string(kNobody));
  EXPECT_EQ(r["gid_seen"], std::to_string(kNobody));
  EXPECT_EQ(r["pid"], std::to_string(child));
  EXPECT_EQ(r["pidfd_pid"], std::to_string(child));
}

TEST_F(PeerListenerTest, PidfdOpenFallback) {
  ListenOptions o;
  o.TEST_disable_socket_pidfd = true;
  StartListener(o);
  pid_t child = 0;
  auto r = RunOnce(std::nullopt, &child);
  EXPECT_EQ(r["found"], "1");
  EXPECT_EQ(r["from_socket"], "0");
  EXPECT_EQ(r["pidfd_pid"], std::to_string(child));
}

TEST_F(PeerListenerTest, CallNotFromTheListenerHasNoPeer) {
  StartListener();
  auto stub = PeerEcho::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext ctx;
  WhoRequest req;
  WhoReply reply;
  ASSERT_TRUE(stub->Who(&ctx, req, &reply).ok());
  EXPECT_FALSE(reply.found()) << reply.peer();
}

// 200 open/close cycles from one process and 8 x 25 from concurrent processes, with only 8 fd
// numbers in the range (maximal reuse): every call is attributed to its own process, the table
// stays small and drains, and every pidfd is closed.
TEST_F(PeerListenerTest, ManyConnectionsNeverMisattributedAndTableDrains) {
  ListenOptions o;
  o.fd_range_size = 8;
  StartListener(o);
  int pidfds_before = CountPidfds();
  std::vector<Client> clients;
  clients.push_back(Client::Start(socket_, {"cycles", "200"}));
  for (int i = 0; i < 8; ++i) clients.push_back(Client::Start(socket_, {"cycles", "25"}));
  size_t max_table = 0;
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      max_table = std::max(max_table, listener_->GetStats().connections);
      std::this_thread::sleep_for(1ms);
    }
  });
  for (auto& c : clients) {
    int status = -1;
    std::string out = c.Finish(&status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find(" bad=0"), std::string::npos) << out;
  }
  done.store(true);
  watcher.join();
  EXPECT_LE(max_table, 40u);  // one live + a few closing per client, never all 400
  EXPECT_TRUE(WaitForConnections(0)) << listener_->GetStats().connections;
  auto stats = listener_->GetStats();
  EXPECT_EQ(stats.accepted, 400u);
  EXPECT_EQ(stats.rejected, 0u);
  EXPECT_EQ(CountPidfds(), pidfds_before);
}

// The handler of a killed client keeps running while new connections arrive: gRPC keeps the
// connection's fd open until the call ends, so its number is not reused and PeerOf still
// names the killed client at the end. With a 2-number range every new connection is forced
// onto the other number.
TEST_F(PeerListenerTest, HandlerOutlivingItsClientKeepsItsPeer) {
  ListenOptions o;
  o.fd_range_size = 2;
  StartListener(o);
  Client held = Client::Start(socket_, {"hold", "1500"});
  pid_t held_pid = held.pid();
  ASSERT_TRUE(service_.WaitHoldsStarted(1));
  std::string held_peer = service_.HoldPeers().at(0);
  held.Kill();
  for (int i = 0; i < 5; ++i) {
    auto r = RunOnce();
    EXPECT_EQ(r["found"], "1");
    EXPECT_NE(r["peer"], held_peer);
    EXPECT_NE(r["pid"], std::to_string(held_pid));
  }
  auto done = service_.WaitHoldsDone(1);
  ASSERT_EQ(done.size(), 1u);
  ASSERT_TRUE(done[0].before.has_value());
  ASSERT_TRUE(done[0].after.has_value()) << "the connection's entry vanished under its handler";
  EXPECT_EQ(done[0].before->pid, held_pid);
  EXPECT_EQ(done[0].after->pid, held_pid);
  EXPECT_EQ(done[0].after->connection_id, done[0].before->connection_id);
  EXPECT_EQ(done[0].peer, held_peer);
  EXPECT_TRUE(WaitForConnections(0));
}

TEST_F(PeerListenerTest, ConnectionsBeyondTheLimitAreRefused) {
  ListenOptions o;
  o.max_connections = 3;
  StartListener(o);
  std::vector<Client> held;
  for (int i = 0; i < 3; ++i) held.push_back(Client::Start(socket_, {"hold", "1500"}));
  ASSERT_TRUE(service_.WaitHoldsStarted(3));
  {
    Client extra = Client::Start(socket_, {"once"});
    int status = -1;
    std::string out = extra.Finish(&status);
    EXPECT_NE(status, 0) << out;
  }
  EXPECT_GE(listener_->GetStats().rejected, 1u);
  EXPECT_LE(listener_->GetStats().connections, 3u);
  for (auto& c : held) {
    int status = -1;
    EXPECT_NE(c.Finish(&status).find("found=1"), std::string::npos);
  }
  EXPECT_TRUE(WaitForConnections(0));
  EXPECT_EQ(RunOnce()["found"], "1");
}

TEST_F(PeerListenerTest, StopWithLiveConnections) {
  StartListener();
  std::vector<Client> held;
  for (int i = 0; i < 2; ++i) held.push_back(Client::Start(socket_, {"hold", "800"}));
  ASSERT_TRUE(service_.WaitHoldsStarted(2));
  listener_->Stop();
  listener_->Stop();  // idempotent
  struct stat st {};
  EXPECT_NE(::lstat(socket_.c_str(), &st), 0);  // unlinked
  auto done = service_.WaitHoldsDone(2);
  ASSERT_EQ(done.size(), 2u);
  for (const auto& d : done) EXPECT_TRUE(d.after.has_value());  // PeerOf works after Stop
  for (auto& c : held) {
    int status = -1;
    EXPECT_NE(c.Finish(&status).find("found=1"), std::string::npos);
  }
}

TEST_F(PeerListenerTest, SocketFileModeAndParentDirectories) {
  mode_t old = ::umask(077);
  std::string nested = dir_ + "/run/sigil/agent.sock";
  StartListener({}, nested);
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::lstat(nested.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  for (const auto& d : {dir_ + "/run", dir_ + "/run/sigil"}) {
    ASSERT_EQ(::stat(d.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0755u) << d;
  }
  // No temporary names left behind.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_ + "/run/sigil")) {
    ++entries;
  }
  EXPECT_EQ(entries, 1);
  socket_ = nested;
  EXPECT_EQ(RunOnce(kNobody)["found"], "1");
}

TEST_F(PeerListenerTest, ExistingPathRules) {
  // A regular file is never replaced.
  { std::ofstream(socket_) << "precious"; }
  auto l = PeerListener::Listen(socket_, server_.get());
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.error().code(), ErrorCode::kFailedPrecondition) << l.error().ToString();
  {
    std::ifstream in(socket_);
    std::string content;
    in >> content;
    EXPECT_EQ(content, "precious");
  }
  std::filesystem::remove(socket_);

  // A stale socket (bound, nobody listening) is replaced.
  {
    int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_.c_str());
    ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(s);
  }
  StartListener();
  EXPECT_EQ(RunOnce()["found"], "1");

  // A live socket is not taken over.
  auto second = PeerListener::Listen(socket_, server_.get());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code(), ErrorCode::kAlreadyExists) << second.error().ToString();

  // Relative and over-long paths.
  EXPECT_EQ(PeerListener::Listen("agent.sock", server_.get()).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(PeerListener::Listen("/" + std::string(200, 'a'), server_.get()).error().code(),
            ErrorCode::kInvalidArgument);

  // Stop() leaves a socket file that is no longer ours alone.
  std::filesystem::remove(socket_);
  {
    int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_.c_str());
    ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(s);
  }
  listener_->Stop();
  struct stat st {};
  EXPECT_EQ(::lstat(socket_.c_str(), &st), 0);
}

}  // namespace
}  // namespace sigil::agent::peer
