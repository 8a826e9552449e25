#include "agent/core/agent.h"

#include <unistd.h>

#include <random>

#include "agent/core/first_contact.h"
#include "core/csr.h"
#include "core/join_token.h"
#include "core/keys.h"
#include "core/rejoin_proof.h"
#include "core/x509_svid.h"

namespace sigil::agent {
namespace {

namespace pb = sigil::agent::v1;

constexpr std::chrono::milliseconds kMaintenanceInterval{1000};
constexpr size_t kMaxLoggedErrors = 3;
// Rejoin pacing after the node SVID expired: while the server cannot be reached, and after the
// server refused (in case the operator raises --node-rejoin-grace or the refusal was transient).
// Each wait gets up to 25 % jitter on top, never less.
constexpr std::chrono::seconds kRejoinRetry{30};
constexpr std::chrono::seconds kRejoinRetryRefused{300};
// Sync after a failover to an address not tried yet: a short random pause instead of the backoff
// (agents that lost the same replica do not all arrive at the same millisecond).
constexpr int64_t kFailoverJitterMs = 100;

std::string HostName() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "node";
  return host;
}

// The server could not be reached or did not answer in time: another replica may.
bool ServerUnreachable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

Result<std::vector<core::Certificate>> ChainFromDer(const std::string& der) {
  return core::ParseCertificatesDer({reinterpret_cast<const uint8_t*>(der.data()), der.size()});
}

}  // namespace

pb::AttestedProcess ToProto(const attest::AttestedProcess& p) {
  pb::AttestedProcess out;
  out.set_pid(p.pid);
  out.set_uid(p.uid);
  out.set_gid(p.gid);
  out.set_exe_path(p.exe_path);
  out.set_exe_sha256(p.exe_sha256);
  out.set_cgroup(p.cgroup);
  out.set_container_id(p.container_id);
  for (auto& s : p.Selectors()) out.add_selectors(std::move(s));
  return out;
}

std::vector<MatchedIdentity> MatchIdentities(
    const std::vector<resources::WorkloadIdentitySpec>& identities, const std::string& node,
    const core::TrustDomain& trust_domain, uint32_t uid,
    const std::vector<std::string>& selectors) {
  std::vector<MatchedIdentity> out;
  for (const auto& spec : identities) {
    auto id = spec.IdFor(node, uid, trust_domain, selectors);
    if (id) out.push_back({&spec, std::move(*id)});
  }
  return out;
}

Agent::Agent(AgentOptions options, Logger& log, NodeState node, core::TrustDomain td)
    : options_(std::move(options)),
      log_(log),
      trust_domain_(td),
      state_(std::move(td)),
      grants_(*options_.clock),
      node_(std::move(node)) {
  svids_ = std::make_unique<SvidCache>(
      [this](const std::string& spiffe_id, std::span<const uint8_t> csr,
             const pb::AttestedProcess& process) -> Result<std::vector<core::Certificate>> {
        pb::SignWorkloadSVIDRequest req;
        req.set_csr(std::string(csr.begin(), csr.end()));
        req.set_spiffe_id(spiffe_id);
        *req.mutable_process() = process;
        pb::SignWorkloadSVIDResponse resp;
        grpc::Status st = CallServer("SignWorkloadSVID", Repeat::kAlsoAfterDeadline,
                                     [&](ServerConnection& conn, std::chrono::seconds timeout) {
                                       resp.Clear();
                                       auto ctx = ServerConnection::Context(timeout);
                                       return conn.stub().SignWorkloadSVID(ctx.get(), req, &resp);
                                     });
        if (!st.ok()) return FromGrpcStatus(st, "SignWorkloadSVID " + spiffe_id);
        return ChainFromDer(resp.svid_chain());
      },
      [this](const std::string& spiffe_id, const std::vector<std::string>& audience,
             const pb::AttestedProcess& process) -> Result<std::pair<std::string, TimePoint>> {
        pb::MintJWTSVIDRequest req;
        req.set_spiffe_id(spiffe_id);
        for (const auto& a : audience) req.add_audience(a);
        *req.mutable_process() = process;
        pb::MintJWTSVIDResponse resp;
        grpc::Status st = CallServer("MintJWTSVID", Repeat::kAlsoAfterDeadline,
                                     [&](ServerConnection& conn, std::chrono::seconds timeout) {
                                       resp.Clear();
                                       auto ctx = ServerConnection::Context(timeout);
                                       return conn.stub().MintJWTSVID(ctx.get(), req, &resp);
                                     });
        if (!st.ok()) return FromGrpcStatus(st, "MintJWTSVID " + spiffe_id);
        return std::pair{resp.token(), FromUnixSeconds(resp.expires_at())};
      },
      *options_.clock);
}

