// CredsFs: mount, worker loop, stop, and the libfuse glue. The operations are in creds_ops.cc.
#define FUSE_USE_VERSION 35
#include "agent/creds/creds_fs.h"

#include <fcntl.h>
#include <fuse3/fuse.h>
#include <fuse3/fuse_lowlevel.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "agent/creds/fusermount.h"
#include "agent/creds/mount_util.h"
#include "common/file_util.h"

namespace sigil::agent::creds {
namespace {

// First through fusermount3 with auto_unmount (fusermount.h): it stays behind and unmounts
// when the agent's end of its socket closes, so even a SIGKILLed agent leaves no dead mount.
// Without fusermount3 (package fuse3) libfuse mounts directly (root, no fork) and the
// stale-mount cleanup at the next start takes the place of auto_unmount.
constexpr const char* kMountOptions =
    "allow_other,ro,nosuid,nodev,noexec,fsname=sigil-creds,subtype=sigil-creds";
constexpr const char* kFusermountOptions =
    "allow_other,auto_unmount,ro,nosuid,nodev,noexec,fsname=sigil-creds,subtype=sigil-creds";
constexpr auto kFusermountTimeout = std::chrono::seconds(10);

// libfuse's own messages (option errors, mount failures) go to our log, not to stderr.
std::mutex g_log_mu;
Logger* g_log = nullptr;  // guarded by g_log_mu

void FuseLog(enum fuse_log_level level, const char* fmt, va_list ap) {
  char text[512];
  std::vsnprintf(text, sizeof text, fmt, ap);
  size_t n = std::strlen(text);
  while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r')) text[--n] = '\0';
  std::lock_guard lock(g_log_mu);
  if (g_log == nullptr) return;
  if (level <= FUSE_LOG_ERR) {
    g_log->Error("creds.fuse.log", {{"message", text}});
  } else if (level <= FUSE_LOG_WARNING) {
    g_log->Warn("creds.fuse.log", {{"message", text}});
  }
}

CredsFs* Self() { return static_cast<CredsFs*>(fuse_get_context()->private_data); }

void* OpInit(struct fuse_conn_info* conn, struct fuse_config* cfg) {
  // Per-caller answers: nothing may be cached by the kernel.
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->direct_io = 1;
  cfg->kernel_cache = 0;
  cfg->auto_cache = 0;
  cfg->nullpath_ok = 0;
  // Requests are a few hundred bytes; plain read(2) on the device keeps the loop simple.
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  return fuse_get_context()->private_data;
}

int OpGetAttr(const char* path, struct stat* st, struct fuse_file_info* fi) {
  return Self()->GetAttr(path, st, fi);
}

int OpReadDir(const char* path, void* buf, fuse_fill_dir_t filler, off_t /*offset*/,
              struct fuse_file_info* /*fi*/, enum fuse_readdir_flags /*flags*/) {
  return Self()->ReadDir(path, [&](const char* name) {
    filler(buf, name, nullptr, 0, static_cast<enum fuse_fill_dir_flags>(0));
  });
}

int OpOpen(const char* path, struct fuse_file_info* fi) { return Self()->Open(path, fi); }

int OpRead(const char* path, char* buf, size_t size, off_t offset, struct fuse_file_info* fi) {
  return Self()->Read(path, buf, size, offset, fi);
}

int OpRelease(const char* /*path*/, struct fuse_file_info* fi) { return Self()->Release(fi); }

}  // namespace

CredsFs::CredsFs(CredsFsOptions options, Agent& agent, attest::Attestor& attestor, Logger& log)
    : options_(std::move(options)), agent_(agent), attestor_(attestor), log_(log) {}

CredsFs::~CredsFs() { Stop(); }

Result<std::unique_ptr<CredsFs>> CredsFs::Start(CredsFsOptions options, Agent& agent,
                                                attest::Attestor& attestor, Logger& log) {
  if (options.mount_dir.empty() || options.mount_dir.front() != '/') {
    return InvalidArgument("--creds-mount: \"" + options.mount_dir + "\" is not an absolute path");
  }
  if (options.threads == 0 || options.threads > 64) {
    return InvalidArgument("credential filesystem: threads must be 1..64");
  }
  // Resolve the directory (mountinfo lists canonical paths). A dead FUSE mount makes every
  // lookup fail with ENOTCONN: detach it right away; a missing directory is created.
  int stale = 0;
  char real[PATH_MAX];
  for (int attempt = 0;; ++attempt) {
    if (::realpath(options.mount_dir.c_str(), real) != nullptr) break;
    const int err = errno;
    if (attempt < 8 && err == ENOENT) {
      SIGIL_TRY(MakeDirs(options.mount_dir, 0755));
    } else if (attempt < 8 && err == ENOTCONN) {
      if (::umount2(options.mount_dir.c_str(), MNT_DETACH) != 0) {
        return Internal("--creds-mount " + options.mount_dir +
                        ": cannot detach a dead mount: " + std::strerror(errno));
      }
      ++stale;
    } else {
      return Internal("--creds-mount " + options.mount_dir + ": " + std::strerror(err));
    }
  }
  options.mount_dir = real;
  SIGIL_ASSIGN_OR_RETURN(int more, DetachStaleMounts(options.mount_dir));
  stale += more;
  if (stale > 0) {
    log.Warn("creds.mount.stale",
             {{"dir", options.mount_dir},
              {"detached", stale},
              {"reason", "left behind by an agent that did not stop cleanly"}});
  }
  {
    std::lock_guard lock(g_log_mu);
    g_log = &log;
  }
  fuse_set_log_func(&FuseLog);

  std::unique_ptr<CredsFs> fs(new CredsFs(std::move(options), agent, attestor, log));
  struct fuse_operations ops {};
  ops.init = &OpInit;
  ops.getattr = &OpGetAttr;
  ops.readdir = &OpReadDir;
  ops.open = &OpOpen;
  ops.read = &OpRead;
  ops.release = &OpRelease;
  std::string arg0 = "sigil-creds", arg1 = "-o", arg2 = kMountOptions;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  struct fuse_args args = FUSE_ARGS_INIT(3, argv);
  fs->fuse_ = fuse_new(&args, &ops, sizeof ops, fs.get());
  fuse_opt_free_args(&args);
  if (fs->fuse_ == nullptr) {
    fs->stopped_ = true;
    return Internal("credential filesystem: fuse_new failed (see creds.fuse.log)");
  }
  auto helper = MountWithFusermount(fs->options_.mount_dir, kFusermountOptions, kFusermountTimeout);
  if (helper.ok()) {
    // libfuse takes a device that is already mounted as the mount point "/dev/fd/N" and then
    // leaves the unmount to us (Stop: fusermount3, through the keepalive socket).
    fs->fusermount_ = std::move(helper).value();
    const std::string dev = "/dev/fd/" + std::to_string(fs->fusermount_.device.get());
    if (fuse_mount(fs->fuse_, dev.c_str()) == 0) {
      (void)fs->fusermount_.device.Release();  // the session owns it now
    } else {
      ReleaseFusermount(fs->fusermount_, std::chrono::seconds(5));
      fuse_destroy(fs->fuse_);
      fs->stopped_ = true;
      fs->fuse_ = nullptr;
      return Internal("credential filesystem: libfuse refused the mounted device");
    }
  } else {
    log.Warn("creds.mount.no_auto_unmount",
             {{"dir", fs->options_.mount_dir},
              {"error", helper.error().message()},
              {"reason",
               "mounting through fusermount3 failed; mounting directly (a killed agent leaves a "
               "dead mount, detached at the next start)"}});
    if (fuse_mount(fs->fuse_, fs->options_.mount_dir.c_str()) != 0) {
      fuse_destroy(fs->fuse_);
      fs->fuse_ = nullptr;
    }
  }
  if (fs->fuse_ == nullptr) {
    fs->stopped_ = true;
    return FailedPrecondition("--creds-mount " + fs->options_.mount_dir +
                              ": cannot mount the FUSE file system (see creds.fuse.log; needs "
                              "/dev/fuse and root or CAP_SYS_ADMIN)");
  }
  const int fd = fuse_session_fd(fuse_get_session(fs->fuse_));
  const int flags = ::fcntl(fd, F_GETFL);
  fs->stop_fd_ = OwnedFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 || !fs->stop_fd_.valid()) {
    const int err = errno;
    fs->Stop();
    return Internal("credential filesystem: " + std::string(std::strerror(err)));
  }
  for (size_t i = 0; i < fs->options_.threads; ++i) {
    fs->workers_.emplace_back([self = fs.get()] { self->Loop(); });
  }
  log.Info("creds.mount", {{"dir", fs->options_.mount_dir}, {"threads", fs->options_.threads}});
  return fs;
}

