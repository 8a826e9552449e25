#include "server/agent_api.h"

#include <openssl/crypto.h>

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <algorithm>
#include <array>

#include "core/certificate.h"
#include "core/x509_svid.h"
#include "server/revocations.h"

namespace sigil::server {
namespace {

namespace pb = sigil::agent::v1;

constexpr std::array<std::string_view, 5> kSyncedKinds = {
    "WorkloadIdentity", "Service", "CredentialBinding", "AccessPolicy", kRevocationKind};
constexpr std::string_view kNodePathPrefix = "/sigil/node/";
constexpr int kMaxRequestBytes = 256 * 1024;  // CSRs and tokens are a few KiB
constexpr int kSnapshotAttempts = 5;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string DerString(std::span<const core::Certificate> chain) {
  std::vector<uint8_t> der = core::CertificatesToDer(chain);
  return {der.begin(), der.end()};
}

std::string StringOf(const grpc::string_ref& ref) { return {ref.data(), ref.size()}; }

AttestedProcessInfo ProcessOf(const pb::AttestedProcess& p) {
  AttestedProcessInfo out;
  out.pid = p.pid();
  out.uid = p.uid();
  out.gid = p.gid();
  out.exe_path = p.exe_path();
  out.exe_sha256 = p.exe_sha256();
  out.cgroup = p.cgroup();
  out.container_id = p.container_id();
  out.selectors.assign(p.selectors().begin(), p.selectors().end());
  return out;
}

}  // namespace

AgentApi::AgentApi(ControlPlane& control_plane)
    : cp_(control_plane),
      feed_(
          control_plane.store(), [&control_plane] { return control_plane.Bundle().sequence(); },
          kDefaultFeedWindow,
          [&control_plane](const std::vector<store::Change>& changes) {
            // Another replica rotated the CA or recorded an issuance bound: take its set before
            // the streams wake, so they see the new bundle with the revision that carried it.
            for (const store::Change& c : changes) {
              if (c.kind == kCaStateKind &&
                  c.resource_version > control_plane.authorities_version()) {
                (void)
                    control_plane.RefreshAuthorities();  // on failure the maintenance tick retries
                break;
              }
            }
          }) {
  (void)feed_.Start();  // on failure streams fall back to reading the store
}

AgentApi::~AgentApi() { feed_.Stop(); }

void AgentApi::Shutdown() {
  shutting_down_.store(true);
  feed_.Stop();  // wakes every waiting stream
}

grpc::Status ToGrpcStatus(const Error& error) {
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (error.code()) {
    case ErrorCode::kInvalidArgument:
      code = grpc::StatusCode::INVALID_ARGUMENT;
      break;
    case ErrorCode::kNotFound:
      code = grpc::StatusCode::NOT_FOUND;
      break;
    case ErrorCode::kAlreadyExists:
      code = grpc::StatusCode::ALREADY_EXISTS;
      break;
    case ErrorCode::kPermissionDenied:
      code = grpc::StatusCode::PERMISSION_DENIED;
      break;
    case ErrorCode::kUnauthenticated:
      code = grpc::StatusCode::UNAUTHENTICATED;
      break;
    case ErrorCode::kFailedPrecondition:
      code = grpc::StatusCode::FAILED_PRECONDITION;
      break;
    case ErrorCode::kResourceExhausted:
      code = grpc::StatusCode::RESOURCE_EXHAUSTED;
      break;
    case ErrorCode::kUnavailable:
      code = grpc::StatusCode::UNAVAILABLE;
      break;
    case ErrorCode::kDeadlineExceeded:
      code = grpc::StatusCode::DEADLINE_EXCEEDED;
      break;
    case ErrorCode::kAborted:
      code = grpc::StatusCode::ABORTED;
      break;
    case ErrorCode::kUnimplemented:
      code = grpc::StatusCode::UNIMPLEMENTED;
      break;
    case ErrorCode::kInternal:
      code = grpc::StatusCode::INTERNAL;
      break;
  }
  return {code, error.message()};
}

bool KindSyncedToAgents(std::string_view kind) {
  return std::find(kSyncedKinds.begin(), kSyncedKinds.end(), kind) != kSyncedKinds.end();
}

Result<AgentApi::VerifiedPeer> AgentApi::VerifyPeer(
    const std::string& leaf_pem, const std::string& chain_pem,
    const std::shared_ptr<const core::TrustBundle>& bundle, TimePoint now,
    const std::string& cache_key) {
  auto leaf = core::ParseCertificatesPem(leaf_pem);
  if (!leaf.ok() || leaf->size() != 1) {
    return Unauthenticated("client certificate could not be parsed");
  }
  // Leaf first, then the intermediates the peer sent (gRPC's chain property may hold the
  // leaf and roots too, in any order: roots come from our bundle, never from the peer).
  std::vector<core::Certificate> chain = std::move(leaf).value();
  if (!chain_pem.empty()) {
    auto sent = core::ParseCertificatesPem(chain_pem);
    if (!sent.ok()) return Unauthenticated("client certificate chain could not be parsed");
    for (auto& cert : *sent) {
      if (cert.IsCa() && !cert.IsSelfSigned()) chain.push_back(std::move(cert));
    }
  }
  core::BundleSet bundles;
  bundles.Put(bundle);
  auto id = core::VerifyX509Svid(chain, bundles, now);
  if (!id.ok()) {
    return Unauthenticated("client certificate is not a valid SVID of this trust domain: " +
                           id.error().message());
  }
  TimePoint not_after = chain.front().NotAfter();
  for (const auto& c : chain) not_after = std::min(not_after, c.NotAfter());
  VerifiedPeer peer{*id, bundle, not_after, chain.front().SerialHex()};
  std::lock_guard lock(peer_cache_mu_);
  if (peer_cache_.size() >= kPeerCacheEntries) peer_cache_.clear();
  peer_cache_.insert_or_assign(cache_key, peer);
  return peer;
}

Result<store::NodeRecord> AgentApi::AuthenticateNode(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  std::string leaf_pem;
  std::string chain_pem;
  if (auth) {
    for (const auto& v : auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME)) {
      leaf_pem += StringOf(v);
    }
    for (const auto& v : auth->FindPropertyValues(GRPC_X509_PEM_CERT_CHAIN_PROPERTY_NAME)) {
      chain_pem += StringOf(v);
    }
  }
  if (leaf_pem.empty()) return Unauthenticated("a node SVID client certificate is required");
  // Verified peers are cached by their exact certificate chain text and the bundle they were
  // verified against, until the leaf expires: parsing and path validation dominated the cost
  // of every call. The node record (revocation) is still read on every call below.
  std::shared_ptr<const core::TrustBundle> bundle = cp_.BundlePtr();
  const TimePoint now = cp_.clock().Now();
  const std::string cache_key = leaf_pem + "\n" + chain_pem;
  std::optional<VerifiedPeer> cached;
  {
    std::lock_guard lock(peer_cache_mu_);
    auto it = peer_cache_.find(cache_key);
    if (it != peer_cache_.end() && it->second.bundle == bundle && now < it->second.not_after) {
      cached = it->second;
    }
  }
  Result<VerifiedPeer> peer = cached ? Result<VerifiedPeer>(std::move(*cached))
                                     : VerifyPeer(leaf_pem, chain_pem, bundle, now, cache_key);
  if (!peer.ok()) return std::move(peer).error();
  const core::SpiffeId* id = &peer->id;
  const std::string& path = id->path();
  std::string name;
  if (id->trust_domain() == cp_.trust_domain() && path.starts_with(kNodePathPrefix)) {
    name = path.substr(kNodePathPrefix.size());
  }
  if (name.empty() || name.find('/') != std::string::npos) {
    return PermissionDenied("caller " + id->str() + " is not a node");
  }
  auto node = cp_.store().GetNode(name);
  if (!node.ok()) {
    if (node.error().code() == ErrorCode::kNotFound) {
      return PermissionDenied("node \"" + name + "\" is not registered");
    }
    return std::move(node).error();
  }
  if (node->revoked) return PermissionDenied("node \"" + name + "\" is revoked");
  if (node->spiffe_id != id->str()) {
    return PermissionDenied("node \"" + name + "\" is registered under another SPIFFE ID");
  }
  // `sigil revoke svid SERIAL` of this very node SVID (cached per store revision).
  SIGIL_ASSIGN_OR_RETURN(RevocationIndex::SnapshotPtr revoked, cp_.Revocations());
  if (const Revocation* r = revoked->BySerial(peer->serial); r != nullptr) {
    return PermissionDenied("node SVID " + peer->serial + " of node \"" + name + "\" is revoked (" +
                            r->reason + ")");
  }
  if (now - node->last_seen >= kNodeLastSeenInterval) {
    // Best effort, and only the last_seen column: it cannot undo a concurrent revocation.
    if (cp_.store().TouchNode(name, now).ok()) node->last_seen = now;
  }
  return node;
}

