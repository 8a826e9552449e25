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

}  // namespace sigil::cli
