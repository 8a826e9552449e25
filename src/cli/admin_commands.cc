// `sigil apply|get|delete|token|node|audit`: admin API clients (see src/server/admin_api.h).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/admin_client.h"
#include "cli/commands.h"
#include "common/duration.h"
#include "common/file_util.h"
#include "resources/resource.h"

namespace sigil::cli {
namespace {

constexpr std::string_view kResourcePath = "/apis/sigil.dev/v1alpha1/";
constexpr size_t kMaxApplyInput = size_t{8} * 1024 * 1024;

int Usage(const FlagSet& flags, const std::string& message) {
  std::cerr << "sigil: " << message << "\n\n" << flags.Help();
  return kExitUsage;
}

// Sends the request; prints transport or server errors (verbatim) and returns nullopt then.
std::string Str(const nlohmann::json& j, const char* key) { return JsonField(j, key); }

std::string Pad(std::string s, size_t n) {
  if (s.size() < n) s.resize(n, ' ');
  return s + " ";
}

int Apply(std::span<const std::string> args) {
  AdminEndpoint ep;
  std::string file;
  FlagSet flags("apply -f FILE|- [--server URL] [--credentials DIR]",
                "Validate every document of a multi-document YAML/JSON file and apply them "
                "atomically.");
  flags.String("f", &file, "file to apply, or - for stdin", true);
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  std::string text;
  if (file == "-") {
    char buf[65536];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0 && text.size() <= kMaxApplyInput) {
      text.append(buf, n);
    }
  } else {
    auto read = ReadFile(file, kMaxApplyInput);
    if (!read.ok()) {
      std::cerr << "sigil apply: " << read.error().message() << "\n";
      return kExitFailure;
    }
    text = std::move(*read);
  }
  auto j = AdminCall("apply", ep, "POST", std::string(kResourcePath) + "apply", text,
                     "application/yaml");
  if (!j) return kExitFailure;
  for (const auto& r : (*j)["results"]) {
    std::cout << Str(r, "kind") << "/" << Str(r, "name") << " "
              << (r.value("changed", false) ? "applied" : "unchanged") << " (resourceVersion "
              << Str(r, "resourceVersion") << ")\n";
  }
  return kExitOk;
}

int Get(std::span<const std::string> args) {
  AdminEndpoint ep;
  std::string output = "table";
  std::vector<std::string> pos;
  FlagSet flags("get KIND [NAME] [-o table|yaml|json] [--server URL] [--credentials DIR]",
                "Show resources (secrets redacted).");
  flags.String("o", &output, "output format: table, yaml or json (default table)");
  flags.Positional("KIND [NAME]", &pos, "resource kind (e.g. WorkloadIdentity) and name");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (pos.empty() || pos.size() > 2) return Usage(flags, "get takes KIND and optionally NAME");
  if (output != "table" && output != "yaml" && output != "json") {
    return Usage(flags, "-o: must be table, yaml or json");
  }
  std::string path = std::string(kResourcePath) + pos[0] + (pos.size() == 2 ? "/" + pos[1] : "");
  auto j = AdminCall("get", ep, "GET", path);
  if (!j) return kExitFailure;
  std::vector<nlohmann::json> items;
  if (pos.size() == 2) {
    items.push_back(*j);
  } else {
    for (const auto& i : (*j)["items"]) items.push_back(i);
  }
  if (output == "json") {
    std::cout << (pos.size() == 2 ? *j : nlohmann::json(items)).dump(2) << "\n";
    return kExitOk;
  }
  if (output == "yaml") {
    std::vector<resources::Resource> rs;
    for (const auto& i : items) {
      resources::Resource r;
      r.kind = resources::KindFromName(Str(i, "kind")).value_or(resources::Kind::kWorkloadIdentity);
      r.name = Str(i["metadata"], "name");
      std::string version = Str(i["metadata"], "resourceVersion");
      if (!version.empty()) r.resource_version = std::strtoull(version.c_str(), nullptr, 10);
      r.spec = i.value("spec", nlohmann::json::object());
      rs.push_back(std::move(r));
    }
    std::cout << (pos.size() == 2 ? resources::ToYaml(rs[0]) : resources::ToYaml(rs));
    return kExitOk;
  }
  std::cout << Pad("KIND", 20) << Pad("NAME", 32) << "VERSION\n";
  for (const auto& i : items) {
    std::cout << Pad(Str(i, "kind"), 20) << Pad(Str(i["metadata"], "name"), 32)
              << Str(i["metadata"], "resourceVersion") << "\n";
  }
  return kExitOk;
}

int Delete(std::span<const std::string> args) {
  AdminEndpoint ep;
  std::vector<std::string> pos;
  FlagSet flags("delete KIND NAME [--server URL] [--credentials DIR]", "Delete a resource.");
  flags.Positional("KIND NAME", &pos, "resource kind and name");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (pos.size() != 2) return Usage(flags, "delete takes KIND and NAME");
  auto j = AdminCall("delete", ep, "DELETE", std::string(kResourcePath) + pos[0] + "/" + pos[1]);
  if (!j) return kExitFailure;
  std::cout << Str(*j, "kind") << "/" << Str(*j, "name") << " deleted\n";
  return kExitOk;
}

}  // namespace

int RunApply(std::span<const std::string> args) { return Apply(args); }
int RunGet(std::span<const std::string> args) { return Get(args); }
int RunDelete(std::span<const std::string> args) { return Delete(args); }

}  // namespace sigil::cli
