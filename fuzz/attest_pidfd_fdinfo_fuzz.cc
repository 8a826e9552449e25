// Fuzzes ParsePidfdFdinfo (/proc/self/fdinfo/FD of a pidfd). Invariants: a failure is
// InvalidArgument; a success is >= -1 and is the decimal rendering of the value on the first
// line starting with "Pid:" (the only line that counts); other lines do not change it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "agent/attest/proc_parse.h"

using sigil::agent::attest::ParsePidfdFdinfo;

// The parsers are compiled with recoverable UBSan; make any report fatal so libFuzzer keeps it.
extern "C" const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }

namespace {

std::string_view TrimBlanks(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto pid = ParsePidfdFdinfo(text);

  // First "Pid:" line, found independently of the parser.
  std::string_view rest = text;
  bool found = false;
  std::string_view value;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    if (line.starts_with("Pid:")) {
      found = true;
      value = TrimBlanks(line.substr(4));
      break;
    }
  }

  if (!pid.ok()) {
    if (pid.error().code() != sigil::ErrorCode::kInvalidArgument) std::abort();
    // The canonical shapes never fail.
    if (found && (value == "-1" || value == "0")) std::abort();
    return 0;
  }
  if (!found || *pid < -1) std::abort();
  if (value != std::to_string(*pid)) std::abort();

  // Other lines around it are ignored.
  auto padded =
      ParsePidfdFdinfo("pos:\t0\nflags:\t02000002\n" + std::string(text) + "\nNSpid:\t7\n");
  if (!padded.ok() || *padded != *pid) std::abort();
  return 0;
}
