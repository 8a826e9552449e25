#include "agent/peer/peer_listener.h"

#include <fcntl.h>
#include <grpcpp/server_posix.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>

#include "agent/peer/socket_path.h"

namespace sigil::agent::peer {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint64_t kListenTag = ~uint64_t{0};
constexpr uint64_t kWakeTag = ~uint64_t{0} - 1;
constexpr milliseconds kHangupRecheck{10};
constexpr milliseconds kHangupWindow{2000};
constexpr milliseconds kSweepInterval{1000};
constexpr milliseconds kAcceptPause{100};
constexpr int kAcceptBatch = 64;
constexpr rlim_t kMaxFdNumber = rlim_t{1} << 20;
constexpr std::string_view kFdPeerPrefix = "fd:";

Error SysError(std::string_view what, int err) {
  const char* desc = ::strerrordesc_np(err);
  return Internal("peer listener: " + std::string(what) + ": " + (desc != nullptr ? desc : "?"));
}

int MsUntil(Clock::time_point now, Clock::time_point t) {
  if (t <= now) return 0;
  return static_cast<int>(std::chrono::ceil<milliseconds>(t - now).count());
}

}  // namespace

Result<std::unique_ptr<PeerListener>> PeerListener::Listen(const std::string& socket_path,
                                                           grpc::Server* server, mode_t mode) {
  ListenOptions options;
  options.mode = mode;
  return Listen(socket_path, server, options);
}

Result<std::unique_ptr<PeerListener>> PeerListener::Listen(const std::string& socket_path,
                                                           grpc::Server* server,
                                                           const ListenOptions& options) {
  if (server == nullptr) return InvalidArgument("peer listener: no gRPC server");
  if ((options.mode & ~mode_t{07777}) != 0) return InvalidArgument("peer listener: bad mode");
  if (options.max_connections == 0 || options.fd_range_size < 1) {
    return InvalidArgument("peer listener: max_connections and fd_range_size must be positive");
  }
  SIGIL_ASSIGN_OR_RETURN(BoundSocket bound, BindListeningSocket(socket_path, options.mode));
  std::unique_ptr<PeerListener> l(new PeerListener(socket_path, server, options));
  l->listen_fd_ = std::move(bound.fd);
  l->file_dev_ = bound.dev;
  l->file_ino_ = bound.ino;  // from here on, the destructor unlinks the file

  l->epoll_fd_.Reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!l->epoll_fd_.valid()) return SysError("epoll_create1", errno);
  l->wake_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!l->wake_fd_.valid()) return SysError("eventfd", errno);
  for (auto [fd, tag] :
       {std::pair{l->listen_fd_.get(), kListenTag}, std::pair{l->wake_fd_.get(), kWakeTag}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    if (::epoll_ctl(l->epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return SysError("epoll_ctl", errno);
    }
  }

  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0) return SysError("getrlimit(RLIMIT_NOFILE)", errno);
  int limit = static_cast<int>(std::min(nofile.rlim_cur, kMaxFdNumber));
  int size = std::clamp(options.fd_range_size, 1, std::max(1, limit / 2));
  l->range_end_ = limit;
  l->range_begin_ = limit - size;
  l->cursor_ = l->range_begin_;
  l->next_full_sweep_ = Clock::now() + kSweepInterval;

  l->thread_ = std::thread(&PeerListener::Loop, l.get());
  return l;
}

PeerListener::PeerListener(std::string path, grpc::Server* server, const ListenOptions& options)
    : path_(std::move(path)), server_(server), options_(options) {}

PeerListener::~PeerListener() { Stop(); }

void PeerListener::Stop() {
  std::call_once(stop_once_, [this] {
    stopping_.store(true);
    if (wake_fd_.valid()) {
      uint64_t one = 1;
      (void)!::write(wake_fd_.get(), &one, sizeof(one));
    }
    if (thread_.joinable()) thread_.join();
    if (file_ino_ != 0) UnlinkIfSame(path_, file_dev_, file_ino_);
    listen_fd_.Reset();
  });
}

void PeerListener::Loop() {
  std::array<epoll_event, 64> events{};
  int timeout = -1;
  while (!stopping_.load()) {
    int n = ::epoll_wait(epoll_fd_.get(), events.data(), static_cast<int>(events.size()), timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // EBADF/EINVAL: cannot happen while the listener exists
    }
    bool accept_ready = false;
    std::vector<uint64_t> hung_up;
    for (int i = 0; i < n; ++i) {
      uint64_t tag = events[static_cast<size_t>(i)].data.u64;
      if (tag == kListenTag) {
        accept_ready = true;
      } else if (tag == kWakeTag) {
        uint64_t count = 0;
        (void)!::read(wake_fd_.get(), &count, sizeof(count));
      } else {
        hung_up.push_back(tag);
      }
    }
    if (stopping_.load()) return;
    Clock::time_point now = Clock::now();
    if (accept_paused_ && now >= accept_paused_until_) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenTag;
      (void)::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, listen_fd_.get(), &ev);
      accept_paused_ = false;
    }
    if (accept_ready && !accept_paused_) AcceptAll();

    std::lock_guard lock(mu_);
    now = Clock::now();
    for (uint64_t id : hung_up) {
      auto it = fd_by_id_.find(id);
      if (it == fd_by_id_.end()) continue;
      if (auto conn = by_fd_.find(it->second); conn != by_fd_.end()) conn->second.hung_up_at = now;
    }
    Reap(now >= next_full_sweep_);
    timeout = NextTimeoutMs();
  }
}

