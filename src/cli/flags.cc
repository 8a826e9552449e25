#include "cli/flags.h"

#include <optional>

#include <iostream>

#include "cli/commands.h"
#include "common/duration.h"
#include "common/file_util.h"

#include <yaml-cpp/yaml.h>

namespace sigil::cli {

FlagSet::FlagSet(std::string usage, std::string summary)
    : usage_(std::move(usage)), summary_(std::move(summary)) {}

void FlagSet::String(std::string name, std::string* out, std::string help, bool required) {
  Flag f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.placeholder = "VALUE";
  f.required = required;
  f.default_text = out->empty() ? "" : *out;
  f.set = [out](std::string_view v) -> Result<void> {
    *out = std::string(v);
    return Ok();
  };
  flags_.push_back(std::move(f));
}

void FlagSet::StringList(std::string name, std::vector<std::string>* out, std::string help) {
  Flag f;
  f.name = std::move(name);
  f.help = std::move(help) + " (repeatable)";
  f.placeholder = "VALUE";
  f.repeatable = true;
  f.set = [out](std::string_view v) -> Result<void> {
    out->emplace_back(v);
    return Ok();
  };
  flags_.push_back(std::move(f));
}

void FlagSet::Bool(std::string name, bool* out, std::string help) {
  Flag f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.set = [out](std::string_view) -> Result<void> {
    *out = true;
    return Ok();
  };
  flags_.push_back(std::move(f));
}

void FlagSet::Duration(std::string name, Seconds* out, std::string help) {
  Flag f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.placeholder = "DURATION";
  f.default_text = FormatDuration(*out);
  f.set = [out](std::string_view v) -> Result<void> {
    SIGIL_ASSIGN_OR_RETURN(*out, ParseDuration(v));
    return Ok();
  };
  flags_.push_back(std::move(f));
}

void FlagSet::ConfigFile(std::string help) {
  has_config_ = true;
  String("config", &config_path_, std::move(help));
}

Result<void> FlagSet::ApplyConfig(const std::string& path) {
  SIGIL_ASSIGN_OR_RETURN(std::string text, ReadFile(path, size_t{1} << 20));
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument("--config " + path + ": not YAML: " + e.what());
  }
  if (root.IsNull()) return Ok();
  if (!root.IsMap()) return InvalidArgument("--config " + path + ": must be a mapping");
  for (const auto& kv : root) {
    std::string key;
    try {
      key = kv.first.as<std::string>();
    } catch (const YAML::Exception&) {
      return InvalidArgument("--config " + path + ": keys must be strings");
    }
    const std::string where = "--config " + path + ": " + key;
    Flag* f = key == "config" ? nullptr : Find(key);
    if (f == nullptr) {
      return InvalidArgument("--config " + path + ": unknown key \"" + key +
                             "\" (keys are the flag names without --)");
    }
    if (f->seen) continue;  // the command line wins
    f->seen = true;
    const YAML::Node& v = kv.second;
    if (f->placeholder.empty()) {  // boolean
      bool on = false;
      try {
        on = v.as<bool>();
      } catch (const YAML::Exception&) {
        return InvalidArgument(where + ": must be true or false");
      }
      if (on) SIGIL_TRY(f->set(""));
      continue;
    }
    std::vector<std::string> values;
    if (v.IsSequence()) {
      if (!f->repeatable) return InvalidArgument(where + ": takes one value, not a list");
      for (const auto& item : v) {
        if (!item.IsScalar()) return InvalidArgument(where + ": list items must be values");
        values.push_back(item.as<std::string>());
      }
    } else if (v.IsScalar()) {
      values.push_back(v.as<std::string>());
    } else {
      return InvalidArgument(where + ": must be a value" +
                             std::string(f->repeatable ? " or a list" : ""));
    }
    for (const auto& value : values) {
      if (auto r = f->set(value); !r.ok()) return std::move(r).error().WithContext(where);
    }
  }
  return Ok();
}

void FlagSet::Positional(std::string name, std::vector<std::string>* out, std::string help) {
  positional_name_ = std::move(name);
  positional_help_ = std::move(help);
  positional_ = out;
}

FlagSet::Flag* FlagSet::Find(std::string_view name) {
  for (auto& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

Result<void> FlagSet::Parse(std::span<const std::string> args) {
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (!flags_done && (arg == "-h" || arg == "--help")) {
      help_ = true;
      return Ok();
    }
    if (!flags_done && arg == "--") {
      flags_done = true;
      continue;
    }
    if (flags_done || !arg.starts_with("-")) {
      if (positional_ == nullptr) {
        return InvalidArgument("unexpected argument \"" + std::string(arg) + "\"");
      }
      positional_->emplace_back(arg);
      continue;
    }
    // Single-letter flags may also be written "-f" ("-f FILE", "-o=json").
    bool short_form = !arg.starts_with("--") && arg.size() >= 2 &&
                      (arg.size() == 2 || arg[2] == '=') && Find(arg.substr(1, 1)) != nullptr;
    if (!arg.starts_with("--") && !short_form) {
      return InvalidArgument("unknown flag \"" + std::string(arg) + "\" (flags are --name)");
    }
    std::string_view body = arg.substr(short_form ? 1 : 2);
    std::string_view name = body;
    std::optional<std::string_view> value;
    if (size_t eq = body.find('='); eq != std::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
    }
    Flag* f = Find(name);
    if (f == nullptr) return InvalidArgument("unknown flag --" + std::string(name));
    if (f->seen && !f->repeatable) {
      return InvalidArgument("flag --" + f->name + " given more than once");
    }
    f->seen = true;
    if (f->placeholder.empty()) {  // boolean
      if (value) return InvalidArgument("flag --" + f->name + " takes no value");
      SIGIL_TRY(f->set(""));
      continue;
    }
    if (!value) {
      if (i + 1 >= args.size()) return InvalidArgument("flag --" + f->name + " needs a value");
      value = args[++i];
    }
    auto set = f->set(*value);
    if (!set.ok()) return std::move(set).error().WithContext("flag --" + f->name);
  }
  if (has_config_ && !config_path_.empty()) SIGIL_TRY(ApplyConfig(config_path_));
  for (const auto& f : flags_) {
    if (f.required && !f.seen) return InvalidArgument("missing required flag --" + f.name);
  }
  return Ok();
}

std::string FlagSet::Help() const {
  std::string out = "Usage: sigil " + usage_ + "\n\n" + summary_ + "\n";
  if (!flags_.empty()) out += "\nFlags:\n";
  for (const auto& f : flags_) {
    std::string left = (f.name.size() == 1 ? "  -" : "  --") + f.name;
    if (!f.placeholder.empty()) left += " " + f.placeholder;
    if (left.size() < 30)
      left.resize(30, ' ');
    else
      left += "\n" + std::string(30, ' ');
    out += left + f.help;
    if (f.required) out += " (required)";
    if (!f.default_text.empty()) out += " [default: " + f.default_text + "]";
    out += "\n";
  }
  if (positional_ != nullptr) {
    out += "\nArguments:\n  " + positional_name_ + "  " + positional_help_ + "\n";
  }
  out += "  -h, --help                  show this help\n";
  return out;
}

std::optional<int> ParseOrExit(FlagSet& flags, std::span<const std::string> args) {
  auto parsed = flags.Parse(args);
  if (flags.help_requested()) {
    std::cout << flags.Help();
    return kExitOk;
  }
  if (!parsed.ok()) {
    std::cerr << "sigil: " << parsed.error().message() << "\n\n" << flags.Help();
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace sigil::cli