grpc::Status AgentApi::Join(grpc::ServerContext* context, const pb::JoinRequest* request,
                            pb::JoinResponse* response) {
  auto joined =
      cp_.JoinNode(request->token(), request->node_name(), Bytes(request->csr()), context->peer());
  if (!joined.ok()) {
    if (joined.error().code() == ErrorCode::kPermissionDenied ||
        joined.error().code() == ErrorCode::kUnauthenticated) {
      // Never say which check failed (the control plane audits the reason).
      return {grpc::StatusCode::PERMISSION_DENIED,
              "join refused: token is invalid, expired or already used"};
    }
    return ToGrpcStatus(joined.error());
  }
  response->set_spiffe_id(joined->spiffe_id);
  response->set_svid_chain(DerString(joined->svid.chain));
  response->set_trust_bundle_jwks(joined->bundle_jwks);
  return grpc::Status::OK;
}

grpc::Status AgentApi::RenewNodeSVID(grpc::ServerContext* context,
                                     const pb::RenewNodeSVIDRequest* request,
                                     pb::NodeSVIDResponse* response) {
  auto node = AuthenticateNode(*context);
  if (!node.ok()) return ToGrpcStatus(node.error());
  auto svid = cp_.RenewNodeSvid(node->name, Bytes(request->csr()));
  if (!svid.ok()) return ToGrpcStatus(svid.error());
  response->set_svid_chain(DerString(svid->chain));
  response->set_expires_at(ToUnixSeconds(svid->leaf.NotAfter()));
  return grpc::Status::OK;
}

