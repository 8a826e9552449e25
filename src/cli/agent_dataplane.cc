#include "cli/agent_dataplane.h"

#include "cli/agent_inject.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "dataplane/intercept/bpf_interceptor.h"
#include "dataplane/intercept/cgroup2.h"
#include "dataplane/intercept/interceptor.h"
#include "dataplane/intercept/nft_interceptor.h"
#include "dataplane/policy/node_policy.h"
#include "dataplane/proxy/proxy.h"

namespace sigil::cli {
namespace {

using dataplane::NodePolicy;

// The agent as the proxy sees it: attestation, the process's SVIDs, bundles, and a NodePolicy
// rebuilt whenever the synced state changes.
class AgentProxyHost final : public dataplane::ProxyHost {
 public:
  AgentProxyHost(agent::Agent& agent, agent::attest::Attestor& attestor,
                 dataplane::ServiceMode default_mode, Logger& log)
      : agent_(agent), attestor_(attestor), default_mode_(default_mode), log_(log) {}

  Result<agent::attest::AttestedProcess> Attest(pid_t tgid) override {
    return attestor_.Attest(tgid);
  }
  Result<std::vector<agent::workloadapi::X509SvidGrant>> Svids(
      const agent::attest::AttestedProcess& process) override {
    return agent_.X509Svids(process);
  }
  core::BundleSet Bundles() override { return agent_.Bundles(); }
  std::shared_ptr<const core::RevocationSet> Revocations() override { return agent_.revocations(); }

  void AuditJson(const std::string& type, const std::string& identity, int64_t pid,
                 const std::string& exe, std::string details_json) override {
    sigil::agent::v1::AgentEvent e;
    e.set_type(type);
    e.set_time_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
    e.set_identity(identity);
    e.set_pid(pid);
    e.set_exe(exe);
    e.set_details_json(std::move(details_json));
    agent_.ReportEvent(std::move(e));
  }

  std::vector<dataplane::InjectBinding> InjectBindings(
      const agent::attest::AttestedProcess& process, const std::string& service) override {
    return InjectBindingsFor(agent_, process, service);
  }
  Result<std::shared_ptr<const dataplane::InjectCredential>> FetchInjectCredential(
      const std::string& binding, const agent::attest::AttestedProcess& process) override {
    return FetchInjectCredentialFor(agent_, binding, process);
  }

  std::shared_ptr<const NodePolicy> Policy() override {
    const uint64_t generation = agent_.state().generation();
    std::lock_guard lock(mu_);
    if (policy_ && generation == generation_) return policy_;
    policy_ = NodePolicy::Build(agent_.state().ResourcesOfKind("Service"),
                                agent_.state().ResourcesOfKind("AccessPolicy"),
                                {.default_mode = default_mode_});
    generation_ = generation;
    for (const auto& e : policy_->errors()) log_.Warn("dataplane.policy.skipped", {{"error", e}});
    return policy_;
  }

