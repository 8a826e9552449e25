// Entry points of the `sigil` subcommands. Each returns the process exit code:
// 0 success, 1 operation failed, 2 usage error.
#pragma once

#include <span>
#include <string>

namespace sigil::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// `sigil pki ...`: offline PKI tooling (CA init, CSR, issue, verify, JWT mint/validate).
int RunPki(std::span<const std::string> args);

// `sigil server`: the control plane (server_command.cc).
int RunServer(std::span<const std::string> args);
// `sigil server backup` / `sigil server restore` (store_backup.cc).
int RunServerBackup(std::span<const std::string> args);
int RunServerRestore(std::span<const std::string> args);
// Admin API clients (admin_commands.cc, admin_ops_commands.cc).
int RunApply(std::span<const std::string> args);
int RunGet(std::span<const std::string> args);
int RunDelete(std::span<const std::string> args);
int RunToken(std::span<const std::string> args);
int RunNode(std::span<const std::string> args);
int RunAudit(std::span<const std::string> args);
// `sigil credential rotate` (credential_command.cc).
int RunCredential(std::span<const std::string> args);
// `sigil revoke ...` (revoke_command.cc).
int RunRevoke(std::span<const std::string> args);
// `sigil ca rotate|status` (ca_command.cc).
int RunCa(std::span<const std::string> args);
// `sigil agent` (agent_command.cc) and `sigil whoami` (whoami_command.cc).
int RunAgent(std::span<const std::string> args);
int RunWhoami(std::span<const std::string> args);
int RunRun(std::span<const std::string> args);

}  // namespace sigil::cli