Result<uint64_t> AgentApi::SendSnapshot(grpc::ServerWriter<pb::SyncResponse>* writer,
                                        const std::string& bundle_jwks) {
  // Streams starting while the store stays at one revision share one snapshot, built once (one
  // build at a time; the streams waiting for it reuse it): N agents reconnecting cost one read of
  // every resource instead of N (docs/benchmarks.md, "Control plane at scale").
  std::unique_lock cache_lock(snapshot_mu_);
  SIGIL_ASSIGN_OR_RETURN(const uint64_t current, cp_.store().CurrentRevision());
  std::shared_ptr<const pb::SyncResponse> cached = snapshot_;
  if (cached == nullptr || cached->revision() != current ||
      cached->trust_bundle_jwks() != bundle_jwks) {
    cached = nullptr;
  }
  if (cached != nullptr) {
    cache_lock.unlock();
    if (!writer->Write(*cached)) return Unavailable("sync stream closed");
    return cached->revision();
  }
  // List() is consistent per kind; retry until every kind was read at the same revision. If
  // writers keep interleaving, use the oldest revision: the deltas that follow then replay a
  // few changes the snapshot already holds, which agents apply idempotently (same version).
  std::vector<store::ResourceList> lists;
  uint64_t revision = 0;
  bool consistent = false;
  for (int attempt = 0; attempt < kSnapshotAttempts && !consistent; ++attempt) {
    lists.clear();
    for (std::string_view kind : kSyncedKinds) {
      SIGIL_ASSIGN_OR_RETURN(auto list, cp_.store().List(std::string(kind)));
      lists.push_back(std::move(list));
    }
    auto [lo, hi] =
        std::minmax_element(lists.begin(), lists.end(),
                            [](const auto& a, const auto& b) { return a.revision < b.revision; });
    revision = lo->revision;
    consistent = lo->revision == hi->revision;
  }
  auto snapshot = std::make_shared<pb::SyncResponse>();
  snapshot->set_revision(revision);
  snapshot->set_snapshot(true);
  snapshot->set_trust_bundle_jwks(bundle_jwks);
  for (const auto& list : lists) {
    for (const auto& item : list.items) {
      pb::Resource* r = snapshot->add_upserts();
      r->set_kind(item.kind);
      r->set_name(item.name);
      r->set_resource_version(item.resource_version);
      r->set_spec_json(item.spec_json);
    }
  }
  lists.clear();
  if (consistent) snapshot_ = snapshot;  // only a snapshot that is exactly its revision
  cache_lock.unlock();
  if (!writer->Write(*snapshot)) return Unavailable("sync stream closed");
  return revision;
}

