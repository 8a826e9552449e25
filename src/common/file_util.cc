#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <type_traits>

#include "common/owned_fd.h"

namespace sigil {
namespace {

Error ErrnoError(std::string_view what, const std::string& path, int err) {
  ErrorCode code = err == ENOENT   ? ErrorCode::kNotFound
                   : err == EACCES ? ErrorCode::kPermissionDenied
                   : err == EEXIST ? ErrorCode::kAlreadyExists
                                   : ErrorCode::kInternal;
  return Error(code, std::string(what) + " " + path + ": " + std::strerror(err));
}

// Reads into `buf` (already sized to the file) or reports why not.
template <class Buffer>
Result<Buffer> ReadInto(const std::string& path, size_t max_bytes) {
  OwnedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return ErrnoError("open", path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat", path, errno);
  if (!S_ISREG(st.st_mode)) return InvalidArgument(path + ": not a regular file");
  if (static_cast<size_t>(st.st_size) > max_bytes) {
    return ResourceExhausted(path + ": larger than " + std::to_string(max_bytes) + " bytes");
  }
  Buffer buf = [&] {
    if constexpr (std::is_same_v<Buffer, SecretBytes>) {
      return SecretBytes(static_cast<size_t>(st.st_size));
    } else {
      return std::string(static_cast<size_t>(st.st_size), '\0');
    }
  }();
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::read(fd.get(), reinterpret_cast<char*>(buf.data()) + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("read", path, errno);
    if (n == 0) break;  // file shrank underneath us
    done += static_cast<size_t>(n);
  }
  if constexpr (std::is_same_v<Buffer, SecretBytes>) {
    buf.Truncate(done);
  } else {
    buf.resize(done);
  }
  return buf;
}

}  // namespace

Result<std::string> ReadFile(const std::string& path, size_t max_bytes) {
  return ReadInto<std::string>(path, max_bytes);
}

Result<SecretBytes> ReadSecretFile(const std::string& path, size_t max_bytes) {
  return ReadInto<SecretBytes>(path, max_bytes);
}

Result<void> WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode,
                             Overwrite overwrite) {
  std::filesystem::path p(path);
  std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  if (overwrite == Overwrite::kRefuse && ::access(path.c_str(), F_OK) == 0) {
    return AlreadyExists(path + ": already exists (refusing to overwrite)");
  }
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  OwnedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
  if (fd.get() < 0) return ErrnoError("create", tmp, errno);
  // The umask may have narrowed `mode`; secrets must not end up wider, so set it exactly.
  if (::fchmod(fd.get(), mode) != 0) {
    ::unlink(tmp.c_str());
    return ErrnoError("chmod", tmp, errno);
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return ErrnoError("write", tmp, err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError("fsync", tmp, err);
  }
  fd.Reset();
  int rc = overwrite == Overwrite::kRefuse ? ::link(tmp.c_str(), path.c_str())
                                           : ::rename(tmp.c_str(), path.c_str());
  int err = errno;
  if (overwrite == Overwrite::kRefuse) ::unlink(tmp.c_str());
  if (rc != 0) {
    if (overwrite != Overwrite::kRefuse) ::unlink(tmp.c_str());
    return ErrnoError(overwrite == Overwrite::kRefuse ? "create" : "rename", path, err);
  }
  OwnedFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() >= 0) ::fsync(dfd.get());
  return Ok();
}

Result<void> MakeDirs(const std::string& path, mode_t mode) {
  std::string cur;
  std::filesystem::path p(path);
  for (const auto& part : p) {
    cur = cur.empty() ? part.string() : (std::filesystem::path(cur) / part).string();
    if (cur == "/") continue;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return ErrnoError("mkdir", cur, errno);
  }
  return Ok();
}

}  // namespace sigil
