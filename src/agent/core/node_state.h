// NodeState: what a joined agent keeps on disk to restart without a join token.
//
// DATA_DIR (created 0700):
//   node.json     {"servers", "server", "node_name", "spiffe_id", "trust_domain"}   0644
//                 "servers": the agent API addresses of the server replicas, in order;
//                 "server": the first of them (files written before "servers" have only it)
//   node.key      the node's private key, PKCS#8 PEM                        0600
//   node.crt      the node SVID chain, leaf first                           0644
//   bundle.jwks   the last trust bundle the server sent                     0644
//
// Workload keys are never written here (see src/agent/custody); only the node's own key is, so
// the agent can authenticate after a restart. Every file is written atomically (rename), the
// key before the certificate, so a crash leaves a consistent pair or the previous one.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/secret_bytes.h"

namespace sigil::agent {

struct NodeState {
  std::vector<std::string> servers;  // HOST:PORT of the agent API, one per server replica
  std::string node_name;
  std::string spiffe_id;     // spiffe://TD/sigil/node/NAME
  std::string trust_domain;  // TD
  std::string chain_pem;     // node SVID, leaf first
  SecretBytes key_pem;       // PKCS#8
  std::string bundle_jwks;
};

// nullopt when the directory holds no joined node yet. Errors name the file that is damaged.
Result<std::optional<NodeState>> LoadNodeState(const std::string& dir);
Result<void> SaveNodeState(const std::string& dir, const NodeState& state);
// Rewrites only the node SVID and key (after a renewal) or the bundle.
Result<void> SaveNodeCredential(const std::string& dir, const std::string& chain_pem,
                                const SecretBytes& key_pem);
Result<void> SaveBundle(const std::string& dir, const std::string& bundle_jwks);
// Rewrites only node.json (after --server replaced the stored addresses).
Result<void> SaveNodeMeta(const std::string& dir, const NodeState& state);

}  // namespace sigil::agent