grpc::Status AgentApi::Sync(grpc::ServerContext* context, const pb::SyncRequest* request,
                            grpc::ServerWriter<pb::SyncResponse>* writer) {
  auto node = AuthenticateNode(*context);
  if (!node.ok()) return ToGrpcStatus(node.error());
  // Open streams = connected agents, exported as sigil_agents_connected.
  struct StreamCount {
    AgentApi& api;
    explicit StreamCount(AgentApi& a) : api(a) { Publish(++api.sync_streams_); }
    ~StreamCount() { Publish(--api.sync_streams_); }
    void Publish(int64_t n) {
      if (api.metrics_ != nullptr) api.metrics_->agents_connected.Set(static_cast<double>(n));
    }
  } stream_count(*this);
  store::Store& store = cp_.store();
  std::string jwks = cp_.Bundle().ToJwks();
  uint64_t revision = request->from_revision();
  bool need_snapshot = revision == 0;
  if (!need_snapshot) {
    // Older than the compaction horizon, or newer than this store: start over.
    auto probe = store.ChangesSince(revision, 1);
    if (!probe.ok()) {
      if (probe.error().code() != ErrorCode::kFailedPrecondition) {
        return ToGrpcStatus(probe.error());
      }
      need_snapshot = true;
    } else {
      // A resumed stream gets the current bundle first.
      pb::SyncResponse hello;
      hello.set_revision(revision);
      hello.set_trust_bundle_jwks(jwks);
      if (!writer->Write(hello)) return grpc::Status::CANCELLED;
    }
  }
  uint64_t bundle_sequence = cp_.Bundle().sequence();
  // The Revocation of this node: once it passes through the change loop below, the stream
  // ends with PERMISSION_DENIED (after the delta that carries it).
  const std::string own_revocation = RevocationName(RevocationKind::kNode, node->name);
  std::optional<std::string> revoked_reason;
  while (!context->IsCancelled() && !shutting_down_.load()) {
    if (need_snapshot) {
      auto rev = SendSnapshot(writer, jwks);
      if (!rev.ok()) return ToGrpcStatus(rev.error());
      revision = *rev;
      need_snapshot = false;
    }
    // Wait for a commit past `revision` or a bundle change: on the shared feed when it runs,
    // else on the store.
    uint64_t current = revision;
    uint64_t sequence = bundle_sequence;
    if (feed_.running()) {
      ChangeFeed::Position pos = feed_.Wait({revision, bundle_sequence}, kSyncPollInterval);
      current = pos.revision;
      sequence = pos.bundle_sequence;
    } else {
      auto waited = store.WaitForChange(revision, kSyncPollInterval);
      if (!waited.ok()) return ToGrpcStatus(waited.error());
      current = *waited;
      sequence = cp_.Bundle().sequence();
    }
    pb::SyncResponse delta;
    bool more = current > revision;
    while (more) {
      auto page = NextChanges(revision);
      if (!page.ok()) {
        if (page.error().code() != ErrorCode::kFailedPrecondition) {
          return ToGrpcStatus(page.error());
        }
        need_snapshot = true;  // compacted past us while we were sending
        delta.Clear();
        break;
      }
      for (const auto& change : page->changes) {
        if (change.kind == "CredentialSource") {
          // Never the contents; only the name, so agents drop the grants it backs.
          delta.add_changed_credential_sources(change.name);
          continue;
        }
        if (!KindSyncedToAgents(change.kind)) continue;
        if (change.kind == kRevocationKind && change.name == own_revocation &&
            change.op == store::WriteOp::kUpsert) {
          store::StoredResource stored{change.kind, change.name, change.resource_version,
                                       change.spec_json};
          auto parsed = Revocation::FromStored(stored);
          revoked_reason = parsed.ok() ? parsed->reason : std::string("revoked");
        }
        if (change.op == store::WriteOp::kDelete) {
          pb::ResourceRef* ref = delta.add_deletes();
          ref->set_kind(change.kind);
          ref->set_name(change.name);
        } else {
          pb::Resource* r = delta.add_upserts();
          r->set_kind(change.kind);
          r->set_name(change.name);
          r->set_resource_version(change.resource_version);
          r->set_spec_json(change.spec_json);
        }
      }
      revision = page->revision;
      more = page->more;
      if (more && (delta.upserts_size() > 0 || delta.deletes_size() > 0 ||
                   delta.changed_credential_sources_size() > 0)) {
        delta.set_revision(revision);
        if (!writer->Write(delta)) return grpc::Status::CANCELLED;
        delta.Clear();
      }
    }
    if (sequence != bundle_sequence) {
      bundle_sequence = sequence;
      std::string now_jwks = cp_.Bundle().ToJwks();
      if (now_jwks != jwks) {
        jwks = std::move(now_jwks);
        if (!need_snapshot) delta.set_trust_bundle_jwks(jwks);
      }
    }
    if (need_snapshot) {
      // Compacted past this stream: a fresh snapshot follows, after the node is checked again
      // (a revocation among the skipped changes was not seen above).
      auto again = AuthenticateNode(*context);
      if (!again.ok()) return ToGrpcStatus(again.error());
      continue;
    }
    if (delta.upserts_size() > 0 || delta.deletes_size() > 0 ||
        delta.changed_credential_sources_size() > 0 || !delta.trust_bundle_jwks().empty()) {
      delta.set_revision(revision);
      if (!writer->Write(delta)) return grpc::Status::CANCELLED;
    }
    if (revoked_reason) {
      return {grpc::StatusCode::PERMISSION_DENIED,
              "node " + node->name + " is revoked: " + *revoked_reason};
    }
  }
  // A server that is stopping says so: the agent logs why and moves to another replica at
  // once, as for one it cannot reach.
  if (shutting_down_.load()) return {grpc::StatusCode::UNAVAILABLE, "server shutting down"};
  return grpc::Status::OK;
}

