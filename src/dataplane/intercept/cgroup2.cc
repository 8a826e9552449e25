// cgroup v2 helpers; see cgroup2.h.
#include "dataplane/intercept/cgroup2.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common/owned_fd.h"

namespace sigil::dataplane {
namespace {

constexpr size_t kMaxMountinfoBytes = 4 << 20;  // bound the read; real files are a few KiB

std::string Errno(int err) { return std::strerror(err); }

// mountinfo escapes space, tab, newline and backslash as \ooo (octal).
std::string Unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const char a = s[i + 1], b = s[i + 2], c = s[i + 3];
      if (a >= '0' && a <= '3' && b >= '0' && b <= '7' && c >= '0' && c <= '7') {
        out.push_back(static_cast<char>((a - '0') * 64 + (b - '0') * 8 + (c - '0')));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::vector<std::string_view> SplitSpaces(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ') ++j;
    if (j > i) fields.push_back(line.substr(i, j - i));
    i = j;
  }
  return fields;
}

Result<std::string> ReadSmallFile(const std::string& path) {
  OwnedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Unavailable("cgroup2: open " + path + ": " + Errno(errno));
  std::string data;
  char buf[8192];
  while (data.size() < kMaxMountinfoBytes) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unavailable("cgroup2: read " + path + ": " + Errno(errno));
    }
    if (n == 0) return data;
    data.append(buf, static_cast<size_t>(n));
  }
  return ResourceExhausted("cgroup2: " + path + " is larger than 4 MiB");
}

Result<void> MkdirIfMissing(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return Ok();
  return Internal("cgroup2: mkdir " + path + ": " + Errno(errno));
}

Result<void> MkdirParents(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return InvalidArgument("cgroup2: mount point \"" + path + "\" is not an absolute path");
  }
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos == path.size() || path[pos] == '/') {
      SIGIL_TRY(MkdirIfMissing(path.substr(0, pos)));
    }
  }
  return Ok();
}

bool ValidComponent(const std::string& name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::optional<std::string> ParseCgroup2Mount(std::string_view mountinfo) {
  // Line: id parent maj:min root mountpoint options [optional fields...] - fstype source super
  size_t start = 0;
  while (start < mountinfo.size()) {
    size_t end = mountinfo.find('\n', start);
    if (end == std::string_view::npos) end = mountinfo.size();
    const std::vector<std::string_view> f = SplitSpaces(mountinfo.substr(start, end - start));
    start = end + 1;
    size_t sep = 6;  // optional fields start at index 6 and end at the "-" separator
    while (sep < f.size() && f[sep] != "-") ++sep;
    if (sep + 1 >= f.size() || f.size() < 5) continue;
    if (f[sep + 1] == "cgroup2") return Unescape(f[4]);
  }
  return std::nullopt;
}

Result<std::string> FindOrMountCgroup2(const std::string& preferred_mountpoint) {
  SIGIL_ASSIGN_OR_RETURN(const std::string info, ReadSmallFile("/proc/self/mountinfo"));
  if (std::optional<std::string> existing = ParseCgroup2Mount(info)) return *existing;
  SIGIL_TRY(MkdirParents(preferred_mountpoint));
  if (::mount("none", preferred_mountpoint.c_str(), "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              nullptr) != 0) {
    const int err = errno;
    std::string msg = "cgroup2: mount cgroup2 at " + preferred_mountpoint + ": " + Errno(err);
    if (err == EPERM) return PermissionDenied(std::move(msg));
    return Unavailable(std::move(msg));
  }
  return preferred_mountpoint;
}

Result<std::string> EnsureManagedTree(const std::string& root, const std::string& name) {
  if (!ValidComponent(name)) {
    return InvalidArgument("cgroup2: managed cgroup name \"" + name +
                           "\" must be one path component of [A-Za-z0-9._-]");
  }
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) {
    return NotFound("cgroup2: cgroup root " + root + ": " + Errno(errno));
  }
  const std::string base = root + "/sigil";
  SIGIL_TRY(MkdirIfMissing(base));
  const std::string dir = base + "/" + name;
  SIGIL_TRY(MkdirIfMissing(dir));
  return dir;
}

Result<void> MoveProcess(const std::string& cgroup_dir, pid_t pid) {
  const std::string path = cgroup_dir + "/cgroup.procs";
  OwnedFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) {
    const int err = errno;
    std::string msg = "cgroup2: open " + path + ": " + Errno(err);
    if (err == ENOENT) return NotFound(std::move(msg));
    return Internal(std::move(msg));
  }
  const std::string text = std::to_string(pid);
  const ssize_t n = ::write(fd.get(), text.data(), text.size());
  if (n != static_cast<ssize_t>(text.size())) {
    const int err = n < 0 ? errno : EIO;
    std::string msg = "cgroup2: move pid " + text + " into " + cgroup_dir + ": " + Errno(err);
    if (err == ESRCH) return NotFound(std::move(msg));
    return Internal(std::move(msg));
  }
  return Ok();
}

Result<uint64_t> CgroupId(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return NotFound("cgroup2: stat " + dir + ": " + Errno(errno));
  }
  if (!S_ISDIR(st.st_mode)) return InvalidArgument("cgroup2: " + dir + " is not a directory");
  return static_cast<uint64_t>(st.st_ino);
}

Result<void> RemoveCgroup(const std::string& dir) {
  if (::rmdir(dir.c_str()) == 0) return Ok();
  const int err = errno;
  if (err == EBUSY || err == ENOTEMPTY) {
    return FailedPrecondition("cgroup2: remove " + dir +
                              ": processes or child cgroups remain in it (" + Errno(err) + ")");
  }
  if (err == ENOENT) return NotFound("cgroup2: remove " + dir + ": " + Errno(err));
  return Internal("cgroup2: remove " + dir + ": " + Errno(err));
}

}  // namespace sigil::dataplane
