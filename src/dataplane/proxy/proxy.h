// Proxy: the agent's data plane. Ties interception (sigil_intercept), the node policy
// (sigil_dp_policy), the relay (sigil_relay) and the agent's identities together:
//
//   outbound  127.0.0.1:15001 (+ [::1]:15001): connections the BPF programs redirected from
//             managed cgroups. Attributed with Interceptor::Lookup, attested, matched against
//             NodePolicy, then: mutual -> sigil/1 mTLS to the destination node's agent with the
//             process's own SVID; passthrough -> relayed to the original destination;
//             deny -> reset.
//   inbound   0.0.0.0:15008: sigil/1. The client SVID is verified in the handshake, the
//             request line names a local Service, AccessPolicy decides, the local application
//             gets the bytes.
//
// Blocking work (attestation, SVID issuance) runs on a small worker pool and never on an
// event loop. See docs/dataplane.md.
#pragma once

#include <netinet/in.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "agent/attest/attested_process.h"
#include "agent/workloadapi/workload_source.h"

#include "common/log.h"
#include "common/result.h"
#include "core/revocation_set.h"
#include "core/trust_bundle.h"
#include "dataplane/intercept/interceptor.h"
#include "dataplane/policy/node_policy.h"

namespace sigil::dataplane {

namespace inject {
class InterceptCa;  // dataplane/inject/intercept_ca.h
}

// inject Services (issue 6): how a CredentialBinding adds its credential to each request.
struct InjectBinding {
  std::string name;
  enum class Kind { kHeader, kSigV4 } kind = Kind::kHeader;
  std::string header_name;      // kHeader
  std::string header_template;  // kHeader: exactly one {{secret}}
  std::string region;           // kSigV4
  std::string aws_service;      // kSigV4
};

// A credential granted to one process for one binding, as the proxy uses it. The secret parts
// are reachable only inside WithSecret (views valid during the call).
class InjectCredential {
 public:
  virtual ~InjectCredential() = default;
  virtual const std::string& spiffe_id() const = 0;
  virtual std::string attribute(std::string_view name) const = 0;  // "accessKeyId" (aws)
  // Still what the agent would grant now: not expired, source and binding unchanged.
  virtual bool current() const = 0;
  virtual void WithSecret(const std::function<void(std::string_view secret,
                                                   std::string_view session_token)>& fn) const = 0;
};

// What the proxy needs from the agent. Implementations must be thread-safe; the proxy calls
// Attest and Svids from worker threads (they may block), Bundles and Policy from any thread.
class ProxyHost {
 public:
  virtual ~ProxyHost() = default;
  virtual Result<agent::attest::AttestedProcess> Attest(pid_t tgid) = 0;
  virtual Result<std::vector<agent::workloadapi::X509SvidGrant>> Svids(
      const agent::attest::AttestedProcess& process) = 0;
  virtual core::BundleSet Bundles() = 0;
  // What the control plane revoked (never null). Peers are checked against it in every
  // handshake; Proxy::RevocationsChanged closes established connections it covers.
  virtual std::shared_ptr<const core::RevocationSet> Revocations() = 0;
  virtual std::shared_ptr<const NodePolicy> Policy() = 0;
  // Records a data plane event in the control plane's audit trail ("dataplane.denied",
  // "dataplane.refused"); must not block. `details_json` is a JSON object's text.
  virtual void AuditJson(const std::string& type, const std::string& identity, int64_t pid,
                         const std::string& exe, std::string details_json) = 0;
  // The same with a document. Peer-supplied strings (a Host header, a refusal's reason) may
  // hold any byte: invalid UTF-8 is replaced rather than thrown on the event loop.
  void Audit(const std::string& type, const std::string& identity, int64_t pid,
             const std::string& exe, const nlohmann::json& details) {
    AuditJson(type, identity, pid, exe,
              details.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  // inject: the header/sigv4 bindings of Service `service` that `process` may use (by the
  // agent's synced view; the server checks again when granting), sorted by name.
  virtual std::vector<InjectBinding> InjectBindings(const agent::attest::AttestedProcess& process,
                                                    const std::string& service) = 0;
  // May block (a server call); PermissionDenied/NotFound when refused.
  virtual Result<std::shared_ptr<const InjectCredential>> FetchInjectCredential(
      const std::string& binding, const agent::attest::AttestedProcess& process) = 0;
};

struct ProxyOptions {
  // inject Services with spec.inject.terminateTls: the node-local CA whose leaves the agent
  // presents to workloads (docs/injection.md, "TLS interception"); null: such connections
  // are refused.
  std::shared_ptr<inject::InterceptCa> intercept_ca;
  std::string outbound_v4 = "127.0.0.1:15001";
  std::string outbound_v6 = "[::1]:15001";  // "" disables IPv6 interception
  std::string inbound = "0.0.0.0:15008";
  size_t loops = 0;    // event loops; 0: one per core
  size_t workers = 2;  // threads for attestation and issuance
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds handshake_timeout{5000};
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  // Drop plaintext TCP from other hosts to the ports of mutual Services this node serves
  // (nftables; docs/dataplane.md "Enforcement").
  bool enforce = true;
  // How often inbound certificates are refreshed (also on every policy change).
  std::chrono::milliseconds inbound_refresh{2000};
  // mutual: carry workload connections as streams of pooled sigil/2 connections, one per
  // (source SVID, peer agent, port) per loop, instead of one sigil/1 handshake each
  // (docs/dataplane.md, "Pooled connections").
  bool pool = true;
  uint32_t pool_max_streams = 256;                                // per pooled connection
  std::chrono::milliseconds pool_idle{std::chrono::seconds(60)};  // closed after this long unused
};

struct ProxyCounters {
  uint64_t outbound_accepted = 0, outbound_unattributed = 0, outbound_denied = 0,
           outbound_passthrough = 0, outbound_mutual = 0, outbound_failed = 0;
  uint64_t inbound_accepted = 0, inbound_handshake_failed = 0, inbound_denied = 0,
           inbound_relayed = 0;
  uint64_t active_relays = 0;
  uint64_t outbound_resumed = 0, inbound_resumed = 0;  // TLS sessions resumed
  uint64_t outbound_simple = 0;                        // TLS originated to simple Services
  uint64_t outbound_inject = 0;                        // connections to inject Services
  uint64_t inject_requests = 0;                        // requests forwarded with a credential added
  uint64_t inject_refused = 0;  // requests answered by the agent with an HTTP error
  // sigil/1 connections whose record layer moved from OpenSSL to our own (or stayed).
  uint64_t records_switched = 0, records_kept_openssl = 0;
  uint64_t records_ktls = 0;  // ... moved to kernel TLS instead (relayed with splice)
  // sigil/2: pooled connections opened (outbound) / accepted (inbound), streams carried.
  uint64_t pool_connections = 0, pool_streams = 0, inbound_pooled = 0, inbound_streams = 0;
  // Established connections (sigil/1 relays, pooled sigil/2 connections) closed because a
  // certificate they were authenticated with was revoked, and handshakes refused for that.
  uint64_t revoked_closed = 0, revoked_refused = 0;
};

class Proxy {
 public:
  // Binds the listeners and starts the loops; the interceptor is borrowed and must outlive
  // the proxy (the caller attaches it to managed cgroups).
  static Result<std::unique_ptr<Proxy>> Start(ProxyOptions options, ProxyHost& host,
                                              Interceptor& interceptor, Logger& log);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  void Stop();
  // The host's revocations changed: closes (on both ends, RST) every established connection
  // whose local or peer certificate they cover, forgets session tickets, and re-reads the
  // inbound certificates. Returns at once; the work runs on the proxy's refresher thread.
  void RevocationsChanged();
  ProxyCounters Counters() const;
  uint16_t inbound_port() const;
  sockaddr_in outbound_v4() const;

  struct Impl;

 private:
  explicit Proxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sigil::dataplane
