// WorkloadSource: what the SPIFFE Workload API service needs from the agent, and nothing more.
//
// The agent (src/agent/core/agent.h) implements it over its synced state, SVID cache and server
// connection; the service (workload_api.h) turns it into the five standard RPCs. Keeping this
// seam narrow lets the service be tested with a source built on a real in-process CA.
//
// Every method is thread-safe and may block for at most about `kIssueTimeout` (an issuance
// round trip to the server).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/attest/attested_process.h"
#include "common/clock.h"
#include "common/result.h"
#include "common/secret_bytes.h"
#include "core/certificate.h"
#include "core/trust_bundle.h"

namespace sigil::agent::workloadapi {

inline constexpr std::chrono::seconds kIssueTimeout{20};

// One X.509-SVID the caller may hold, with its private key (generated and held by the agent).
struct X509SvidGrant {
  std::string spiffe_id;
  std::string hint;                      // the WorkloadIdentity's name
  std::vector<core::Certificate> chain;  // leaf first
  SecretBytes key_pkcs8_der;             // unencrypted PKCS#8 DER, for the wire only
  TimePoint expires_at;
};

struct JwtSvidGrant {
  std::string spiffe_id;
  std::string hint;
  std::string token;  // JWS compact serialisation
  TimePoint expires_at;
};

// Why an identity applies to a process (for `sigil whoami`).
struct IdentityExplanation {
  std::string spiffe_id;
  std::string workload_identity;       // the WorkloadIdentity's name
  std::vector<std::string> selectors;  // the selectors it required (all matched)
};

class WorkloadSource {
 public:
  virtual ~WorkloadSource() = default;

  // Every identity `process` holds on this node, issuing or renewing SVIDs as needed, ordered
  // by WorkloadIdentity name (the first is the default). PermissionDenied when it holds none;
  // Unavailable when an SVID is needed and the server cannot be reached.
  virtual Result<std::vector<X509SvidGrant>> X509Svids(const attest::AttestedProcess& process) = 0;

  // JWT-SVIDs for `audience` (non-empty), for `spiffe_id` only when it is not empty (then
  // PermissionDenied unless the process holds it) or for every identity the process holds.
  virtual Result<std::vector<JwtSvidGrant>> JwtSvids(const attest::AttestedProcess& process,
                                                     const std::vector<std::string>& audience,
                                                     const std::string& spiffe_id) = 0;

  // The identities and the matching selectors, without issuing anything.
  virtual Result<std::vector<IdentityExplanation>> Explain(
      const attest::AttestedProcess& process) = 0;

  // Trust bundles by trust domain name ("example.org"); always includes our own. Empty before
  // the first Sync.
  virtual core::BundleSet Bundles() = 0;

  // A counter that moves whenever anything a stream shows may have changed: an SVID renewed,
  // the bundle, the synced WorkloadIdentity set, a revocation. WaitForChange blocks until it
  // differs from `seen` or `timeout` passes (or the source shuts down) and returns it.
  virtual uint64_t Generation() = 0;
  virtual uint64_t WaitForChange(uint64_t seen, std::chrono::milliseconds timeout) = 0;
  virtual bool ShuttingDown() = 0;
};

}  // namespace sigil::agent::workloadapi
