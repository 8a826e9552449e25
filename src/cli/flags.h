// A small, strict command-line flag parser shared by every `sigil` subcommand.
//
// Accepts `--name value`, `--name=value` and boolean `--name`; `--` ends the flags. Unknown
// flags, missing values, repeated single-valued flags and missing required flags are errors
// that name the flag. `-h`/`--help` sets help_requested() and stops parsing.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace sigil::cli {

class FlagSet {
 public:
  // `usage` is the synopsis after the program name, e.g. "pki issue --dir DIR ...".
  FlagSet(std::string usage, std::string summary);

  void String(std::string name, std::string* out, std::string help, bool required = false);
  void StringList(std::string name, std::vector<std::string>* out, std::string help);
  void Bool(std::string name, bool* out, std::string help);
  void Duration(std::string name, Seconds* out, std::string help);
  // Adds `--config FILE`: a YAML mapping whose keys are this set's flag names without "--".
  // Values: a scalar for value flags, true/false for booleans, a list for repeatable flags.
  // Applied after the command line, only to flags the command line did not give (flags win);
  // an unknown key or a value of the wrong shape is an error naming the key.
  void ConfigFile(std::string help);
  // Allows positional arguments (otherwise any positional argument is an error).
  void Positional(std::string name, std::vector<std::string>* out, std::string help);

  Result<void> Parse(std::span<const std::string> args);
  bool help_requested() const { return help_; }
  std::string Help() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string placeholder;  // empty for booleans
    bool required = false;
    bool repeatable = false;
    bool seen = false;
    std::string default_text;
    std::function<Result<void>(std::string_view)> set;
  };
  Flag* Find(std::string_view name);
  Result<void> ApplyConfig(const std::string& path);

  std::string usage_;
  std::string summary_;
  std::vector<Flag> flags_;
  std::string positional_name_;
  std::string positional_help_;
  std::vector<std::string>* positional_ = nullptr;
  bool help_ = false;
  bool has_config_ = false;
  std::string config_path_;
};

// The common start of every subcommand: parses `args`; on --help prints the help and returns
// exit code 0; on a usage error prints it with the help and returns 2. Returns nullopt when the
// command should go on.
std::optional<int> ParseOrExit(FlagSet& flags, std::span<const std::string> args);

}  // namespace sigil::cli
