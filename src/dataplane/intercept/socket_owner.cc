// Socket inode -> holding processes; see socket_owner.h.
#include "dataplane/intercept/socket_owner.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>

#include "common/owned_fd.h"

namespace sigil::dataplane {
namespace {

constexpr size_t kMaxPids = 65536;
constexpr size_t kMaxFdsScanned = 1 << 20;
constexpr size_t kMaxProcFile = 1 << 20;

std::string Errno(int err) { return std::strerror(err); }

// /proc and cgroupfs files report size 0, so read until EOF (bounded).
Result<std::string> ReadPseudoFile(const std::string& path) {
  OwnedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    const int err = errno;
    std::string msg = "open " + path + ": " + Errno(err);
    if (err == ENOENT || err == ESRCH) return NotFound(std::move(msg));
    return Unavailable(std::move(msg));
  }
  std::string data;
  char buf[8192];
  while (data.size() <= kMaxProcFile) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      std::string msg = "read " + path + ": " + Errno(err);
      if (err == ESRCH || err == ENODEV) return NotFound(std::move(msg));
      return Unavailable(std::move(msg));
    }
    if (n == 0) return data;
    data.append(buf, static_cast<size_t>(n));
  }
  return ResourceExhausted(path + " is larger than 1 MiB");
}

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

// Whether `pid` holds `target` ("socket:[N]"). Adds the descriptors seen to `scanned`.
Result<bool> HoldsSocket(pid_t pid, std::string_view target, size_t& scanned) {
  const std::string path = "/proc/" + std::to_string(pid) + "/fd";
  const int dfd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    if (errno == ENOENT || errno == ESRCH) return false;  // exited meanwhile
    return Unavailable("open " + path + ": " + Errno(errno));
  }
  std::unique_ptr<DIR, DirCloser> dir(::fdopendir(dfd));
  if (!dir) {
    ::close(dfd);
    return Unavailable("fdopendir " + path + ": " + Errno(errno));
  }
  char link[64];
  while (const dirent* e = ::readdir(dir.get())) {
    if (e->d_name[0] == '.') continue;
    if (++scanned > kMaxFdsScanned) {
      return ResourceExhausted("more than " + std::to_string(kMaxFdsScanned) +
                               " descriptors to scan");
    }
    const ssize_t n = ::readlinkat(::dirfd(dir.get()), e->d_name, link, sizeof link);
    if (n == static_cast<ssize_t>(target.size()) &&
        std::memcmp(link, target.data(), target.size()) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

Result<std::vector<pid_t>> ParsePidList(std::string_view text, size_t max_pids) {
  std::vector<pid_t> pids;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.empty()) continue;
    pid_t pid = 0;
    const auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), pid);
    if (ec != std::errc() || end != line.data() + line.size() || pid <= 0) {
      return Internal("cgroup.procs: \"" + std::string(line.substr(0, 32)) + "\" is not a pid");
    }
    if (pids.size() >= max_pids) {
      return ResourceExhausted("cgroup.procs: more than " + std::to_string(max_pids) + " pids");
    }
    pids.push_back(pid);
  }
  return pids;
}

Result<std::vector<pid_t>> ProcessesHoldingSocket(const std::string& cgroup_dir, uint64_t inode) {
  SIGIL_ASSIGN_OR_RETURN(const std::string procs, ReadPseudoFile(cgroup_dir + "/cgroup.procs"));
  SIGIL_ASSIGN_OR_RETURN(std::vector<pid_t> pids, ParsePidList(procs, kMaxPids));
  std::sort(pids.begin(), pids.end());
  const std::string target = "socket:[" + std::to_string(inode) + "]";
  std::vector<pid_t> holders;
  size_t scanned = 0;
  for (const pid_t pid : pids) {
    SIGIL_ASSIGN_OR_RETURN(const bool holds, HoldsSocket(pid, target, scanned));
    if (holds) holders.push_back(pid);
  }
  return holders;
}

Result<gid_t> EffectiveGid(pid_t pid) {
  SIGIL_ASSIGN_OR_RETURN(const std::string status,
                         ReadPseudoFile("/proc/" + std::to_string(pid) + "/status"));
  const size_t at = status.find("\nGid:");
  if (at == std::string::npos) return Internal("/proc/" + std::to_string(pid) + "/status: no Gid");
  // "Gid:\treal\teffective\tsaved\tfs"
  std::string_view rest = std::string_view(status).substr(at + 5);
  gid_t ids[2] = {};
  for (gid_t& id : ids) {
    while (!rest.empty() && (rest.front() == '\t' || rest.front() == ' ')) rest.remove_prefix(1);
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), id);
    if (ec != std::errc()) return Internal("/proc/" + std::to_string(pid) + "/status: bad Gid");
    rest.remove_prefix(static_cast<size_t>(end - rest.data()));
  }
  return ids[1];
}

}  // namespace sigil::dataplane
