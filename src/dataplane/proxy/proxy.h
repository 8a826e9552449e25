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

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "agent/attest/attested_process.h"
#include "agent/workloadapi/workload_source.h"

#include "common/log.h"
#include "common/result.h"
#include "core/trust_bundle.h"
#include "dataplane/intercept/interceptor.h"
#include "dataplane/policy/node_policy.h"

namespace sigil::dataplane {

// What the proxy needs from the agent. Implementations must be thread-safe; the proxy calls
// Attest and Svids from worker threads (they may block), Bundles and Policy from any thread.
class ProxyHost {
 public:
  virtual ~ProxyHost() = default;
  virtual Result<agent::attest::AttestedProcess> Attest(pid_t tgid) = 0;
  virtual Result<std::vector<agent::workloadapi::X509SvidGrant>> Svids(
      const agent::attest::AttestedProcess& process) = 0;
  virtual core::BundleSet Bundles() = 0;
  virtual std::shared_ptr<const NodePolicy> Policy() = 0;
  // Records a data plane event in the control plane's audit trail ("dataplane.denied",
  // "dataplane.refused"); must not block.
  virtual void Audit(const std::string& type, const std::string& identity, int64_t pid,
                     const std::string& exe, const nlohmann::json& details) = 0;
};

struct ProxyOptions {
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
};

struct ProxyCounters {
  uint64_t outbound_accepted = 0, outbound_unattributed = 0, outbound_denied = 0,
           outbound_passthrough = 0, outbound_mutual = 0, outbound_failed = 0;
  uint64_t inbound_accepted = 0, inbound_handshake_failed = 0, inbound_denied = 0,
           inbound_relayed = 0;
  uint64_t active_relays = 0;
  uint64_t outbound_resumed = 0, inbound_resumed = 0;  // TLS sessions resumed
  uint64_t outbound_simple = 0;                        // TLS originated to simple Services
  // sigil/1 connections whose record layer moved from OpenSSL to our own (or stayed).
  uint64_t records_switched = 0, records_kept_openssl = 0;
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
  ProxyCounters Counters() const;
  uint16_t inbound_port() const;
  sockaddr_in outbound_v4() const;

  struct Impl;

 private:
  explicit Proxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sigil::dataplane