void PeerListener::AcceptAll() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      Handle(OwnedFd(fd));
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the listening socket stays readable, so stop watching it
    // for a while instead of spinning; pending clients wait in the backlog.
    epoll_event ev{};
    ev.events = 0;
    ev.data.u64 = kListenTag;
    (void)::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, listen_fd_.get(), &ev);
    accept_paused_ = true;
    accept_paused_until_ = Clock::now() + kAcceptPause;
    return;
  }
}

void PeerListener::Handle(OwnedFd accepted) {
  auto creds = ReadPeerCredentials(accepted.get(), !options_.TEST_disable_socket_pidfd);
  auto reject = [this] {
    std::lock_guard lock(mu_);
    ++rejected_;
  };
  if (!creds.ok()) return reject();
  {
    std::lock_guard lock(mu_);
    if (by_fd_.size() >= options_.max_connections) Reap(/*full=*/true);
    if (by_fd_.size() >= options_.max_connections) {
      ++rejected_;
      return;
    }
  }
  int placed = PlaceFd(accepted.get());
  OwnedFd conn(placed == accepted.get() ? accepted.Release() : placed);
  accepted.Reset();  // from now on only `placed` refers to the socket
  struct stat st {};
  if (::fstat(conn.get(), &st) != 0) return reject();

  Connection c;
  c.info = std::move(creds).value();
  c.dev = st.st_dev;
  c.ino = st.st_ino;
  uint64_t id = 0;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    c.info.connection_id = id;
    // `placed` was free a moment ago, so an entry under it is stale.
    if (auto old = by_fd_.find(placed); old != by_fd_.end()) {
      fd_by_id_.erase(old->second.info.connection_id);
      by_fd_.erase(old);
    }
    by_fd_.emplace(placed, std::move(c));
    fd_by_id_.emplace(id, placed);
    ++accepted_;
  }
  // Watch for the hang-up before gRPC owns the fd (afterwards the number may already be
  // closed and reused). If this fails the periodic sweep still removes the entry.
  epoll_event ev{};
  ev.events = EPOLLRDHUP | EPOLLONESHOT;
  ev.data.u64 = id;
  (void)::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, conn.get(), &ev);
  grpc::AddInsecureChannelFromFd(server_, conn.Release());
}

int PeerListener::PlaceFd(int fd) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    int n = ::fcntl(fd, F_DUPFD_CLOEXEC, cursor_);
    if (n >= 0) {
      cursor_ = n + 1 >= range_end_ ? range_begin_ : n + 1;
      return n;
    }
    // EINVAL: cursor at or above RLIMIT_NOFILE; EMFILE: nothing free above the cursor.
    if ((errno != EINVAL && errno != EMFILE) || cursor_ == range_begin_) break;
    cursor_ = range_begin_;
  }
  return fd;  // every number of the range is taken: keep the kernel's choice
}

bool PeerListener::StillOpen(int fd, const Connection& c) const {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && st.st_dev == c.dev && st.st_ino == c.ino;
}

void PeerListener::Reap(bool full) {
  Clock::time_point now = Clock::now();
  for (auto it = by_fd_.begin(); it != by_fd_.end();) {
    const Connection& c = it->second;
    bool recent = c.hung_up_at.has_value() && now - *c.hung_up_at < kHangupWindow;
    if ((full || recent) && !StillOpen(it->first, c)) {
      fd_by_id_.erase(c.info.connection_id);
      it = by_fd_.erase(it);  // drops this entry's pidfd reference
      continue;
    }
    ++it;
  }
  if (full) next_full_sweep_ = now + kSweepInterval;
}

int PeerListener::NextTimeoutMs() const {
  Clock::time_point now = Clock::now();
  int timeout = -1;
  auto at_most = [&](int ms) { timeout = timeout < 0 ? ms : std::min(timeout, ms); };
  for (const auto& [fd, c] : by_fd_) {
    if (c.hung_up_at.has_value() && now - *c.hung_up_at < kHangupWindow) {
      at_most(static_cast<int>(kHangupRecheck.count()));
      break;
    }
  }
  if (!by_fd_.empty()) at_most(MsUntil(now, next_full_sweep_));
  if (accept_paused_) at_most(MsUntil(now, accept_paused_until_));
  return timeout;
}

std::optional<PeerInfo> PeerListener::PeerOf(const grpc::ServerContext& context) const {
  std::string peer = context.peer();
  std::string_view view(peer);
  if (!view.starts_with(kFdPeerPrefix)) return std::nullopt;
  view.remove_prefix(kFdPeerPrefix.size());
  int fd = -1;
  auto [ptr, ec] = std::from_chars(view.data(), view.data() + view.size(), fd);
  if (ec != std::errc() || ptr != view.data() + view.size() || fd < 0) return std::nullopt;
  std::lock_guard lock(mu_);
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end() || !StillOpen(fd, it->second)) return std::nullopt;
  return it->second.info;
}

PeerListener::Stats PeerListener::GetStats() const {
  std::lock_guard lock(mu_);
  Stats s;
  s.connections = by_fd_.size();
  s.accepted = accepted_;
  s.rejected = rejected_;
  s.fd_range_begin = range_begin_;
  s.fd_range_end = range_end_;
  return s;
}

}  // namespace sigil::agent::peer
