#include "agent/attest/attest.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "agent/attest/cgroup_parse.h"
#include "agent/attest/linux_compat.h"
#include "agent/attest/proc_parse.h"
#include "agent/attest/proc_reader.h"

namespace sigil::agent::attest {
namespace {

constexpr std::string_view kDeletedSuffix = " (deleted)";
constexpr size_t kMaxNssBuffer = size_t{1} << 20;

// getpwuid_r / getgrgid_r with a growing buffer; "" when the id has no entry.
template <class Entry, class Fn>
std::string LookupName(uint32_t id, Fn fn, char* Entry::*name) {
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  for (size_t size = hint > 0 ? static_cast<size_t>(hint) : 1024; size <= kMaxNssBuffer;
       size *= 2) {
    std::vector<char> buf(size);
    Entry entry{};
    Entry* found = nullptr;
    int rc = fn(id, &entry, buf.data(), buf.size(), &found);
    if (rc == ERANGE) continue;
    if (rc != 0 || found == nullptr || entry.*name == nullptr) return {};
    return entry.*name;
  }
  return {};
}

// One attestation: holds the pidfd (borrowed) and the /proc/PID directory fd.
class Session {
 public:
  Session(pid_t pid, int pidfd, const Attestor::Options& options, ExeHashCache& cache)
      : pid_(pid),
        pidfd_(pidfd),
        proc_("/proc/" + std::to_string(pid)),
        options_(options),
        cache_(cache) {}

  Result<AttestedProcess> Run(PidfdSource source);

 private:
  void Hook(AttestStage stage) const {
    if (options_.TEST_between_reads) options_.TEST_between_reads(stage);
  }
  // Any failure is first checked against the pidfd: if the process has exited, that is
  // the error to report, whatever read happened to notice it.
  Error Fail(Error error) const;
  template <class T>
  Result<T> Checked(Result<T> r) const {
    if (!r.ok()) return Fail(std::move(r).error());
    return r;
  }

  Result<void> OpenProcDir();
  Result<ProcStatus> ReadStatus() const;
  Result<void> OpenExe(AttestedProcess& out);
  Result<void> ReadCgroup(AttestedProcess& out) const;
  void ReadParent(AttestedProcess& out) const;
  Result<void> RecheckUnchanged(const ProcStatus& first) const;
  Result<void> CheckStillRunning() const;