Result<std::unique_ptr<Agent>> Agent::Start(AgentOptions options, Logger& log) {
  if (options.data_dir.empty()) return InvalidArgument("--data-dir is required");
  if (options.node_name.empty()) options.node_name = HostName();
  SIGIL_ASSIGN_OR_RETURN(std::optional<NodeState> stored, LoadNodeState(options.data_dir));
  NodeState node;
  size_t start_index = 0;  // the address that answered the join; else the first
  if (stored) {
    node = std::move(*stored);
    if (!options.servers.empty() && options.servers != node.servers) {
      // --server on a restart replaces the stored list (e.g. to add replicas).
      SIGIL_TRY(ValidateServerAddresses("--server", options.servers));
      log.Info("agent.server.changed", {{"from", JoinServerAddresses(node.servers)},
                                        {"to", JoinServerAddresses(options.servers)}});
      node.servers = options.servers;
      if (auto r = SaveNodeMeta(options.data_dir, node); !r.ok()) {
        return r.error().WithContext("saving the server addresses");
      }
    }
    if (!options.join_token.empty()) {
      log.Warn("agent.join_token.ignored",
               {{"reason", "the data directory already holds a node identity"},
                {"node", node.node_name}});
    }
  } else {
    if (options.join_token.empty()) {
      return FailedPrecondition("no node identity in " + options.data_dir +
                                ": the first start needs --join-token (on the server: sigil "
                                "token create --node " +
                                options.node_name + ")");
    }
    if (options.servers.empty()) return InvalidArgument("--server is required on first start");
    SIGIL_TRY(ValidateServerAddresses("--server", options.servers));
    SIGIL_ASSIGN_OR_RETURN(core::JoinToken token, core::JoinToken::Parse(options.join_token));
    SIGIL_ASSIGN_OR_RETURN(auto key, core::PrivateKey::Generate(core::KeyType::kEcP256));
    SIGIL_ASSIGN_OR_RETURN(auto csr, core::CreateCsrDer(key));
    pb::JoinRequest req;
    req.set_token(std::string(token.Text().view()));
    req.set_node_name(options.node_name);
    req.set_csr(std::string(csr.begin(), csr.end()));
    // Each address in order until one answers: a replica that cannot be reached is skipped,
    // any other answer (a refusal included) ends the search.
    std::optional<PinnedServer> pinned;
    pb::JoinResponse resp;
    std::optional<Error> unreachable;
    for (size_t i = 0; i < options.servers.size() && !pinned; ++i) {
      const std::string& address = options.servers[i];
      auto fetched = FetchPinnedRoot(address, token, options.connect_timeout);
      if (!fetched.ok()) {
        if (fetched.error().code() != ErrorCode::kUnavailable) return std::move(fetched).error();
        log.Warn("join.server.unreachable",
                 {{"server", address}, {"error", fetched.error().message()}});
        unreachable = std::move(fetched).error();
        continue;
      }
      SIGIL_ASSIGN_OR_RETURN(auto conn, ServerConnection::Open(address, fetched->trust_domain,
                                                               fetched->root.ToPem(), "", {}));
      resp.Clear();
      auto ctx = ServerConnection::Context();
      grpc::Status st = conn->stub().Join(ctx.get(), req, &resp);
      if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
        log.Warn("join.server.unreachable", {{"server", address}, {"error", st.error_message()}});
        unreachable = FromGrpcStatus(st, "join " + address);
        continue;
      }
      if (!st.ok()) return FromGrpcStatus(st, "join " + address);
      pinned = std::move(*fetched);
      start_index = i;
    }
    if (!pinned) {
      return unreachable->WithContext("join: no server answered (tried " +
                                      std::to_string(options.servers.size()) + ")");
    }
    SIGIL_ASSIGN_OR_RETURN(auto chain, ChainFromDer(resp.svid_chain()));
    SIGIL_ASSIGN_OR_RETURN(
        auto bundle, core::TrustBundle::ParseJwks(pinned->trust_domain, resp.trust_bundle_jwks()));
    core::BundleSet bundles;
    bundles.Put(std::make_shared<core::TrustBundle>(bundle));
    SIGIL_ASSIGN_OR_RETURN(auto id, core::VerifyX509Svid(chain, bundles, options.clock->Now()));
    SIGIL_ASSIGN_OR_RETURN(auto leaf_key, chain.front().PublicKeyOf());
    if (id.str() != resp.spiffe_id() || leaf_key.ToDer() != key.Public().ToDer()) {
      return Internal("join: the server returned an SVID for another identity or key");
    }
    node.servers = options.servers;
    node.node_name = options.node_name;
    node.spiffe_id = id.str();
    node.trust_domain = pinned->trust_domain.name();
    node.chain_pem = core::CertificatesToPem(chain);
    SIGIL_ASSIGN_OR_RETURN(node.key_pem, key.ToPkcs8Pem());
    node.bundle_jwks = resp.trust_bundle_jwks();
    SIGIL_TRY(SaveNodeState(options.data_dir, node));
    log.Info("agent.joined", {{"node", node.node_name},
                              {"spiffe_id", node.spiffe_id},
                              {"server", node.servers[start_index]},
                              {"expires", ToUnixSeconds(chain.front().NotAfter())}});
  }
  SIGIL_ASSIGN_OR_RETURN(auto td, core::TrustDomain::Parse(node.trust_domain));
  std::unique_ptr<Agent> agent(new Agent(std::move(options), log, std::move(node), td));
  agent->addresses_ = std::make_unique<ServerAddresses>(agent->node_.servers, start_index);
  if (!agent->node_.bundle_jwks.empty()) {
    if (auto r = agent->state_.SetBundleJwks(agent->node_.bundle_jwks); !r.ok()) {
      return r.error().WithContext(agent->options_.data_dir + "/bundle.jwks");
    }
  }
  SIGIL_ASSIGN_OR_RETURN(auto certs, core::ParseCertificatesPem(agent->node_.chain_pem));
  agent->node_not_before_ = certs.front().NotBefore();
  agent->node_not_after_ = certs.front().NotAfter();
  agent->node_issued_at_ = certs.front().NotBefore();
  SIGIL_TRY(agent->Connect());
  log.Info("agent.start", {{"node", agent->node_.node_name},
                           {"spiffe_id", agent->node_.spiffe_id},
                           {"server", agent->addresses_->Current().address},
                           {"servers", JoinServerAddresses(agent->node_.servers)},
                           {"node_svid_expires", ToUnixSeconds(agent->node_not_after_)}});
  agent->sync_thread_ = std::thread([a = agent.get()] { a->SyncLoop(); });
  agent->maintenance_thread_ = std::thread([a = agent.get()] { a->MaintenanceLoop(); });
  agent->reporter_ = std::make_unique<EventReporter>(
      [a = agent.get()](const pb::ReportEventsRequest& request) -> Result<void> {
        auto [conn, epoch] = a->link();
        if (!conn) return Unavailable("no server connection");
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        pb::ReportEventsResponse response;
        grpc::Status st = conn->stub().ReportEvents(&ctx, request, &response);
        if (st.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
          return InvalidArgument(st.error_message());
        }
        // Not repeated here: the reporter retries by itself, on the next address after this.
        if (ServerUnreachable(st)) a->FailoverFrom(epoch, "ReportEvents", st);
        if (!st.ok()) return Unavailable("ReportEvents: " + st.error_message());
        return {};
      },
      agent->log_);
  return agent;
}

