#include "agent/core/node_state.h"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "agent/core/server_addresses.h"
#include "common/file_util.h"

namespace sigil::agent {
namespace {

constexpr size_t kMaxFile = size_t{1} << 20;

std::string Path(const std::string& dir, const char* name) { return dir + "/" + name; }

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

Result<std::optional<NodeState>> LoadNodeState(const std::string& dir) {
  const std::string meta_path = Path(dir, "node.json");
  if (!Exists(meta_path)) return std::optional<NodeState>();
  SIGIL_ASSIGN_OR_RETURN(std::string meta_text, ReadFile(meta_path, kMaxFile));
  nlohmann::json meta = nlohmann::json::parse(meta_text, nullptr, false);
  NodeState state;
  auto field = [&](const char* key, std::string& out) -> Result<void> {
    if (!meta.is_object() || !meta.contains(key) || !meta[key].is_string() ||
        meta[key].get<std::string>().empty()) {
      return InvalidArgument(meta_path + ": \"" + key + "\" is missing or not a string");
    }
    out = meta[key].get<std::string>();
    return Ok();
  };
  if (meta.is_object() && meta.contains("servers")) {
    const auto& list = meta["servers"];
    if (!list.is_array() || list.size() > kMaxServerAddresses) {
      return InvalidArgument(meta_path + ": \"servers\" is not a list of at most " +
                             std::to_string(kMaxServerAddresses) + " addresses");
    }
    for (const auto& a : list) {
      if (!a.is_string()) return InvalidArgument(meta_path + ": \"servers\" holds a non-string");
      state.servers.push_back(a.get<std::string>());
    }
    SIGIL_TRY(ValidateServerAddresses(meta_path + ": servers", state.servers));
  } else {
    // Written before the agent knew several replicas: one address.
    std::string server;
    SIGIL_TRY(field("server", server));
    SIGIL_ASSIGN_OR_RETURN(state.servers, ParseServerAddresses(meta_path + ": server", server));
  }
  SIGIL_TRY(field("node_name", state.node_name));
  SIGIL_TRY(field("spiffe_id", state.spiffe_id));
  SIGIL_TRY(field("trust_domain", state.trust_domain));
  SIGIL_ASSIGN_OR_RETURN(state.chain_pem, ReadFile(Path(dir, "node.crt"), kMaxFile));
  SIGIL_ASSIGN_OR_RETURN(state.key_pem, ReadSecretFile(Path(dir, "node.key"), kMaxFile));
  if (Exists(Path(dir, "bundle.jwks"))) {
    SIGIL_ASSIGN_OR_RETURN(state.bundle_jwks, ReadFile(Path(dir, "bundle.jwks"), kMaxFile));
  }
  return std::optional<NodeState>(std::move(state));
}

Result<void> SaveNodeCredential(const std::string& dir, const std::string& chain_pem,
                                const SecretBytes& key_pem) {
  SIGIL_TRY(WriteFileAtomic(Path(dir, "node.key"), key_pem.view(), 0600));
  return WriteFileAtomic(Path(dir, "node.crt"), chain_pem, 0644);
}

Result<void> SaveBundle(const std::string& dir, const std::string& bundle_jwks) {
  return WriteFileAtomic(Path(dir, "bundle.jwks"), bundle_jwks, 0644);
}

Result<void> SaveNodeState(const std::string& dir, const NodeState& state) {
  SIGIL_TRY(MakeDirs(dir, 0700));
  SIGIL_TRY(SaveNodeCredential(dir, state.chain_pem, state.key_pem));
  if (!state.bundle_jwks.empty()) SIGIL_TRY(SaveBundle(dir, state.bundle_jwks));
  return SaveNodeMeta(dir, state);
}

Result<void> SaveNodeMeta(const std::string& dir, const NodeState& state) {
  SIGIL_TRY(ValidateServerAddresses("servers", state.servers));
  nlohmann::json meta = {{"servers", state.servers},
                         {"server", state.servers.front()},
                         {"node_name", state.node_name},
                         {"spiffe_id", state.spiffe_id},
                         {"trust_domain", state.trust_domain}};
  return WriteFileAtomic(Path(dir, "node.json"), meta.dump(2) + "\n", 0644);
}

}  // namespace sigil::agent
