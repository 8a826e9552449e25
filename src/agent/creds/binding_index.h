// The agent's parsed view of the synced CredentialBinding objects (docs/resources.md).
//
// The server syncs each binding's canonical spec JSON (never a secret: sources are not
// synced at all). The agent needs three things from a binding: its source (to drop cached
// grants when the source changes), its identity patterns (which of a process's identities
// may use it, the same rule ControlPlane::FetchCredential applies), and, for `delivery.file`,
// the file to expose under the credential mount. BindingIndex parses the set once per synced
// revision and shares it as an immutable snapshot.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "core/spiffe_id.h"
#include "resources/identity_pattern.h"

namespace sigil::agent::creds {

enum class FileFormat {
  kRaw,             // the secret bytes as they are
  kEnv,             // NAME=secret\n
  kAwsCredentials,  // an AWS shared credentials file, profile [default]
  kSvidPem,         // the reading process's own X.509-SVID chain and private key, PEM
};
std::string_view FileFormatName(FileFormat format);

struct FileDelivery {
  std::string file_name;  // [A-Za-z0-9._-], validated by the server
  FileFormat format = FileFormat::kRaw;
  std::string env_name;  // kEnv only
};

struct BindingInfo {
  std::string name;
  std::string source;  // "" for svid-pem (the process's own SVID, no source)
  std::vector<resources::IdentityPattern> identities;
  std::optional<FileDelivery> file;  // set when delivery is `file`

  bool Allows(const core::SpiffeId& id) const;
};

using BindingSet = std::map<std::string, BindingInfo, std::less<>>;

// Parses one binding's canonical spec JSON. Errors name the binding and the field.
Result<BindingInfo> ParseBinding(std::string name, std::string_view spec_json);

// Parsed bindings keyed by the synced revision they were read at. Thread-safe.
class BindingIndex {
 public:
  // (name, canonical spec JSON) of every CredentialBinding (SyncedState::ResourcesOfKind).
  using Loader = std::function<std::vector<std::pair<std::string, std::string>>()>;

  // The bindings at `revision`: the held snapshot when it was read at that revision, else a
  // new one from `load`. Bindings that do not parse are left out (and counted in skipped()):
  // the server validated them, so this only happens across incompatible versions.
  std::shared_ptr<const BindingSet> Get(uint64_t revision, const Loader& load);
  size_t skipped() const;

 private:
  mutable std::mutex mu_;
  uint64_t revision_ = 0;                  // guarded by mu_
  std::shared_ptr<const BindingSet> set_;  // guarded by mu_
  size_t skipped_ = 0;                     // guarded by mu_
};

}  // namespace sigil::agent::creds