void CredsFs::Loop() {
  struct fuse_session* se = fuse_get_session(fuse_);
  const int fd = fuse_session_fd(se);
  struct fuse_buf buf {};
  while (!stopped_.load()) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log_.Error("creds.loop.fail", {{"error", std::strerror(errno)}});
      break;
    }
    if (p[1].revents != 0) break;
    if ((p[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
      if (!unmounted_externally_.exchange(true)) {
        log_.Warn("creds.unmounted",
                  {{"dir", options_.mount_dir}, {"reason", "the mount was removed from outside"}});
      }
      break;
    }
    if ((p[0].revents & POLLIN) == 0) continue;
    // Several workers wake for one request; the others get EAGAIN (non-blocking fd).
    const int res = fuse_session_receive_buf(se, &buf);
    if (res == -EAGAIN || res == -EINTR) continue;
    if (res <= 0 || fuse_session_exited(se) != 0) {
      if (!unmounted_externally_.exchange(true)) {
        log_.Warn("creds.unmounted", {{"dir", options_.mount_dir},
                                      {"reason", res == 0 ? "the mount was removed from outside"
                                                          : std::strerror(-res)}});
      }
      break;
    }
    fuse_session_process_buf(se, &buf);
  }
  std::free(buf.mem);
}

void CredsFs::Stop() {
  if (stopped_.exchange(true)) return;
  if (stop_fd_.valid()) {
    const uint64_t one = 1;
    ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
    (void)n;
  }
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  if (fuse_ != nullptr) {
    // Closes the device first (blocked callers get ENOTCONN), then a lazy unmount. Skipped
    // when someone else already unmounted it (libfuse would complain on stderr). A mount made
    // through fusermount3 is unmounted by it once the keepalive socket closes.
    if (fusermount_.helper > 0) {
      fuse_destroy(fuse_);
      if (!ReleaseFusermount(fusermount_, std::chrono::seconds(5))) {
        log_.Warn("creds.unmount.helper",
                  {{"dir", options_.mount_dir}, {"reason", "fusermount3 did not exit; killed"}});
      }
      auto mounted = IsCredsMount(options_.mount_dir);
      if (mounted.ok() && *mounted) (void)::umount2(options_.mount_dir.c_str(), MNT_DETACH);
    } else {
      auto mounted = IsCredsMount(options_.mount_dir);
      if (!mounted.ok() || *mounted) fuse_unmount(fuse_);
      fuse_destroy(fuse_);
    }
    fuse_ = nullptr;
    log_.Info("creds.unmount", {{"dir", options_.mount_dir}});
  }
  std::lock_guard lock(g_log_mu);
  if (g_log == &log_) g_log = nullptr;
}

}  // namespace sigil::agent::creds