Agent::~Agent() { Stop(); }

void Agent::ReportEvent(pb::AgentEvent event) {
  if (reporter_) reporter_->Report(std::move(event));
}

void Agent::Stop() {
  if (reporter_) reporter_->Stop();  // one last delivery while the connection still exists
  if (stopping_.exchange(true)) {
    if (sync_thread_.joinable()) sync_thread_.join();
    if (maintenance_thread_.joinable()) maintenance_thread_.join();
    return;
  }
  state_.Close();
  {
    std::lock_guard lock(mu_);
    if (sync_ctx_ != nullptr) sync_ctx_->TryCancel();
  }
  { std::lock_guard lock(sleep_mu_); }
  sleep_cv_.notify_all();
  if (sync_thread_.joinable()) sync_thread_.join();
  if (maintenance_thread_.joinable()) maintenance_thread_.join();
}

bool Agent::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(sleep_mu_);
  sleep_cv_.wait_for(lock, d, [this] { return stopping_.load(); });
  return !stopping_.load();
}

bool Agent::SleepForSync(std::chrono::milliseconds d, uint64_t seen) {
  std::unique_lock lock(sleep_mu_);
  sleep_cv_.wait_for(lock, d, [&] { return stopping_.load() || sync_wakes_ != seen; });
  return !stopping_.load();
}

void Agent::WakeSync() {
  {
    std::lock_guard lock(sleep_mu_);
    ++sync_wakes_;
  }
  sleep_cv_.notify_all();
}

std::string Agent::RootsPem() const {
  auto bundle = state_.bundle();
  return bundle ? bundle->X509AuthoritiesPem() : std::string();
}

Result<void> Agent::Connect() {
  std::lock_guard connect(connect_mu_);
  return ConnectLocked();
}