Result<store::ChangePage> AgentApi::NextChanges(uint64_t revision) {
  auto page = feed_.Since(revision, kSyncPageSize);
  if (page.ok()) return page;
  return cp_.store().ChangesSince(revision, kSyncPageSize);
}

grpc::Status AgentApi::SignWorkloadSVID(grpc::ServerContext* context,
                                        const pb::SignWorkloadSVIDRequest* request,
                                        pb::SignWorkloadSVIDResponse* response) {
  auto node = AuthenticateNode(*context);
  if (!node.ok()) return ToGrpcStatus(node.error());
  auto svid = cp_.SignWorkloadSvid(node->name, request->spiffe_id(), Bytes(request->csr()),
                                   ProcessOf(request->process()));
  if (!svid.ok()) return ToGrpcStatus(svid.error());
  response->set_svid_chain(DerString(svid->chain));
  response->set_expires_at(ToUnixSeconds(svid->leaf.NotAfter()));
  return grpc::Status::OK;
}

grpc::Status AgentApi::MintJWTSVID(grpc::ServerContext* context,
                                   const pb::MintJWTSVIDRequest* request,
                                   pb::MintJWTSVIDResponse* response) {
  auto node = AuthenticateNode(*context);
  if (!node.ok()) return ToGrpcStatus(node.error());
  std::vector<std::string> audience(request->audience().begin(), request->audience().end());
  auto jwt = cp_.MintWorkloadJwt(node->name, request->spiffe_id(), audience,
                                 ProcessOf(request->process()));
  if (!jwt.ok()) return ToGrpcStatus(jwt.error());
  response->set_token(std::move(jwt->first));
  response->set_expires_at(ToUnixSeconds(jwt->second));
  return grpc::Status::OK;
}

