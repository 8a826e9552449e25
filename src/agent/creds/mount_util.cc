#include "agent/creds/mount_util.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "common/owned_fd.h"

namespace sigil::agent::creds {
namespace {

constexpr int kMaxStacked = 8;
constexpr size_t kMaxMountInfo = size_t{4} << 20;

std::string Unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t j = line.find(' ', i);
    if (j == std::string_view::npos) j = line.size();
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

Result<std::string> ReadMountInfo() {
  OwnedFd fd(::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Internal(std::string("/proc/self/mountinfo: ") + std::strerror(errno));
  std::string text;
  char buf[8192];
  while (text.size() <= kMaxMountInfo) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Internal(std::string("/proc/self/mountinfo: ") + std::strerror(errno));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
}

// The topmost entry mounted on `dir` (mountinfo lists later mounts after earlier ones).
Result<std::optional<MountEntry>> TopMount(const std::string& dir) {
  SIGIL_ASSIGN_OR_RETURN(std::string text, ReadMountInfo());
  std::optional<MountEntry> top;
  for (auto& e : ParseMountInfo(text)) {
    if (e.mount_point == dir) top = std::move(e);
  }
  return top;
}

}  // namespace

std::vector<MountEntry> ParseMountInfo(std::string_view text) {
  std::vector<MountEntry> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    // id parent maj:min root mount_point options [optional...] - fstype source superopts
    auto f = Fields(line);
    size_t dash = 0;
    for (size_t i = 6; i < f.size(); ++i) {
      if (f[i] == "-") {
        dash = i;
        break;
      }
    }
    if (dash == 0 || dash + 1 >= f.size()) continue;
    MountEntry e;
    e.mount_point = Unescape(f[4]);
    e.fs_type = std::string(f[dash + 1]);
    if (dash + 2 < f.size()) e.source = Unescape(f[dash + 2]);
    out.push_back(std::move(e));
  }
  return out;
}

Result<bool> IsCredsMount(const std::string& dir) {
  SIGIL_ASSIGN_OR_RETURN(auto top, TopMount(dir));
  return top.has_value() && top->fs_type == kCredsFsType;
}

Result<int> DetachStaleMounts(const std::string& dir) {
  int detached = 0;
  for (int i = 0; i < kMaxStacked; ++i) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0 || errno != ENOTCONN) break;
    // A FUSE mount whose server is gone (a killed agent): unusable, only detaching helps.
    if (::umount2(dir.c_str(), MNT_DETACH) != 0) {
      return Internal("umount2(" + dir + ", MNT_DETACH) of a dead mount: " + std::strerror(errno));
    }
    ++detached;
  }
  SIGIL_ASSIGN_OR_RETURN(bool live, IsCredsMount(dir));
  if (live) {
    return AlreadyExists(dir + " is served by another running agent (a live " +
                         std::string(kCredsFsType) + " mount)");
  }
  return detached;
}

}  // namespace sigil::agent::creds
