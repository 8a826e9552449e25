// nft(8) runner; see nft_run.h.
#include "dataplane/intercept/nft_run.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/owned_fd.h"

extern char** environ;

namespace sigil::dataplane {
namespace {

constexpr size_t kMaxStdout = 256 << 10;
constexpr size_t kMaxStderr = 4 << 10;

std::string Errno(int err) { return std::strerror(err); }

}  // namespace

Result<std::string> RunNft(const std::string& nft_binary, const std::vector<std::string>& args,
                           std::string_view script) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Internal("nft: pipe: " + Errno(errno));
  OwnedFd in_read(p[0]), in_write(p[1]);
  if (::pipe2(p, O_CLOEXEC) != 0) return Internal("nft: pipe: " + Errno(errno));
  OwnedFd out_read(p[0]), out_write(p[1]);
  if (::pipe2(p, O_CLOEXEC) != 0) return Internal("nft: pipe: " + Errno(errno));
  OwnedFd err_read(p[0]), err_write(p[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_read.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_write.get(), 2);
  std::vector<std::string> storage;
  storage.push_back(nft_binary);
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, nft_binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Unavailable("nft: cannot run " + nft_binary + ": " + Errno(rc));
  in_read.Reset();
  out_write.Reset();
  err_write.Reset();

  // Feed stdin and drain both outputs together, so a chatty nft never blocks on a full pipe
  // while we block writing its input.
  // Non-blocking stdin: a write never waits for nft while its output pipes are full.
  ::fcntl(in_write.get(), F_SETFL, O_NONBLOCK);
  std::string_view left = script;
  if (left.empty()) in_write.Reset();
  std::string out, err;
  while (out_read.valid() || err_read.valid()) {
    pollfd fds[3] = {};
    nfds_t n = 0;
    const auto add = [&](const OwnedFd& fd, short events) {
      if (fd.valid()) fds[n++] = pollfd{.fd = fd.get(), .events = events, .revents = 0};
    };
    add(out_read, POLLIN);
    add(err_read, POLLIN);
    add(in_write, POLLOUT);
    if (::poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_write.get()) {
        const ssize_t w = ::write(in_write.get(), left.data(), left.size());
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (w <= 0) {
          in_write.Reset();  // nft stopped reading; its exit status tells why
          continue;
        }
        left.remove_prefix(static_cast<size_t>(w));
        if (left.empty()) in_write.Reset();
        continue;
      }
      OwnedFd& fd = fds[i].fd == out_read.get() ? out_read : err_read;
      std::string& sink = &fd == &out_read ? out : err;
      const size_t cap = &fd == &out_read ? kMaxStdout : kMaxStderr;
      char buf[4096];
      const ssize_t r = ::read(fd.get(), buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        fd.Reset();
        continue;
      }
      if (sink.size() < cap) sink.append(buf, std::min(static_cast<size_t>(r), cap - sink.size()));
    }
  }
  in_write.Reset();
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string msg = err.empty() ? out : err;
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    std::string cmd = nft_binary;
    for (const auto& a : args) cmd += " " + a;
    return Unavailable("nft: `" + cmd + "` failed: " + msg);
  }
  return out;
}

}  // namespace sigil::dataplane
