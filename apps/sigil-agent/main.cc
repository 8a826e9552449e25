// sigil-agent: the node agent alone (`sigil-agent ARGS` == `sigil agent ARGS`). A separate
// binary so the daemon that runs on every host maps only the agent's code and libraries;
// `sigil agent` execs it when it is installed beside `sigil`.
#include <span>
#include <string>
#include <vector>

#include "cli/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return sigil::cli::RunAgent(std::span<const std::string>(args));
}
