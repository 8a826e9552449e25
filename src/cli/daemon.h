// Process setup shared by the long-running subcommands (`sigil server`, `sigil agent`).
//
// PrepareDaemon, called after flag parsing and before any thread starts:
// - checks --log-format (text|json), printing usage on a bad value;
// - blocks SIGTERM and SIGINT in every thread, so only WaitForTermination receives them;
// - ignores SIGPIPE (peers may close sockets mid-write);
// - routes gRPC's own log lines through a filter that drops one misleading line: agents
//   identify the server by its SPIFFE ID and may dial it by IP address; gRPC then sends the IP
//   as the TLS server name and the server's TLS layer logs "No match found for server name" at
//   ERROR level although nothing failed. Everything else is printed as gRPC would.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cli/flags.h"
#include "common/log.h"

namespace sigil::cli {

// nullopt (after printing the problem and `flags.Help()`) when `log_format` is invalid.
std::optional<LogFormat> PrepareDaemon(const std::string& log_format, const FlagSet& flags);

// Blocks until SIGTERM or SIGINT arrives; returns "SIGTERM" or "SIGINT".
std::string_view WaitForTermination();

}  // namespace sigil::cli