Result<void> Agent::ConnectLocked() {
  std::string roots = RootsPem();
  if (roots.empty()) return FailedPrecondition("no trust bundle yet (" + options_.data_dir + ")");
  NodeState copy;
  {
    std::lock_guard lock(mu_);
    copy.chain_pem = node_.chain_pem;
    copy.key_pem = SecretBytes::Copy(node_.key_pem.view());
  }
  // Stable while connect_mu_ is held: only FailoverFrom moves it, under the same lock.
  const ServerAddresses::Selection address = addresses_->Current();
  SIGIL_ASSIGN_OR_RETURN(auto conn, ServerConnection::Open(address.address, trust_domain_, roots,
                                                           copy.chain_pem, copy.key_pem));
  std::lock_guard lock(mu_);
  conn_ = std::move(conn);
  conn_epoch_ = address.epoch;
  return Ok();
}

Agent::Link Agent::link() const {
  std::lock_guard lock(mu_);
  return {conn_, conn_epoch_};
}

bool Agent::FailoverFrom(uint64_t epoch, std::string_view what, const grpc::Status& status) {
  if (stopping_.load()) return false;
  {
    std::lock_guard connect(connect_mu_);
    if (auto move = addresses_->Advance(epoch)) {
      log_.Warn("server.failover", {{"from", move->from},
                                    {"to", move->to},
                                    {"call", what},
                                    {"code", static_cast<int>(status.error_code())},
                                    {"error", status.error_message()}});
      if (auto r = ConnectLocked(); !r.ok()) {
        log_.Error("server.reconnect.fail", {{"error", r.error().message()}});
      }
      // A replica that stopped answering (frozen, or a network that drops its packets) keeps a
      // Sync stream open until the keepalive gives up (~40 s): move it now. After UNAVAILABLE
      // the stream is left alone: a dead server ends it anyway, and one whose store failed
      // may still be delivering changes.
      std::lock_guard lock(mu_);
      if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && sync_ctx_ != nullptr &&
          sync_epoch_ != conn_epoch_) {
        sync_ctx_->TryCancel();
      }
    }
  }
  return link().epoch != epoch;
}

