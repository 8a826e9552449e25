// CredsFs operations: what each FUSE request returns, per calling process. See creds_fs.h.
#define FUSE_USE_VERSION 35
#include <fcntl.h>
#include <fuse3/fuse.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "agent/creds/caller.h"
#include "agent/creds/creds_fs.h"
#include "agent/creds/file_content.h"

namespace sigil::agent::creds {
namespace {

namespace pb = sigil::agent::v1;

// One open credential file: its content rendered at open, served to the opener only.
struct OpenFile {
  std::string binding;
  std::string spiffe_id;  // the identity the grant was made for
  pid_t opener = 0;
  SecretBytes content;
};

struct SplitPath {
  int depth = 0;  // 0: "/", 1: "/binding", 2: "/binding/file"
  std::string_view binding, file;
};

std::optional<SplitPath> Split(const char* path) {
  std::string_view p(path == nullptr ? "" : path);
  if (p.empty() || p.front() != '/') return std::nullopt;
  p.remove_prefix(1);
  if (p.empty()) return SplitPath{};
  size_t slash = p.find('/');
  if (slash == std::string_view::npos) return SplitPath{1, p, {}};
  std::string_view file = p.substr(slash + 1);
  if (file.empty() || file.find('/') != std::string_view::npos) return std::nullopt;
  return SplitPath{2, p.substr(0, slash), file};
}

const BindingInfo* FileBinding(const BindingSet& set, std::string_view name) {
  auto it = set.find(name);
  return it == set.end() || !it->second.file ? nullptr : &it->second;
}

bool Contains(const std::vector<std::string>& ids, const std::string& id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int CredsFs::GetAttr(const char* path, struct stat* st, struct fuse_file_info* fi) {
  std::memset(st, 0, sizeof *st);
  st->st_atime = st->st_mtime = st->st_ctime = started_;
  auto p = Split(path);
  if (!p) return -ENOENT;
  if (p->depth == 0) {
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2;
    return 0;
  }
  auto set = agent_.CredentialBindings();
  const BindingInfo* b = FileBinding(*set, p->binding);
  if (b == nullptr) return -ENOENT;
  const struct fuse_context* ctx = fuse_get_context();
  st->st_uid = ctx->uid;
  st->st_gid = ctx->gid;
  if (p->depth == 1) {
    st->st_mode = S_IFDIR | 0500;
    st->st_nlink = 2;
    return 0;
  }
  if (p->file != b->file->file_name) return -ENOENT;
  st->st_mode = S_IFREG | 0400;
  st->st_nlink = 1;
  if (fi != nullptr && fi->fh != 0) {
    st->st_size = static_cast<off_t>(reinterpret_cast<const OpenFile*>(fi->fh)->content.size());
  }
  return 0;
}

int CredsFs::ReadDir(const char* path, const std::function<void(const char*)>& add) {
  auto p = Split(path);
  if (!p) return -ENOENT;
  if (p->depth == 2) return -ENOTDIR;
  auto set = agent_.CredentialBindings();
  const BindingInfo* dir = nullptr;
  if (p->depth == 1) {
    dir = FileBinding(*set, p->binding);
    if (dir == nullptr) return -ENOENT;
  }
  add(".");
  add("..");
  // What the caller may read, by the synced view; a caller we cannot attest sees nothing.
  auto caller = AttestCaller(attestor_, fuse_get_context()->pid);
  if (!caller.ok()) return 0;
  if (dir != nullptr) {
    if (!agent_.BindingIdentities(*dir, *caller).empty()) add(dir->file->file_name.c_str());
    return 0;
  }
  for (const auto& [name, b] : *set) {
    if (b.file && !agent_.BindingIdentities(b, *caller).empty()) add(name.c_str());
  }
  return 0;
}

int CredsFs::Open(const char* path, struct fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EACCES;
  auto p = Split(path);
  if (!p || p->depth != 2) return -ENOENT;
  auto set = agent_.CredentialBindings();
  const BindingInfo* b = FileBinding(*set, p->binding);
  if (b == nullptr || p->file != b->file->file_name) return -ENOENT;
  auto caller = AttestCaller(attestor_, fuse_get_context()->pid);
  if (!caller.ok()) {
    return Refuse(b->name, nullptr, "attestation failed: " + caller.error().message(), false);
  }
  auto grant = agent_.FetchCredential(b->name, *caller);
  if (!grant.ok()) {
    const ErrorCode code = grant.error().code();
    if (code == ErrorCode::kPermissionDenied || code == ErrorCode::kNotFound) {
      // The server refused and recorded it (credential.denied).
      return Refuse(b->name, &*caller, grant.error().message(), false);
    }
    log_.Warn("creds.fetch.fail", {{"binding", b->name},
                                   {"pid", caller->pid},
                                   {"exe", caller->exe_path},
                                   {"error", grant.error().message()}});
    return -EIO;
  }
  auto content = RenderFile(*b->file, *grant);
  if (!content.ok()) {
    log_.Error("creds.render.fail", {{"binding", b->name}, {"error", content.error().message()}});
    return -EIO;
  }
  if (!grant->server_audited()) {
    ReportUse(b->name, *caller, grant->info().spiffe_id, "credential.use", "");
  }
  auto file = std::make_unique<OpenFile>();
  file->binding = b->name;
  file->spiffe_id = grant->info().spiffe_id;
  file->opener = caller->pid;
  file->content = std::move(content).value();
  fi->fh = reinterpret_cast<uint64_t>(file.release());
  fi->direct_io = 1;  // every read comes to us: no page-cache copy of the secret
  fi->keep_cache = 0;
  return 0;
}

int CredsFs::Read(const char* /*path*/, char* buf, size_t size, off_t offset,
                  struct fuse_file_info* fi) {
  auto* file = reinterpret_cast<const OpenFile*>(fi->fh);
  if (file == nullptr) return -EBADF;
  auto caller = AttestCaller(attestor_, fuse_get_context()->pid);
  if (!caller.ok()) {
    return Refuse(file->binding, nullptr, "attestation failed: " + caller.error().message(), false);
  }
  if (caller->pid != file->opener) {
    return Refuse(
        file->binding, &*caller,
        "read through a file descriptor that pid " + std::to_string(file->opener) + " opened",
        true);
  }
  auto set = agent_.CredentialBindings();
  const BindingInfo* b = FileBinding(*set, file->binding);
  if (b == nullptr) return Refuse(file->binding, &*caller, "the binding was removed", true);
  if (!Contains(agent_.BindingIdentities(*b, *caller), file->spiffe_id)) {
    return Refuse(file->binding, &*caller,
                  "the process no longer holds " + file->spiffe_id + " (exec or policy change)",
                  true);
  }
  if (offset < 0) return -EINVAL;
  const size_t at = static_cast<size_t>(offset);
  if (at >= file->content.size()) return 0;
  const size_t n = std::min(size, file->content.size() - at);
  std::memcpy(buf, file->content.data() + at, n);
  return static_cast<int>(n);
}

int CredsFs::Release(struct fuse_file_info* fi) {
  delete reinterpret_cast<OpenFile*>(fi->fh);  // SecretBytes: wiped
  fi->fh = 0;
  return 0;
}

int CredsFs::Refuse(const std::string& binding, const attest::AttestedProcess* process,
                    std::string_view reason, bool report) {
  nlohmann::json fields = {{"binding", binding}, {"reason", reason}};
  if (process != nullptr) {
    fields["pid"] = process->pid;
    fields["exe"] = process->exe_path;
    fields["uid"] = process->uid;
  }
  log_.Info("creds.denied", fields);
  if (report && process != nullptr) {
    auto ids = agent_.CredentialBindings();
    std::string identity;
    if (const BindingInfo* b = FileBinding(*ids, binding)) {
      auto held = agent_.BindingIdentities(*b, *process);
      if (!held.empty()) identity = held.front();
    }
    ReportUse(binding, *process, identity, "credential.refused", reason);
  }
  return -EACCES;
}

void CredsFs::ReportUse(const std::string& binding, const attest::AttestedProcess& process,
                        const std::string& identity, std::string_view type,
                        std::string_view reason) {
  pb::AgentEvent e;
  e.set_type(std::string(type));
  e.set_time_unix_ms(NowMs());
  e.set_identity(identity);
  e.set_pid(process.pid);
  e.set_exe(process.exe_path);
  nlohmann::json details = {{"binding", binding},
                            {"delivery", "file"},
                            {"uid", process.uid},
                            {"exe_sha256", process.exe_sha256}};
  if (!reason.empty()) details["reason"] = std::string(reason).substr(0, 512);
  e.set_details_json(details.dump());
  agent_.ReportEvent(std::move(e));
}

}  // namespace sigil::agent::creds
