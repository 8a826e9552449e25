#include "cli/daemon.h"

#include <grpc/support/log.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <iostream>

namespace sigil::cli {
namespace {

void FilteredGrpcLog(gpr_log_func_args* args) {
  if (args->message != nullptr &&
      std::strstr(args->message, "No match found for server name") != nullptr) {
    return;
  }
  std::fprintf(stderr, "grpc %s %s:%d] %s\n", gpr_log_severity_string(args->severity), args->file,
               args->line, args->message != nullptr ? args->message : "");
}

sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

std::optional<LogFormat> PrepareDaemon(const std::string& log_format, const FlagSet& flags) {
  if (log_format != "text" && log_format != "json") {
    std::cerr << "sigil: --log-format: must be text or json\n\n" << flags.Help();
    return std::nullopt;
  }
  sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  gpr_set_log_function(FilteredGrpcLog);
  return log_format == "json" ? LogFormat::kJson : LogFormat::kText;
}

std::string_view WaitForTermination() {
  sigset_t set = TerminationSignals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig == SIGTERM ? "SIGTERM" : "SIGINT";
}

}  // namespace sigil::cli