grpc::Status Agent::CallServer(
    std::string_view what, Repeat repeat,
    const std::function<grpc::Status(ServerConnection&, std::chrono::seconds)>& call) {
  auto [conn, epoch] = link();
  if (!conn) return {grpc::StatusCode::UNAVAILABLE, "no server connection"};
  const bool short_attempts = repeat == Repeat::kAlsoAfterDeadline && addresses_->size() > 1;
  const std::chrono::seconds timeout = short_attempts ? kReplicaAttemptTimeout : kServerCallTimeout;
  grpc::Status st = call(*conn, timeout);
  if (!ServerUnreachable(st)) return st;
  // After a deadline, only a short attempt is repeated: a full one already took the caller's
  // time.
  const bool again = st.error_code() == grpc::StatusCode::UNAVAILABLE ||
                     (short_attempts && st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  if (!FailoverFrom(epoch, what, st) || !again) return st;
  const Link next = link();
  st = call(*next.conn, timeout);  // once, on the next address
  if (ServerUnreachable(st)) FailoverFrom(next.epoch, what, st);
  return st;
}

void Agent::SyncLoop() {
  std::mt19937_64 rng(std::random_device{}());
  std::chrono::milliseconds backoff{500};
  while (!stopping_.load()) {
    uint64_t wakes = 0;
    {
      std::lock_guard lock(sleep_mu_);
      wakes = sync_wakes_;
    }
    auto [conn, epoch] = link();
    grpc::ClientContext ctx;
    {
      std::lock_guard lock(mu_);
      sync_ctx_ = &ctx;
      sync_epoch_ = epoch;
    }
    if (stopping_.load()) ctx.TryCancel();
    pb::SyncRequest req;
    req.set_from_revision(state_.has_snapshot() ? state_.revision() : 0);
    auto reader = conn->stub().Sync(&ctx, req);
    pb::SyncResponse msg;
    while (reader->Read(&msg)) {
      const std::string old_jwks = state_.bundle_jwks();
      const auto old_revocations = state_.revocations();
      if (auto r = state_.Apply(msg); !r.ok()) {
        log_.Error("sync.apply.fail", {{"error", r.error().message()}});
        ctx.TryCancel();
        break;
      }
      grants_.OnSync(msg);  // a changed binding or source: its grants are fetched again
      if (auto revoked = state_.revocations(); revoked != old_revocations) {
        ApplyRevocations(*revoked);
      }
      {
        std::lock_guard lock(mu_);
        if (!synced_) {
          log_.Info("sync.connected", {{"revision", msg.revision()}, {"server", conn->address()}});
          addresses_->Succeeded();
        }
        synced_ = true;
        last_error_.clear();
      }
      backoff = std::chrono::milliseconds(500);
      if (!msg.trust_bundle_jwks().empty() && msg.trust_bundle_jwks() != old_jwks) {
        if (auto r = SaveBundle(options_.data_dir, msg.trust_bundle_jwks()); !r.ok()) {
          log_.Error("bundle.save.fail", {{"error", r.error().message()}});
        }
        // New roots for the calls that follow (the open stream keeps its channel).
        if (auto r = Connect(); !r.ok()) {
          log_.Error("server.reconnect.fail", {{"error", r.error().message()}});
        }
        log_.Info("bundle.update",
                  {{"sequence", state_.bundle() ? state_.bundle()->sequence() : 0}});
      }
    }
    grpc::Status st = reader->Finish();
    {
      std::lock_guard lock(mu_);
      sync_ctx_ = nullptr;
      if (synced_ || !st.ok()) last_error_ = st.error_message();
      synced_ = false;
    }
    if (stopping_.load()) break;
    // The server is unreachable (or went away): the next address, at once unless every address
    // was tried since the last success.
    bool prompt = false;
    if (ServerUnreachable(st)) {
      prompt = FailoverFrom(epoch, "Sync", st) && !addresses_->RoundComplete();
    } else if (st.error_code() == grpc::StatusCode::CANCELLED && link().epoch != epoch) {
      prompt = !addresses_->RoundComplete();  // a unary call failed over and cancelled it
    }
    std::uniform_int_distribution<int64_t> jitter(prompt ? 0 : backoff.count() / 2,
                                                  prompt ? kFailoverJitterMs : backoff.count());
    const std::chrono::milliseconds delay(jitter(rng));
    nlohmann::json fields = {{"code", static_cast<int>(st.error_code())},
                             {"error", st.error_message()},
                             {"server", conn->address()},
                             {"retry_ms", delay.count()}};
    if (st.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      std::lock_guard lock(mu_);
      fields["node_svid_expires"] = ToUnixSeconds(node_not_after_);
    }
    if (st.error_code() == grpc::StatusCode::PERMISSION_DENIED &&
        st.error_message().find("is revoked") != std::string::npos) {
      MarkNodeRevoked(st.error_message());
    }
    log_.Warn("sync.disconnected", fields);
    // Jitter: sleep between 50% and 100% of the backoff, then double it up to the cap. A
    // rejoin (new node SVID) ends the wait and the backoff at once. A failover to an address not
    // tried yet waits only the small jitter and keeps the backoff.
    if (!SleepForSync(delay, wakes)) break;
    if (prompt) continue;
    bool woken = false;
    {
      std::lock_guard lock(sleep_mu_);
      woken = sync_wakes_ != wakes;
    }
    backoff = woken ? std::chrono::milliseconds(500) : std::min(backoff * 2, options_.max_backoff);
  }
}

void Agent::ApplyRevocations(const core::RevocationSet& revoked) {
  const size_t svids = svids_->DropRevoked(revoked);
  const size_t grants = grants_.DropIf([&](const std::string& binding, const std::string& id) {
    return revoked.FindBinding(binding) != nullptr || revoked.FindIdentity(id) != nullptr;
  });
  log_.Info(
      "revocation.update",
      {{"revocations", revoked.size()}, {"svids_dropped", svids}, {"grants_dropped", grants}});
  if (const auto* e = revoked.FindNode(node_.node_name)) {
    MarkNodeRevoked(core::RevocationSet::Describe(*e));
  }
  state_.Touch();  // Workload API streams send the SVIDs that remain
}

void Agent::MarkNodeRevoked(const std::string& why) {
  if (node_revoked_.exchange(true)) return;
  svids_->Clear();
  grants_.Clear();
  log_.Error("node.revoked",
             {{"node", node_.node_name},
              {"why", why},
              {"fix",
               "the server revoked this node: it serves no SVID or credential any more. Find out "
               "why (`sigil audit --type revoke.node`); to bring the machine back, join it under a "
               "new node name with a new token (`sigil token create --node NEW-NAME`) after "
               "removing " +
                   options_.data_dir + "/node.json"}});
  state_.Touch();
}

Result<void> Agent::CheckNotRevoked() const {
  if (node_revoked_.load()) {
    return PermissionDenied("this node (" + node_.node_name + ") is revoked by the server");
  }
  return Ok();
}

Result<void> Agent::CheckSynced() const {
  if (!state_.has_snapshot()) {
    return Unavailable("the agent has not synced with the server since it started; retry");
  }
  return Ok();
}

void Agent::RenewNodeSvidIfDue() {
  TimePoint issued_at, not_after;
  {
    std::lock_guard lock(mu_);
    issued_at = node_issued_at_;
    not_after = node_not_after_;
  }
  const TimePoint now = options_.clock->Now();
  if (now >= not_after) {
    RejoinIfDue(not_after);
    return;
  }
  // Half-life counted from when the SVID arrived: the CA backdates notBefore (10 s), which with
  // a short --node-svid-ttl would renew on every tick.
  if (now < issued_at + (not_after - issued_at) / 2) return;
  auto key = core::PrivateKey::Generate(core::KeyType::kEcP256);
  if (!key.ok()) return;
  auto csr = core::CreateCsrDer(*key);
  if (!csr.ok()) return;
  pb::RenewNodeSVIDRequest req;
  req.set_csr(std::string(csr->begin(), csr->end()));
  pb::NodeSVIDResponse resp;
  // Not repeated after a deadline: a renewal the silent replica still commits later would make
  // the node's recorded serial one this agent never received (which a rejoin must prove).
  grpc::Status st = CallServer("RenewNodeSVID", Repeat::kAfterUnavailable,
                               [&](ServerConnection& conn, std::chrono::seconds timeout) {
                                 resp.Clear();
                                 auto ctx = ServerConnection::Context(timeout);
                                 return conn.stub().RenewNodeSVID(ctx.get(), req, &resp);
                               });
  if (!st.ok()) {
    log_.Warn("node.renew.fail",
              {{"error", st.error_message()}, {"expires", ToUnixSeconds(not_after)}});
    return;
  }
  auto leaf = InstallNodeSvid(resp.svid_chain(), *key);
  if (!leaf.ok()) {
    log_.Error("node.renew.fail", {{"error", leaf.error().message()}});
    return;
  }
  log_.Info("node.renew",
            {{"serial", leaf->SerialHex()}, {"expires", ToUnixSeconds(leaf->NotAfter())}});
}

Result<core::Certificate> Agent::InstallNodeSvid(const std::string& chain_der,
                                                 const core::PrivateKey& key) {
  auto chain = ChainFromDer(chain_der);
  if (!chain.ok() || chain->empty()) return Internal("unreadable SVID from the server");
  const core::Certificate leaf = chain->front();
  auto leaf_key = leaf.PublicKeyOf();
  if (!leaf_key.ok() || leaf_key->ToDer() != key.Public().ToDer()) {
    return Internal("the server returned an SVID for another key");
  }
  auto id = core::SpiffeIdFromCertificate(leaf);
  if (!id.ok() || id->str() != node_.spiffe_id) {
    return Internal("the server returned an SVID for another identity");
  }
  SIGIL_ASSIGN_OR_RETURN(SecretBytes key_pem, key.ToPkcs8Pem());
  const std::string chain_pem = core::CertificatesToPem(*chain);
  if (auto r = SaveNodeCredential(options_.data_dir, chain_pem, key_pem); !r.ok()) {
    return r.error().WithContext("saving the node SVID");
  }
  {
    std::lock_guard lock(mu_);
    node_.chain_pem = chain_pem;
    node_.key_pem = std::move(key_pem);
    node_not_before_ = leaf.NotBefore();
    node_not_after_ = leaf.NotAfter();
    node_issued_at_ = std::max(leaf.NotBefore(), options_.clock->Now());
    expiry_reported_ = false;
  }
  if (auto r = Connect(); !r.ok()) {
    log_.Error("server.reconnect.fail", {{"error", r.error().message()}});
  }
  return leaf;
}

void Agent::RejoinIfDue(TimePoint not_after) {
  if (node_revoked_.load()) return;  // the server refuses a revoked node; node.revoked said so
  const auto steady_now = std::chrono::steady_clock::now();
  if (next_rejoin_ && steady_now < *next_rejoin_) return;
  const TimePoint now = options_.clock->Now();
  auto leaf = Rejoin();
  if (leaf.ok()) {
    next_rejoin_.reset();
    log_.Info("node.rejoin",
              {{"node", node_.node_name},
               {"serial", leaf->SerialHex()},
               {"expires", ToUnixSeconds(leaf->NotAfter())},
               {"expired_for_s", std::chrono::duration_cast<Seconds>(now - not_after).count()}});
    WakeSync();      // a Sync loop waiting in its backoff reconnects now, with the new SVID
    state_.Touch();  // Workload API streams re-read their SVIDs (renewed by the maintenance loop)
    return;
  }
  const ErrorCode code = leaf.error().code();
  // PermissionDenied: the server refused (it does not say why). Unimplemented: a server
  // without Rejoin. Both need the operator unless they change the server.
  const bool refused = code == ErrorCode::kPermissionDenied || code == ErrorCode::kUnimplemented;
  const std::chrono::seconds base = refused ? kRejoinRetryRefused : kRejoinRetry;
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<int64_t> jitter(0, base.count() * 1000 / 4);
  next_rejoin_ = steady_now + base + std::chrono::milliseconds(jitter(rng));
  if (!refused) {
    log_.Warn("node.rejoin.fail", {{"error", leaf.error().message()},
                                   {"expired", ToUnixSeconds(not_after)},
                                   {"retry_s", base.count()}});
    return;
  }
  std::lock_guard lock(mu_);
  if (expiry_reported_) return;
  expiry_reported_ = true;
  log_.Error("node.svid.expired",
             {{"node", node_.node_name},
              {"expired", ToUnixSeconds(not_after)},
              {"rejoin",
               code == ErrorCode::kUnimplemented
                   ? "the server does not support rejoin (upgrade it)"
                   : "the server refused to rejoin (expired longer than its --node-rejoin-grace, "
                     "revoked, or superseded); its audit trail has the reason (sigil audit --type "
                     "node.rejoin.denied)"},
              {"fix",
               "the server no longer accepts this node's SVID; on the server run "
               "`sigil token create --node " +
                   node_.node_name +
                   "`, then restart this agent with --join-token "
                   "TOKEN after removing " +
                   options_.data_dir + "/node.json"},
              {"meanwhile",
               "serving cached SVIDs until they expire; asking the server to rejoin again "
               "every 5 minutes"}});
}

Result<core::Certificate> Agent::Rejoin() {
  auto [conn, epoch] = link();
  auto rejoined = RejoinAt(conn->address());
  if (rejoined.ok()) return rejoined;
  const ErrorCode code = rejoined.error().code();
  if (code != ErrorCode::kUnavailable && code != ErrorCode::kDeadlineExceeded) return rejoined;
  const grpc::Status status(code == ErrorCode::kUnavailable ? grpc::StatusCode::UNAVAILABLE
                                                            : grpc::StatusCode::DEADLINE_EXCEEDED,
                            rejoined.error().message());
  if (!FailoverFrom(epoch, "Rejoin", status) || code != ErrorCode::kUnavailable) return rejoined;
  const Link next = link();
  rejoined = RejoinAt(next.conn->address());  // once, on the next address
  if (!rejoined.ok() && rejoined.error().code() == ErrorCode::kUnavailable) {
    FailoverFrom(next.epoch, "Rejoin",
                 grpc::Status(grpc::StatusCode::UNAVAILABLE, rejoined.error().message()));
  }
  return rejoined;
}

Result<core::Certificate> Agent::RejoinAt(const std::string& server) {
  std::string chain_pem;
  SecretBytes key_pem;
  {
    std::lock_guard lock(mu_);
    chain_pem = node_.chain_pem;
    key_pem = SecretBytes::Copy(node_.key_pem.view());
  }
  SIGIL_ASSIGN_OR_RETURN(auto chain, core::ParseCertificatesPem(chain_pem));
  if (chain.empty()) return Internal("rejoin: no node SVID in " + options_.data_dir);
  SIGIL_ASSIGN_OR_RETURN(auto old_key, core::PrivateKey::FromPem(key_pem.view()));
  SIGIL_ASSIGN_OR_RETURN(auto key, core::PrivateKey::Generate(core::KeyType::kEcP256));
  SIGIL_ASSIGN_OR_RETURN(auto csr, core::CreateCsrDer(key));
  const int64_t timestamp = ToUnixSeconds(options_.clock->Now());
  const std::string message = core::RejoinMessage(trust_domain_, node_.node_name,
                                                  chain.front().SerialHex(), csr, timestamp);
  SIGIL_ASSIGN_OR_RETURN(auto signature, core::SignRejoin(old_key, message));
  // Server-authenticated TLS without a client certificate: the expired one would fail the
  // handshake.
  SIGIL_ASSIGN_OR_RETURN(auto conn,
                         ServerConnection::Open(server, trust_domain_, RootsPem(), "", {}));
  pb::RejoinRequest req;
  req.set_node_name(node_.node_name);
  std::vector<uint8_t> chain_der = core::CertificatesToDer(chain);
  req.set_expired_chain(std::string(chain_der.begin(), chain_der.end()));
  req.set_csr(std::string(csr.begin(), csr.end()));
  req.set_timestamp(timestamp);
  req.set_signature(std::string(signature.begin(), signature.end()));
  pb::NodeSVIDResponse resp;
  auto ctx = ServerConnection::Context();
  grpc::Status st = conn->stub().Rejoin(ctx.get(), req, &resp);
  if (!st.ok()) return FromGrpcStatus(st, "rejoin " + server);
  return InstallNodeSvid(resp.svid_chain(), key);
}

void Agent::MaintenanceLoop() {
  while (SleepFor(kMaintenanceInterval)) {
    RenewNodeSvidIfDue();
    grants_.Sweep();  // expired credential grants: secrets freed (wiped) now, not on next use
    std::vector<Error> errors;
    auto identities = state_.identities();
    size_t changed = svids_->Maintain(*identities, &errors);
    if (changed > 0) state_.Touch();
    for (size_t i = 0; i < errors.size() && i < kMaxLoggedErrors; ++i) {
      log_.Warn("svid.renew.fail", {{"error", errors[i].message()}});
    }
  }
}

AgentHealth Agent::Health() const {
  AgentHealth h;
  std::lock_guard lock(mu_);
  h.synced = synced_;
  h.revision = state_.revision();
  h.node_spiffe_id = node_.spiffe_id;
  h.node_svid_expiry = node_not_after_;
  h.svids_held = svids_->size();
  h.resources = state_.resource_count();
  h.last_error = last_error_;
  if (conn_) h.server = conn_->address();
  h.server_failovers = addresses_->failovers();
  return h;
}

Result<std::vector<workloadapi::X509SvidGrant>> Agent::X509Svids(
    const attest::AttestedProcess& process) {
  SIGIL_TRY(CheckNotRevoked());
  SIGIL_TRY(CheckSynced());
  auto identities = state_.identities();
  auto matches = MatchIdentities(*identities, node_.node_name, trust_domain_, process.uid,
                                 process.Selectors());
  if (matches.empty()) {
    return PermissionDenied("no WorkloadIdentity matches pid " + std::to_string(process.pid) +
                            " (uid " + std::to_string(process.uid) + ", " + process.exe_path + ")");
  }
  auto revoked = state_.revocations();
  std::string revoked_why;
  std::erase_if(matches, [&](const MatchedIdentity& m) {
    const auto* e = revoked->FindIdentity(m.id.str());
    if (e != nullptr) revoked_why = core::RevocationSet::Describe(*e);
    return e != nullptr;
  });
  if (matches.empty()) return PermissionDenied(revoked_why);
  pb::AttestedProcess proto = ToProto(process);
  std::vector<workloadapi::X509SvidGrant> out;
  for (const auto& m : matches) {
    SIGIL_ASSIGN_OR_RETURN(auto held, svids_->Get(*m.spec, m.id, proto));
    if (revoked->FindSerial(held->serial) != nullptr) {
      // Revoked by serial, and the Sync thread has not dropped it yet: drop it now and issue.
      svids_->DropRevoked(*revoked);
      SIGIL_ASSIGN_OR_RETURN(held, svids_->Get(*m.spec, m.id, proto));
    }
    workloadapi::X509SvidGrant g;
    g.spiffe_id = held->id.str();
    g.hint = held->identity_name;
    g.chain = held->chain;
    SIGIL_ASSIGN_OR_RETURN(g.key_pkcs8_der, held->key->ExportPkcs8Der());
    g.expires_at = held->not_after;
    out.push_back(std::move(g));
  }
  return out;
}

Result<std::vector<workloadapi::JwtSvidGrant>> Agent::JwtSvids(
    const attest::AttestedProcess& process, const std::vector<std::string>& audience,
    const std::string& spiffe_id) {
  if (audience.empty()) return InvalidArgument("a JWT-SVID needs at least one audience");
  SIGIL_TRY(CheckNotRevoked());
  SIGIL_TRY(CheckSynced());
  auto revoked = state_.revocations();
  auto identities = state_.identities();
  auto matches = MatchIdentities(*identities, node_.node_name, trust_domain_, process.uid,
                                 process.Selectors());
  pb::AttestedProcess proto = ToProto(process);
  std::vector<workloadapi::JwtSvidGrant> out;
  for (const auto& m : matches) {
    if (!spiffe_id.empty() && m.id.str() != spiffe_id) continue;
    if (revoked->FindIdentity(m.id.str()) != nullptr) continue;
    SIGIL_ASSIGN_OR_RETURN(auto jwt, svids_->GetJwt(m.id, audience, proto));
    out.push_back({m.id.str(), m.spec->name, std::move(jwt.token), jwt.expires_at});
  }
  if (out.empty()) {
    return PermissionDenied(
        spiffe_id.empty() ? "no WorkloadIdentity matches pid " + std::to_string(process.pid)
                          : "pid " + std::to_string(process.pid) + " does not hold " + spiffe_id);
  }
  return out;
}

Result<std::vector<workloadapi::IdentityExplanation>> Agent::Explain(
    const attest::AttestedProcess& process) {
  SIGIL_TRY(CheckSynced());
  auto identities = state_.identities();
  auto matches = MatchIdentities(*identities, node_.node_name, trust_domain_, process.uid,
                                 process.Selectors());
  std::vector<workloadapi::IdentityExplanation> out;
  for (const auto& m : matches) out.push_back({m.id.str(), m.spec->name, m.spec->selectors});
  return out;
}

core::BundleSet Agent::Bundles() {
  core::BundleSet set;
  if (auto b = state_.bundle()) set.Put(b);
  return set;
}

}  // namespace sigil::agent
