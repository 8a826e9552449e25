#include "dataplane/proxy/nft_enforcer.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/owned_fd.h"

extern char** environ;

namespace sigil::dataplane {
namespace {

constexpr const char* kTable = "inet sigil_enforce";

bool SafeToken(const std::string& s) {
  for (char c : s) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '.' || c == ':' || c == '/' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return !s.empty();
}

}  // namespace

NftEnforcer::NftEnforcer(std::string nft_binary) : nft_(std::move(nft_binary)) {}

std::string NftEnforcer::Ruleset(const std::set<ProtectedPort>& ports) {
  std::string out = std::string("table ") + kTable + "\ndelete table " + kTable + "\n";
  out += std::string("table ") + kTable + " {\n  chain input {\n" +
         "    type filter hook input priority filter; policy accept;\n";
  for (const auto& p : ports) {
    // Addresses come from validated Service objects; names are DNS labels. Checked again here
    // because the text is a program for nft.
    if (!SafeToken(p.address) || !SafeToken(p.service)) continue;
    out += std::string("    iifname != \"lo\" ") + (p.ipv6 ? "ip6" : "ip") + " daddr " + p.address +
           " tcp dport " + std::to_string(p.port) + " counter drop comment \"" + p.service + "\"\n";
  }
  out += "  }\n}\n";
  return out;
}

Result<void> NftEnforcer::Run(const std::string& script) {
  int in[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return Internal(std::string("pipe: ") + std::strerror(errno));
  OwnedFd read_end(in[0]), write_end(in[1]);
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return Internal(std::string("pipe: ") + std::strerror(errno));
  OwnedFd out_read(out[0]), out_write(out[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, read_end.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, out_write.get(), 2);
  std::string arg0 = nft_, arg1 = "-f", arg2 = "-";
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, nft_.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Unavailable("nftables: cannot run " + nft_ + ": " + std::strerror(rc));
  read_end.Reset();
  out_write.Reset();
  std::string_view left = script;
  while (!left.empty()) {
    const ssize_t n = ::write(write_end.get(), left.data(), left.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    left.remove_prefix(static_cast<size_t>(n));
  }
  write_end.Reset();
  std::string output;
  char buf[1024];
  for (;;) {
    const ssize_t n = ::read(out_read.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < 4096) output.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!output.empty() && output.back() == '\n') output.pop_back();
    return Unavailable("nftables: " + nft_ + " -f - failed: " + output);
  }
  return {};
}

Result<void> NftEnforcer::Apply(const std::set<ProtectedPort>& ports) {
  std::lock_guard lock(mu_);
  if (installed_ && ports == current_) return {};
  SIGIL_TRY(Run(Ruleset(ports)));
  current_ = ports;
  installed_ = true;
  return {};
}

Result<void> NftEnforcer::Clear() {
  std::lock_guard lock(mu_);
  if (!installed_) return {};
  SIGIL_TRY(Run(std::string("table ") + kTable + "\ndelete table " + kTable + "\n"));
  installed_ = false;
  current_.clear();
  return {};
}

}  // namespace sigil::dataplane
