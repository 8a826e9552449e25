#include "agent/peer/socket_path.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace sigil::agent::peer {
namespace {

constexpr mode_t kDirMode = 0755;

Error ErrnoError(std::string_view what, const std::string& path, int err) {
  const char* desc = ::strerrordesc_np(err);
  std::string msg = std::string(what) + " " + path + ": " + (desc != nullptr ? desc : "error");
  if (err == EACCES || err == EPERM) return PermissionDenied(std::move(msg));
  return Internal(std::move(msg));
}

Result<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return InvalidArgument("socket path \"" + path + "\" is empty or longer than " +
                           std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

Result<void> MakeParentDirs(const std::filesystem::path& dir) {
  std::filesystem::path cur;
  for (const auto& part : dir) {
    cur /= part;
    if (cur == "/") continue;
    if (::mkdir(cur.c_str(), kDirMode) == 0) {
      if (::chmod(cur.c_str(), kDirMode) != 0) return ErrnoError("chmod", cur.string(), errno);
    } else if (errno != EEXIST) {
      return ErrnoError("mkdir", cur.string(), errno);
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return ErrnoError("stat", dir.string(), errno);
  if (!S_ISDIR(st.st_mode)) return FailedPrecondition(dir.string() + " is not a directory");
  return Ok();
}

// Ok if nothing is at `path` or a dead socket is; errors as documented in the header.
Result<void> CheckExisting(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Ok();
    return ErrnoError("lstat", path, errno);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return FailedPrecondition(path + " exists and is not a socket; not replacing it");
  }
  OwnedFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return ErrnoError("socket for", path, errno);
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
    return AlreadyExists(path + ": another process is serving on this socket");
  }
  if (errno == ECONNREFUSED) return Ok();  // stale
  return ErrnoError("connect (liveness probe)", path, errno);
}

}  // namespace

Result<BoundSocket> BindListeningSocket(const std::string& path, mode_t mode, int backlog) {
  if (!path.starts_with('/')) return InvalidArgument("socket path must be absolute: " + path);
  SIGIL_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  std::filesystem::path fs_path(path);
  SIGIL_TRY(MakeParentDirs(fs_path.parent_path()));
  SIGIL_TRY(CheckExisting(path, addr));

  uint32_t nonce = 0;
  if (::getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
    nonce = static_cast<uint32_t>(::getpid());
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), ".%08x.tmp", nonce);
  std::string tmp = (fs_path.parent_path() / ("." + fs_path.filename().string())).string() + suffix;
  auto tmp_addr = Address(tmp);
  if (!tmp_addr.ok()) {
    return InvalidArgument("socket path \"" + path + "\" leaves no room for a temporary name (" +
                           std::to_string(tmp.size()) + " bytes needed)");
  }

  BoundSocket out;
  out.fd.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!out.fd.valid()) return ErrnoError("socket for", path, errno);
  if (::bind(out.fd.get(), reinterpret_cast<const sockaddr*>(&*tmp_addr), sizeof(*tmp_addr)) != 0) {
    return ErrnoError("bind", tmp, errno);
  }
  auto fail = [&](std::string_view what, const std::string& p) {
    Error e = ErrnoError(what, p, errno);
    ::unlink(tmp.c_str());
    return e;
  };
  if (::chmod(tmp.c_str(), mode) != 0) return fail("chmod", tmp);
  if (::listen(out.fd.get(), backlog) != 0) return fail("listen", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename to", path);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return ErrnoError("lstat", path, errno);
  out.dev = st.st_dev;
  out.ino = st.st_ino;
  return out;
}

void UnlinkIfSame(const std::string& path, dev_t dev, ino_t ino) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev &&
      st.st_ino == ino) {
    ::unlink(path.c_str());
  }
}

}  // namespace sigil::agent::peer
