#include "cli/grpc_log.h"

#include <grpc/support/log.h>

#include <cstdio>
#include <cstring>

namespace sigil::cli {
namespace {

void FilteredLog(gpr_log_func_args* args) {
  if (args->message != nullptr &&
      std::strstr(args->message, "No match found for server name") != nullptr) {
    return;
  }
  std::fprintf(stderr, "grpc %s %s:%d] %s\n", gpr_log_severity_string(args->severity), args->file,
               args->line, args->message != nullptr ? args->message : "");
}

}  // namespace

void InstallGrpcLogFilter() { gpr_set_log_function(FilteredLog); }

}  // namespace sigil::cli
