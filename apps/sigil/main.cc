// The one Sigil binary. Thin by design: it dispatches to src/cli.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace {

struct TopCommand {
  const char* name;
  const char* summary;
  int (*run)(std::span<const std::string>);
};

int Version(std::span<const std::string>) {
  std::cout << "sigil " << SIGIL_VERSION << "\n";
  return 0;
}

constexpr TopCommand kCommands[] = {
    {"pki", "offline PKI: CA init, CSR, issue, verify, JWT mint/validate", sigil::cli::RunPki},
    {"server", "run the control plane (admin API, agent API)", sigil::cli::RunServer},
    {"apply", "apply resource documents (-f FILE|-) through the admin API", sigil::cli::RunApply},
    {"get", "show resources: get KIND [NAME] -o table|yaml|json", sigil::cli::RunGet},
    {"delete", "delete a resource: delete KIND NAME", sigil::cli::RunDelete},
    {"token", "join tokens: token create --node NAME [--ttl 1h]", sigil::cli::RunToken},
    {"node", "nodes: node list", sigil::cli::RunNode},
    {"audit", "audit records; audit verify checks the hash chain", sigil::cli::RunAudit},
    {"credential", "credential sources: credential rotate SOURCE --from-file F|--from-stdin",
     sigil::cli::RunCredential},
    {"revoke", "revoke node|identity|svid|binding TARGET --reason TEXT; revoke list|lift",
     sigil::cli::RunRevoke},
    {"ca", "CA rotation: ca rotate [--activate-after 10m] [--force]; ca status", sigil::cli::RunCa},
    {"agent", "run the node agent (SPIFFE Workload API on a Unix socket)", sigil::cli::RunAgent},
    {"whoami", "ask the local agent which identities this process gets, and why",
     sigil::cli::RunWhoami},
    {"run", "run a command in a managed cgroup (its connections get mTLS)", sigil::cli::RunRun},
    {"version", "print the version", Version},
};

// `sigil agent ...` runs the lean `sigil-agent` binary installed beside this one when there is
// one (same code and flags, without the server's libraries: see docs/agent.md, "Binary"), so
// the long-running daemon does not carry the control plane's libraries in memory. The pid
// stays the same (exec). SIGIL_AGENT_IN_PROCESS=1 runs it in this binary instead.
void MaybeExecLeanAgent(int argc, char** argv) {
  if (const char* v = std::getenv("SIGIL_AGENT_IN_PROCESS"); v != nullptr && *v != '\0') return;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return;
  const auto lean = self.parent_path() / "sigil-agent";
  if (::access(lean.c_str(), X_OK) != 0) return;
  std::vector<char*> lean_argv;
  std::string name = "sigil-agent";
  lean_argv.push_back(name.data());
  for (int i = 2; i < argc; ++i) lean_argv.push_back(argv[i]);
  lean_argv.push_back(nullptr);
  ::execv(lean.c_str(), lean_argv.data());
  std::cerr << "sigil: exec " << lean.string() << ": " << std::strerror(errno)
            << " (running the agent in this process)\n";
}

void PrintHelp(std::ostream& os) {
  os << "Usage: sigil COMMAND [args]\n\n"
        "Sigil: workload identity and credential delivery for Linux.\n\nCommands:\n";
  for (const auto& c : kCommands) {
    std::string name = c.name;
    name.resize(12, ' ');
    os << "  " << name << c.summary << "\n";
  }
  os << "\nRun 'sigil COMMAND --help' for details.\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    PrintHelp(std::cerr);
    return sigil::cli::kExitUsage;
  }
  if (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    PrintHelp(std::cout);
    return sigil::cli::kExitOk;
  }
  if (args[0] == "--version") return Version({});
  if (args[0] == "agent") MaybeExecLeanAgent(argc, argv);
  for (const auto& c : kCommands) {
    if (args[0] == c.name) return c.run(std::span<const std::string>(args).subspan(1));
  }
  std::cerr << "sigil: unknown command \"" << args[0] << "\"\n\n";
  PrintHelp(std::cerr);
  return sigil::cli::kExitUsage;
}
