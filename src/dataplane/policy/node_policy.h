// NodePolicy: the node's connection policy compiled from the Service and AccessPolicy objects
// the server syncs to the agent. Answers the two questions the proxy asks per connection:
//   * which Service does this IP destination belong to (outbound: what the workload dialled;
//     inbound: which local service a sigil/1 CONNECT names), and
//   * may this source SPIFFE ID reach that Service (AccessPolicy: deny wins, then allow,
//     otherwise deny).
// Immutable once built; share it as shared_ptr<const NodePolicy> and rebuild on each change.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "core/spiffe_id.h"
#include "dataplane/protocol/preamble.h"
#include "resources/address.h"
#include "resources/identity_pattern.h"

namespace sigil::dataplane {

enum class ServiceMode { kMutual, kSimple, kPermissive, kInject, kPassthrough, kDeny };
std::string_view ServiceModeName(ServiceMode mode);
Result<ServiceMode> ParseServiceMode(std::string_view text);

enum class PeerForwarding { kNone, kProxyV2, kXfcc };

struct UpstreamTls {
  std::string ca_bundle_pem;  // empty: system roots
  std::string sni;            // empty: the host dialled
  bool verify_hostname = true;
  uint16_t port = 0;  // 0: the port dialled
};

struct CompiledService {
  std::string name;
  ServiceMode mode = ServiceMode::kPassthrough;
  std::vector<resources::ServiceAddress> addresses;
  std::optional<core::SpiffeId> identity;  // mutual, permissive
  uint16_t inbound_port = kDefaultInboundPort;
  PeerForwarding forwarding = PeerForwarding::kNone;
  UpstreamTls tls;  // simple, inject
  // inject with spec.inject.terminateTls: the workload speaks HTTPS and the agent terminates
  // it with a node-local CA (docs/injection.md, "TLS interception").
  bool terminate_tls = false;
};

// The server names a workload may ask for (SNI) when the agent terminates TLS for `service`:
// its DNS-name addresses ("*.domain" patterns included) and tls.sni, lowercased, sorted, unique.
std::vector<std::string> TlsServerNames(const CompiledService& service);

struct AccessDecision {
  bool allowed = false;
  std::string policy;  // the AccessPolicy that decided, empty when none matched
  std::string
      reason;  // for logs and audit: "allowed by web-to-payments", "no AccessPolicy allows ..."
};

class NodePolicy {
 public:
  struct Options {
    // What happens to a destination no Service covers (the node-level default).
    ServiceMode default_mode = ServiceMode::kPassthrough;
  };
  using Objects = std::vector<std::pair<std::string, std::string>>;  // (name, spec JSON)

  // Objects that do not compile are left out and named in errors(); the rest still apply, so
  // one bad object cannot take a node's whole policy down.
  static std::shared_ptr<const NodePolicy> Build(const Objects& services, const Objects& policies,
                                                 Options options);

  // The most specific Service covering `dst` (a single address beats a prefix, a longer
  // prefix beats a shorter one, then name order), nullptr when none does. DNS-name
  // addresses never match here: the workload dials IPs (see docs/dataplane.md).
  const CompiledService* Match(const Destination& dst) const;
  // Match restricted to services a node can serve inbound over sigil/1 (mutual, permissive).
  const CompiledService* MatchInbound(const Destination& local) const;
  AccessDecision Authorize(const core::SpiffeId& source, const CompiledService& service) const;

  ServiceMode default_mode() const { return options_.default_mode; }
  const std::vector<std::string>& errors() const { return errors_; }
  size_t service_count() const { return services_.size(); }
  const CompiledService* Find(const std::string& name) const;
  const std::vector<std::unique_ptr<CompiledService>>& services() const { return services_; }

 private:
  struct Rule {
    std::string name;
    std::vector<resources::IdentityPattern> sources;
    std::vector<std::string> destinations;
    bool allow = true;
  };
  struct Entry {  // one IP address/prefix of one service, on one port
    const CompiledService* service;
    int family;
    std::array<uint8_t, 16> ip;
    int prefix_length;
  };

  NodePolicy() = default;
  const CompiledService* MatchWhere(const Destination& dst, bool inbound_only) const;

  Options options_;
  std::vector<std::unique_ptr<CompiledService>> services_;
  std::map<std::string, const CompiledService*> by_name_;
  std::map<uint16_t, std::vector<Entry>> by_port_;  // each sorted most specific first
  std::vector<Rule> rules_;
  std::vector<std::string> errors_;
};

}  // namespace sigil::dataplane