 private:
  agent::Agent& agent_;
  agent::attest::Attestor& attestor_;
  const dataplane::ServiceMode default_mode_;
  Logger& log_;
  std::mutex mu_;
  std::shared_ptr<const NodePolicy> policy_;
  uint64_t generation_ = 0;
};

class Running final : public Dataplane {
 public:
  ~Running() override { StopWatching(); }
  void Stop() override {
    StopWatching();
    if (proxy) proxy->Stop();
    if (intercept) intercept->Stop();
    // The managed root goes when nothing is left in it (sigil run removes its own cgroups);
    // otherwise it stays for the next start.
    if (!root.empty()) (void)dataplane::RemoveCgroup(root);
  }
  std::string managed_root() const override { return root; }
  int inbound_port() const override { return proxy->inbound_port(); }
  std::string Metrics() const override {
    const dataplane::ProxyCounters p = proxy->Counters();
    const dataplane::InterceptCounters i = interceptor->Counters();
    std::string out;
    auto counter = [&out](const char* name, const char* help, uint64_t value) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
             " " + std::to_string(value) + "\n";
    };
    counter("sigil_dataplane_outbound_accepted_total", "Intercepted connections accepted.",
            p.outbound_accepted);
    counter("sigil_dataplane_outbound_unattributed_total",
            "Connections to the outbound listener with no interception record (refused).",
            p.outbound_unattributed);
    counter("sigil_dataplane_outbound_denied_total", "Outbound connections refused by policy.",
            p.outbound_denied);
    counter("sigil_dataplane_outbound_passthrough_total", "Outbound connections relayed as is.",
            p.outbound_passthrough);
    counter("sigil_dataplane_outbound_mutual_total", "Outbound connections upgraded to mTLS.",
            p.outbound_mutual);
    counter("sigil_dataplane_outbound_failed_total", "Outbound connections that failed.",
            p.outbound_failed);
    counter("sigil_dataplane_outbound_resumed_total",
            "Outbound mTLS handshakes that resumed a TLS session.", p.outbound_resumed);
    counter("sigil_dataplane_inbound_accepted_total", "Inbound sigil/1 connections accepted.",
            p.inbound_accepted);
    counter("sigil_dataplane_inbound_handshake_failed_total",
            "Inbound handshakes that failed (including unverified peers).",
            p.inbound_handshake_failed);
    counter("sigil_dataplane_inbound_denied_total", "Inbound requests denied by AccessPolicy.",
            p.inbound_denied);
    counter("sigil_dataplane_inbound_relayed_total",
            "Inbound connections relayed to the application.", p.inbound_relayed);
    counter("sigil_dataplane_inbound_resumed_total",
            "Inbound handshakes that resumed a TLS session.", p.inbound_resumed);
    counter("sigil_dataplane_records_switched_total",
            "sigil/1 connections whose TLS records are protected by the agent's own record layer "
            "after the handshake (the OpenSSL connection object freed).",
            p.records_switched);
    counter("sigil_dataplane_records_kept_openssl_total",
            "sigil/1 connections left on OpenSSL's record layer (records were pending).",
            p.records_kept_openssl);
    counter("sigil_dataplane_records_ktls_total",
            "sigil/1 connections whose TLS records are handled by the kernel (kTLS) after the "
            "handshake, relayed with splice().",
            p.records_ktls);
    counter("sigil_dataplane_outbound_inject_total",
            "Connections to inject Services (credentials added on the wire).", p.outbound_inject);
    counter("sigil_dataplane_inject_requests_total", "Requests forwarded with a credential added.",
            p.inject_requests);
    counter("sigil_dataplane_inject_refused_total",
            "Requests to inject Services answered by the agent with an HTTP error.",
            p.inject_refused);
    counter("sigil_dataplane_pool_connections_total",
            "Pooled sigil/2 connections this agent opened to peer agents.", p.pool_connections);
    counter("sigil_dataplane_pool_streams_total",
            "Workload connections carried as streams of pooled sigil/2 connections.",
            p.pool_streams);
    counter("sigil_dataplane_inbound_pooled_total",
            "Pooled sigil/2 connections accepted from peer agents.", p.inbound_pooled);
    counter("sigil_dataplane_inbound_streams_total",
            "Streams of pooled connections relayed to local applications.", p.inbound_streams);
    counter("sigil_dataplane_revoked_closed_total",
            "Established connections closed because a certificate they used was revoked.",
            p.revoked_closed);
    counter("sigil_dataplane_revoked_refused_total",
            "Handshakes refused because the peer's certificate is revoked.", p.revoked_refused);
    counter("sigil_dataplane_intercept_redirected_total",
            "TCP connects redirected to the outbound listener (BPF program or nftables rule).",
            i.redirected);
    if (std::string_view(interceptor->method()) == "nftables") {
      counter("sigil_dataplane_intercept_lookups_total",
              "Accepted connections attributed in user space (nftables fallback).", i.lookups);
      counter("sigil_dataplane_intercept_lookup_failures_total",
              "Attributions that failed (the connection was refused).", i.lookup_failures);
      counter("sigil_dataplane_intercept_lookup_microseconds_total",
              "Time spent attributing connections (sock_diag + /proc scan).", i.lookup_micros);
    }
    out += std::string("# HELP sigil_dataplane_intercept_info Interception method in use.\n") +
           "# TYPE sigil_dataplane_intercept_info gauge\nsigil_dataplane_intercept_info{method=\"" +
           interceptor->method() + "\"} 1\n";
    out +=
        "# HELP sigil_dataplane_active_relays Connections being relayed.\n"
        "# TYPE sigil_dataplane_active_relays gauge\nsigil_dataplane_active_relays " +
        std::to_string(p.active_relays) + "\n";
    return out;
  }

