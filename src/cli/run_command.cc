// `sigil run [--name NAME] -- CMD ARGS...`: runs CMD in a fresh cgroup under the agent's managed
// tree (<cgroup2>/sigil/run-NAME-PID), so CMD and everything it forks are covered by the
// agent's interception programs (attached to <cgroup2>/sigil and inherited by every cgroup
// below). sigil stays as the parent: it forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to CMD, exits
// with CMD's status, and removes the cgroup once it is empty. If sigil itself is killed, CMD is
// killed too (PR_SET_PDEATHSIG).
//
// When the node intercepts TLS for some inject Service (the agent published
// <inject-ca-dir>/inject-ca-bundle.pem: the system roots plus its node-local CA), CMD gets
// SSL_CERT_FILE, CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE and AWS_CA_BUNDLE pointing to that bundle
// and NODE_EXTRA_CA_CERTS to the CA alone (docs/injection.md, "TLS interception").
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cli/agent_dataplane.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "dataplane/intercept/cgroup2.h"

namespace sigil::cli {
namespace {

volatile sig_atomic_t g_child = 0;

void Forward(int sig) {
  if (g_child > 0) ::kill(g_child, sig);
}

std::string SafeName(const std::string& text) {
  std::string out;
  for (char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    out.push_back(ok ? c : '_');
  }
  if (out.size() > 40) out.resize(40);
  return out.empty() ? "cmd" : out;
}

}  // namespace

int RunRun(std::span<const std::string> args) {
  std::string name, cgroup_root = "/run/sigil/cgroup2", managed = "sigil";
  std::string inject_ca_dir = "/run/sigil";
  std::vector<std::string> command;
  FlagSet flags(
      "run [--name NAME] [--cgroup-root DIR] [--managed-cgroup NAME] [--inject-ca-dir DIR] -- "
      "CMD [ARGS...]",
      "Run CMD in a new cgroup managed by the local agent: its TCP connections are "
      "intercepted and upgraded to mTLS (agent started with --dataplane).");
  flags.String("name", &name, "label for the cgroup (default: CMD's file name)");
  flags.String("cgroup-root", &cgroup_root,
               "cgroup2 mount, as given to the agent (default /run/sigil/cgroup2)");
  flags.String("managed-cgroup", &managed,
               "the agent's managed tree under the cgroup2 mount, as given to the agent "
               "(default sigil)");
  flags.String("inject-ca-dir", &inject_ca_dir,
               "where the agent publishes the node-local CA of inject Services that terminate "
               "TLS, as given to the agent (default /run/sigil); when its bundle is there, CMD "
               "trusts it through SSL_CERT_FILE and friends");
  flags.Positional("CMD", &command, "the command and its arguments");
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (command.empty()) {
    std::cerr << "sigil run: no command given (sigil run -- CMD ARGS...)\n";
    return kExitUsage;
  }
  if (name.empty()) name = command[0].substr(command[0].rfind('/') + 1);

  auto root = ManagedCgroupRoot(cgroup_root, managed);
  if (!root.ok()) {
    std::cerr << "sigil run: " << root.error().message() << "\n";
    return kExitFailure;
  }
  const std::string leaf = "run-" + SafeName(name) + "-" + std::to_string(::getpid());
  Result<std::string> dir = *root + "/" + leaf;
  if (::mkdir(dir->c_str(), 0755) != 0)
    dir = Unavailable("mkdir " + *dir + ": " + std::strerror(errno));
  if (!dir.ok()) {
    std::cerr << "sigil run: " << dir.error().message()
              << " (creating managed cgroups needs root or a delegated cgroup tree)\n";
    return kExitFailure;
  }

  // TLS interception on this node: CMD trusts the node-local CA (with the system roots).
  std::vector<std::pair<std::string, std::string>> env;
  {
    const std::string bundle = inject_ca_dir + "/inject-ca-bundle.pem";
    const std::string ca = inject_ca_dir + "/inject-ca.pem";
    struct stat st {};
    if (::stat(bundle.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      for (const char* var :
           {"SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE"}) {
        env.emplace_back(var, bundle);
      }
      env.emplace_back("NODE_EXTRA_CA_CERTS", ca);
    }
  }

  // The child joins the cgroup before exec, so nothing CMD does escapes it.
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) {
    std::cerr << "sigil run: fork: " << std::strerror(errno) << "\n";
    return kExitFailure;
  }
  if (child == 0) {
    // CMD must not outlive this launcher unnoticed: if sigil is killed (even with SIGKILL,
    // which cannot be forwarded), the kernel kills CMD. Survives exec; checked against the
    // race where the parent died before prctl.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    if (auto r = dataplane::MoveProcess(*dir, 0); !r.ok()) {
      std::cerr << "sigil run: " << r.error().message() << "\n";
      ::_exit(126);
    }
    for (const auto& [var, value] : env) ::setenv(var.c_str(), value.c_str(), 1);
    std::vector<char*> argv;
    for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::cerr << "sigil run: " << command[0] << ": " << std::strerror(errno) << "\n";
    ::_exit(errno == ENOENT ? 127 : 126);
  }
  g_child = child;
  struct sigaction sa {};
  sa.sa_handler = Forward;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(sig, &sa, nullptr);

  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  // Processes CMD left running keep the cgroup (and their interception) alive; leave it then.
  (void)dataplane::RemoveCgroup(*dir);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kExitFailure;
}

}  // namespace sigil::cli