grpc::Status AgentApi::FetchCredential(grpc::ServerContext* context,
                                       const pb::FetchCredentialRequest* request,
                                       pb::FetchCredentialResponse* response) {
  auto node = AuthenticateNode(*context);
  if (!node.ok()) return ToGrpcStatus(node.error());
  auto grant = cp_.FetchCredential(node->name, request->binding(), ProcessOf(request->process()));
  if (!grant.ok()) return ToGrpcStatus(grant.error());
  // The protobuf message copies the secret into an ordinary std::string that gRPC frees after
  // sending; the server's own copies are SecretBytes (wiped).
  response->set_secret(std::string(grant->secret.view()));
  response->set_expires_at(ToUnixSeconds(grant->expires_at));
  for (const auto& [k, v] : grant->attributes) (*response->mutable_attributes())[k] = v;
  for (const auto& [k, v] : grant->extra_secrets) {
    (*response->mutable_extra_secrets())[k] = std::string(v.view());
  }
  response->set_spiffe_id(grant->spiffe_id);
  response->set_source_type(grant->source_type);
  response->set_source(grant->source);
  return grpc::Status::OK;
}

grpc::Status AgentApi::ReportEvents(grpc::ServerContext* context,
                                    const pb::ReportEventsRequest* request,
                                    pb::ReportEventsResponse* response) {
  auto node = AuthenticateNode(*context);
  if (!node.ok()) return ToGrpcStatus(node.error());
  std::vector<ControlPlane::AgentEventIn> events;
  events.reserve(static_cast<size_t>(request->events_size()));
  for (const auto& e : request->events()) {
    events.push_back(
        {e.type(), e.time_unix_ms(), e.identity(), e.pid(), e.exe(), e.details_json()});
  }
  auto recorded = cp_.RecordAgentEvents(node->name, events);
  if (!recorded.ok()) return ToGrpcStatus(recorded.error());
  response->set_recorded(static_cast<uint32_t>(*recorded));
  return grpc::Status::OK;
}

Result<std::unique_ptr<grpc::Server>> StartAgentApi(AgentApi& service,
                                                    const std::string& listen_addr,
                                                    const ServerTlsIdentity& tls, int* bound_port) {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  grpc::SslServerCredentialsOptions ssl_options(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!tls.key_file.empty()) {
    if (tls.chain_file.empty() || tls.roots_file.empty()) {
      return InvalidArgument("agent API: key, chain and roots files are all required");
    }
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        tls.key_file, tls.chain_file, tls.roots_file, tls.refresh_seconds);
    grpc::experimental::TlsServerCredentialsOptions options(provider);
    options.watch_root_certs();
    options.watch_identity_key_cert_pairs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    credentials = grpc::experimental::TlsServerCredentials(options);
  } else {
    if (tls.chain_pem.empty() || tls.key_pem.size() == 0 || tls.client_ca_pem.empty()) {
      return InvalidArgument("agent API: server certificate, key and client CA are required");
    }
    ssl_options.pem_root_certs = tls.client_ca_pem;
    ssl_options.pem_key_cert_pairs.push_back({std::string(tls.key_pem.view()), tls.chain_pem});
    credentials = grpc::SslServerCredentials(ssl_options);
  }
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen_addr, credentials, &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  // Agents ping every 30 s (ServerConnection) to notice a connection that died while their
  // host slept; accept that on idle Sync streams instead of answering "too_many_pings".
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  // The credentials hold their own copy; wipe ours.
  for (auto& pair : ssl_options.pem_key_cert_pairs) {
    OPENSSL_cleanse(pair.private_key.data(), pair.private_key.size());
  }
  if (!server || port == 0) {
    return Unavailable("agent API: cannot listen on " + listen_addr);
  }
  if (bound_port != nullptr) *bound_port = port;
  return server;
}

}  // namespace sigil::server