  // Tells the proxy when the synced revocations change (it then closes what they cover).
  // `seen` and `generation` are read before the proxy starts, so a change that lands while
  // it starts is still passed on.
  void WatchRevocations(const agent::Agent& agent,
                        std::shared_ptr<const core::RevocationSet> seen_at_start,
                        uint64_t generation_at_start) {
    watcher = std::thread([this, &agent, seen = std::move(seen_at_start),
                           generation = generation_at_start]() mutable {
      while (!stop_watching.load()) {
        generation = agent.state().WaitForChange(generation, std::chrono::milliseconds(250));
        auto now = agent.revocations();
        if (now != seen) {
          seen = std::move(now);
          proxy->RevocationsChanged();
        }
      }
    });
  }
  void StopWatching() {
    stop_watching = true;
    if (watcher.joinable()) watcher.join();
  }

  std::string root;
  std::unique_ptr<AgentProxyHost> host;
  std::unique_ptr<InterceptCaKeeper> intercept;  // inject Services terminating TLS (uses host)
  std::unique_ptr<dataplane::Interceptor> interceptor;
  std::unique_ptr<dataplane::Proxy> proxy;
  std::atomic<bool> stop_watching{false};
  std::thread watcher;
};

Result<sockaddr_in> ParseV4(const std::string& what, const std::string& text) {
  auto d = dataplane::Destination::Parse(text);
  if (!d.ok() || d->family != AF_INET) {
    return InvalidArgument(what + ": \"" + text + "\" is not IPv4:port");
  }
  sockaddr_storage ss = d->ToSockaddr();
  sockaddr_in out{};
  std::memcpy(&out, &ss, sizeof out);
  return out;
}

// BPF works if the programs load and can be attached to a cgroup: tried on an empty cgroup
// of our own, so no workload is affected while we find out.
Result<std::unique_ptr<dataplane::Interceptor>> LoadBpf(const dataplane::InterceptConfig& config,
                                                        const std::string& root) {
  SIGIL_ASSIGN_OR_RETURN(std::unique_ptr<dataplane::BpfInterceptor> bpf,
                         dataplane::BpfInterceptor::Load(config));
  const std::string probe = root + "/.intercept-probe-" + std::to_string(::getpid());
  if (::mkdir(probe.c_str(), 0755) != 0 && errno != EEXIST) {
    return Unavailable("mkdir " + probe + ": " + std::strerror(errno));
  }
  Result<void> attached = bpf->Attach(probe);
  if (attached.ok()) attached = bpf->Detach(probe);
  (void)dataplane::RemoveCgroup(probe);
  if (!attached.ok()) return attached.error();
  return std::unique_ptr<dataplane::Interceptor>(std::move(bpf));
}

// --intercept: bpf, nftables, or auto (BPF, else nftables). `bpf_error` gets why BPF was not
// used when auto fell back.
Result<std::unique_ptr<dataplane::Interceptor>> LoadInterceptor(
    const std::string& method, const dataplane::InterceptConfig& config, const std::string& root,
    std::string& bpf_error) {
  if (method == "bpf") return LoadBpf(config, root);
  if (method == "nftables") {
    SIGIL_ASSIGN_OR_RETURN(auto nft, dataplane::NftInterceptor::Load(config));
    return std::unique_ptr<dataplane::Interceptor>(std::move(nft));
  }
  if (method != "auto") {
    return InvalidArgument("--intercept: must be auto, bpf or nftables, not \"" + method + "\"");
  }
  auto bpf = LoadBpf(config, root);
  if (bpf.ok()) return bpf;
  bpf_error = bpf.error().message();
  auto nft = dataplane::NftInterceptor::Load(config);
  if (!nft.ok()) {
    return nft.error().WithContext("BPF interception unavailable (" + bpf_error +
                                   ") and the nftables fallback failed too");
  }
  return std::unique_ptr<dataplane::Interceptor>(std::move(*nft));
}

}  // namespace

Result<std::string> ManagedCgroupRoot(const std::string& cgroup_root, const std::string& managed) {
  if (managed.empty() || managed.find('/') != std::string::npos || managed == "." ||
      managed == "..") {
    return InvalidArgument("--managed-cgroup: \"" + managed + "\" must be one path component");
  }
  SIGIL_ASSIGN_OR_RETURN(std::string mount, dataplane::FindOrMountCgroup2(cgroup_root));
  const std::string root = mount + "/" + managed;
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) return Unavailable("managed cgroups: mkdir " + root + ": " + ec.message());
  return root;
}