  const pid_t pid_;
  const int pidfd_;
  const std::string proc_;
  const Attestor::Options& options_;
  ExeHashCache& cache_;
  UniqueFd dir_;
  UniqueFd exe_;
  struct stat exe_stat_ {};
};

Error Session::Fail(Error error) const {
  auto exited = ProcessExited(pidfd_);
  if (exited.ok() && *exited) {
    return NotFound("process exited during attestation (" + error.message() + ")");
  }
  return error;
}

Result<void> Session::OpenProcDir() {
  dir_ = UniqueFd(::open(proc_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_.valid()) return ErrnoError(proc_, "open", errno);
  return Ok();
}

Result<ProcStatus> Session::ReadStatus() const {
  std::string path = proc_ + "/status";
  SIGIL_ASSIGN_OR_RETURN(std::string text,
                         ReadFileAt(dir_.get(), "status", kMaxProcFileBytes, path));
  auto status = ParseProcStatus(text);
  if (!status.ok()) return status.error().WithContext(path);
  if (status->tgid != pid_ || status->pid != pid_) {
    return InvalidArgument(path + ": Pid " + std::to_string(status->pid) + ", Tgid " +
                           std::to_string(status->tgid) + ": not the process " +
                           std::to_string(pid_));
  }
  return status;
}

Result<void> Session::OpenExe(AttestedProcess& out) {
  std::string path = proc_ + "/exe";
  exe_ = UniqueFd(::openat(dir_.get(), "exe", O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!exe_.valid()) {
    if (errno == ENOENT) return FailedPrecondition(path + ": no executable (kernel thread?)");
    return ErrnoError(path, "open", errno);
  }
  if (::fstat(exe_.get(), &exe_stat_) != 0) return ErrnoError(path, "fstat", errno);
  if (!S_ISREG(exe_stat_.st_mode)) return FailedPrecondition(path + ": not a regular file");
  // The name of the file we opened (not a second readlink of /proc/PID/exe, which an
  // execve() in between could make disagree with the bytes we hash).
  SIGIL_ASSIGN_OR_RETURN(out.exe_path, FdPath(exe_.get(), path));
  // An unlinked name gets " (deleted)"; with st_nlink > 0 it may also be a file literally
  // named so, or another hard link survives. Either way the path does not reliably name
  // this file, so treat it as deleted (no path selector) rather than stat an attacker
  // chosen path.
  if (exe_stat_.st_nlink == 0 || out.exe_path.ends_with(kDeletedSuffix)) {
    out.exe_deleted = true;
    if (out.exe_path.ends_with(kDeletedSuffix)) {
      out.exe_path.resize(out.exe_path.size() - kDeletedSuffix.size());
    }
  }
  struct statfs fs {};
  if (::fstatfs(exe_.get(), &fs) != 0) return ErrnoError(path, "fstatfs", errno);
  out.exe_on_fuse = fs.f_type == compat::kFuseSuperMagic;
  return Ok();
}

Result<void> Session::ReadCgroup(AttestedProcess& out) const {
  std::string path = proc_ + "/cgroup";
  SIGIL_ASSIGN_OR_RETURN(std::string text,
                         ReadFileAt(dir_.get(), "cgroup", kMaxProcFileBytes, path));
  auto parsed = ParseProcCgroup(text);
  if (!parsed.ok()) return parsed.error().WithContext(path);
  out.cgroup = UnifiedCgroupPath(*parsed);
  CgroupPathInfo info = ClassifyCgroupPath(ClassificationCgroupPath(*parsed));
  out.cgroup_v1 = std::move(parsed->v1);
  out.container_id = std::move(info.container_id);
  out.container_runtime = std::move(info.container_runtime);
  out.pod_uid = std::move(info.pod_uid);
  out.systemd_unit = std::move(info.systemd_unit);
  out.systemd_user_unit = std::move(info.systemd_user_unit);
  return Ok();
}

// Best effort (audit only): a kernel-thread parent has no exe, an exited one no directory.
// RecheckUnchanged's unchanged PPid is what makes what we read here the parent's.
void Session::ReadParent(AttestedProcess& out) const {
  if (out.ppid <= 0) return;
  std::string dir = "/proc/" + std::to_string(out.ppid);
  UniqueFd parent(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent.valid()) return;
  auto exe = ReadLinkAt(parent.get(), "exe", dir + "/exe");
  if (exe.ok()) out.parent_exe = std::move(*exe);
}

// Step 4 of the race argument in attest.h, part one: nothing we read has changed.
Result<void> Session::RecheckUnchanged(const ProcStatus& first) const {
  SIGIL_ASSIGN_OR_RETURN(ProcStatus now, ReadStatus());
  if (now.uids != first.uids || now.gids != first.gids || now.groups != first.groups) {
    return Error(ErrorCode::kAborted,
                 proc_ + "/status: credentials changed during attestation; retry");
  }
  if (now.ppid != first.ppid) {
    return Error(ErrorCode::kAborted, proc_ + "/status: parent changed from " +
                                          std::to_string(first.ppid) + " to " +
                                          std::to_string(now.ppid) + " during attestation; retry");
  }
  struct stat current {};
  if (::fstatat(dir_.get(), "exe", &current, 0) != 0) {
    return ErrnoError(proc_ + "/exe", "stat", errno);
  }
  if (current.st_dev != exe_stat_.st_dev || current.st_ino != exe_stat_.st_ino) {
    return Error(ErrorCode::kAborted,
                 proc_ + "/exe: the process executed another program during attestation; retry");
  }
  return Ok();
}

// Part two, strictly after every read: the pidfd's process is still running.
Result<void> Session::CheckStillRunning() const {
  SIGIL_ASSIGN_OR_RETURN(bool exited, ProcessExited(pidfd_));
  if (exited) return NotFound("process exited during attestation (seen after the last read)");
  return Ok();
}

Result<AttestedProcess> Session::Run(PidfdSource source) {
  AttestedProcess out;
  out.pid = pid_;
  out.pidfd_source = source;
  Hook(AttestStage::kPidfdReady);
  SIGIL_TRY(Checked(OpenProcDir()));
  Hook(AttestStage::kProcDirOpened);
  SIGIL_ASSIGN_OR_RETURN(ProcStatus status, Checked(ReadStatus()));
  out.uid = status.uids[kEffectiveId];
  out.gid = status.gids[kEffectiveId];
  out.real_uid = status.uids[kRealId];
  out.real_gid = status.gids[kRealId];
  out.supplementary_gids = status.groups;
  out.comm = status.name;
  out.ppid = status.ppid;
  Hook(AttestStage::kStatusRead);
  SIGIL_TRY(Checked(OpenExe(out)));
  Hook(AttestStage::kExeOpened);
  SIGIL_ASSIGN_OR_RETURN(out.exe_sha256, Checked(cache_.Sha256Hex(exe_.get(), proc_ + "/exe",
                                                                  /*cacheable=*/!out.exe_on_fuse)));
  Hook(AttestStage::kExeHashed);
  SIGIL_TRY(Checked(ReadCgroup(out)));
  Hook(AttestStage::kCgroupRead);
  ReadParent(out);
  Hook(AttestStage::kParentRead);
  out.user = LookupName<passwd>(out.uid, ::getpwuid_r, &passwd::pw_name);
  out.group = LookupName<group>(out.gid, ::getgrgid_r, &group::gr_name);
  Hook(AttestStage::kBeforeFinalCheck);
  SIGIL_TRY(Checked(RecheckUnchanged(status)));
  SIGIL_TRY(CheckStillRunning());
  return out;
}

}  // namespace

std::string_view AttestStageName(AttestStage stage) {
  switch (stage) {
    case AttestStage::kPidfdReady:
      return "pidfd-ready";
    case AttestStage::kProcDirOpened:
      return "proc-dir-opened";
    case AttestStage::kStatusRead:
      return "status-read";
    case AttestStage::kExeOpened:
      return "exe-opened";
    case AttestStage::kExeHashed:
      return "exe-hashed";
    case AttestStage::kCgroupRead:
      return "cgroup-read";
    case AttestStage::kParentRead:
      return "parent-read";
    case AttestStage::kBeforeFinalCheck:
      return "before-final-check";
  }
  return "unknown";
}

Attestor::Attestor() : Attestor(Options{}) {}

Attestor::Attestor(Options options)
    : options_(std::move(options)),
      cache_(ExeHashCache::Options{options_.hash_cache_entries, options_.max_exe_bytes,
                                   options_.hash_cache_min_ctime_age}) {}

Result<AttestedProcess> Attestor::Run(pid_t pid, int pidfd, PidfdSource source) {
  Session session(pid, pidfd, options_, cache_);
  auto result = session.Run(source);
  if (!result.ok())
    return std::move(result).error().WithContext("attest pid " + std::to_string(pid));
  return result;
}

Result<AttestedProcess> Attestor::Attest(pid_t pid) {
  std::string context = "attest pid " + std::to_string(pid);
  if (pid <= 0) return InvalidArgument(context + ": not a process id");
  auto pidfd = OpenPidfd(pid);
  if (!pidfd.ok()) return std::move(pidfd).error().WithContext(context);
  return Run(pid, pidfd->get(), PidfdSource::kPidfdOpen);
}

Result<AttestedProcess> Attestor::AttestPidfd(pid_t pid, int pidfd) {
  std::string context = "attest pid " + std::to_string(pid);
  if (pid <= 0) return InvalidArgument(context + ": not a process id");
  auto actual = PidOfPidfd(pidfd);
  if (!actual.ok()) return std::move(actual).error().WithContext(context);
  if (*actual == -1) return NotFound(context + ": the pidfd's process has exited");
  if (*actual != pid) {
    return InvalidArgument(context + ": pidfd " + std::to_string(pidfd) + " refers to " +
                           (*actual == 0 ? std::string("a process outside our pid namespace")
                                         : "pid " + std::to_string(*actual)));
  }
  return Run(pid, pidfd, PidfdSource::kCaller);
}

}  // namespace sigil::agent::attest
