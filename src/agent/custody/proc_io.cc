#include "agent/custody/proc_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace sigil::agent::custody::internal {
namespace {
constexpr size_t kMaxProcFileBytes = size_t{16} * 1024;
}  // namespace

Error ErrnoError(std::string_view what, int err) {
  const char* desc = ::strerrordesc_np(err);
  std::string msg = std::string(what) + ": " + (desc != nullptr ? desc : "unknown error") +
                    " (errno " + std::to_string(err) + ")";
  switch (err) {
    case EACCES:
    case EPERM:
      return PermissionDenied(std::move(msg));
    case ENOMEM:
    case EAGAIN:
      return ResourceExhausted(std::move(msg));
    default:
      return Internal(std::move(msg));
  }
}

Result<std::string> ReadProcFile(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(std::string("open ") + path, errno);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return ErrnoError(std::string("read ") + path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxProcFileBytes) {
      ::close(fd);
      return ResourceExhausted(std::string(path) + ": larger than expected");
    }
  }
  ::close(fd);
  return out;
}

Result<void> WriteProcFile(const char* path, std::string_view text) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(std::string("open ") + path + " for writing", errno);
  ssize_t n;
  do {
    n = ::write(fd, text.data(), text.size());
  } while (n < 0 && errno == EINTR);
  int err = errno;
  ::close(fd);
  if (n < 0) return ErrnoError(std::string("write ") + path, err);
  if (static_cast<size_t>(n) != text.size()) return Internal(std::string("short write to ") + path);
  return Ok();
}

Result<uint64_t> ReadStatusKb(std::string_view name) {
  SIGIL_ASSIGN_OR_RETURN(std::string status, ReadProcFile("/proc/self/status"));
  std::string_view rest(status);
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    if (!line.starts_with(name) || line.size() <= name.size() || line[name.size()] != ':') continue;
    std::string_view value = line.substr(name.size() + 1);
    size_t start = value.find_first_not_of(" \t");
    if (start == std::string_view::npos) break;
    value = value.substr(start);
    uint64_t kb = 0;
    auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), kb);
    if (ec != std::errc()) break;
    return kb;
  }
  return NotFound("/proc/self/status: no " + std::string(name) + " line");
}

}  // namespace sigil::agent::custody::internal