Result<std::unique_ptr<Dataplane>> StartDataplane(const DataplaneFlags& flags, agent::Agent& agent,
                                                  agent::attest::Attestor& attestor, Logger& log) {
  auto mode = dataplane::ParseServiceMode(flags.default_mode);
  if (!mode.ok() ||
      (*mode != dataplane::ServiceMode::kPassthrough && *mode != dataplane::ServiceMode::kDeny)) {
    return InvalidArgument("--dataplane-default: must be passthrough or deny, not \"" +
                           flags.default_mode + "\"");
  }
  auto running = std::make_unique<Running>();
  SIGIL_ASSIGN_OR_RETURN(running->root, ManagedCgroupRoot(flags.cgroup_root, flags.managed));

  dataplane::InterceptConfig config;
  SIGIL_ASSIGN_OR_RETURN(config.redirect_v4, ParseV4("--outbound-listen", flags.outbound));
  if (!flags.outbound_v6.empty()) {
    auto d = dataplane::Destination::Parse(flags.outbound_v6);
    if (!d.ok() || d->family != AF_INET6) {
      return InvalidArgument("--outbound-listen-v6: \"" + flags.outbound_v6 +
                             "\" is not [IPv6]:port");
    }
    sockaddr_storage ss = d->ToSockaddr();
    sockaddr_in6 v6{};
    std::memcpy(&v6, &ss, sizeof v6);
    config.redirect_v6 = v6;
  }
  auto inbound = dataplane::Destination::Parse(flags.inbound);
  if (!inbound.ok()) return inbound.error().WithContext("--inbound-listen");
  config.inbound_port = inbound->port;
  config.skip_loopback = !flags.intercept_loopback;
  std::string bpf_error;
  SIGIL_ASSIGN_OR_RETURN(running->interceptor,
                         LoadInterceptor(flags.intercept, config, running->root, bpf_error));
  if (!bpf_error.empty()) {
    log.Warn("dataplane.intercept.fallback",
             {{"method", running->interceptor->method()}, {"bpf_error", bpf_error}});
  }

  running->host = std::make_unique<AgentProxyHost>(agent, attestor, *mode, log);
  running->intercept = std::make_unique<InterceptCaKeeper>(
      agent.state(), [host = running->host.get()] { return host->Policy(); }, flags.inject_ca_dir,
      log);
  dataplane::ProxyOptions options;
  options.intercept_ca = running->intercept->ca();
  options.outbound_v4 = flags.outbound;
  options.outbound_v6 = flags.outbound_v6;
  options.inbound = flags.inbound;
  options.enforce = !flags.no_enforce;
  options.pool = !flags.no_pool;
  {
    size_t loops = 0;
    const auto [end, ec] =
        std::from_chars(flags.loops.data(), flags.loops.data() + flags.loops.size(), loops);
    if (ec != std::errc() || end != flags.loops.data() + flags.loops.size() || loops > 256) {
      return InvalidArgument("--dataplane-loops: \"" + flags.loops + "\" is not 0-256");
    }
    options.loops = loops;
  }
  {
    double seconds = 0;
    const auto [end, ec] = std::from_chars(
        flags.pool_idle.data(), flags.pool_idle.data() + flags.pool_idle.size(), seconds);
    if (ec != std::errc() || end != flags.pool_idle.data() + flags.pool_idle.size() ||
        !(seconds >= 0.1 && seconds <= 86400)) {
      return InvalidArgument("--pool-idle: \"" + flags.pool_idle + "\" is not 0.1-86400 seconds");
    }
    options.pool_idle = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  }
  const uint64_t generation = agent.state().generation();
  auto revocations = agent.revocations();
  SIGIL_ASSIGN_OR_RETURN(
      running->proxy, dataplane::Proxy::Start(options, *running->host, *running->interceptor, log));
  running->WatchRevocations(agent, std::move(revocations), generation);
  // Attach last: from here on, managed workloads' connections reach the proxy.
  SIGIL_TRY(running->interceptor->Attach(running->root));
  for (const auto& dir : flags.extra_cgroups) {
    // Existing cgroups (a systemd service, a container) managed in place: the programs apply
    // to every process in them and below.
    if (auto r = running->interceptor->Attach(dir); !r.ok()) {
      return r.error().WithContext("--manage-cgroup " + dir);
    }
  }
  nlohmann::json fields = {{"method", running->interceptor->method()},
                           {"managed_cgroups", running->root},
                           {"extra_cgroups", flags.extra_cgroups},
                           {"default_mode", flags.default_mode},
                           {"intercept_loopback", flags.intercept_loopback}};
  if (!bpf_error.empty()) fields["bpf_error"] = bpf_error;
  log.Info("dataplane.intercept", fields);
  return std::unique_ptr<Dataplane>(std::move(running));
}

}  // namespace sigil::cli
