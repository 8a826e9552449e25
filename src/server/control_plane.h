// ControlPlane: the server's logic, independent of transport. The admin API (HTTPS) and the
// agent API (gRPC) are thin adapters over it.
//
// Owns the authority set (CA + JWT key generations; persisted sealed under the KEK in the
// store blob "authorities"), issues admin credentials, join tokens and node SVIDs, and writes
// an audit record for every bootstrap secret it creates or consumes.
//
// Several server replicas may share one store (PostgreSQL). The authority set is then shared
// through the store: every write of the sealed blob goes with a write of the CaState resource
// (its public summary) whose version is the compare-and-swap token, so concurrent rotations
// and issuance bookkeeping on different replicas serialise, and a replica that lost the race
// re-reads and retries. Replicas pick up another's change through the change log
// (RefreshAuthorities; authority_store.cc).
//
// Thread-safe: the authority set is guarded by a mutex; everything else is in the store.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "common/secret_bytes.h"
#include "core/authority_set.h"
#include "core/kek.h"
#include "core/trust_bundle.h"
#include "resources/resource.h"
#include "server/agent_event_ingest.h"
#include "server/audit_batcher.h"
#include "server/metrics.h"
#include "server/oauth2_broker.h"
#include "server/revocations.h"
#include "server/workload_catalog.h"
#include "store/store.h"

namespace sigil::server {

// The node name rule of join tokens, rejoin and node revocation: 1-63 of [a-z0-9._-], not
// starting with '-' or '.'.
bool ValidNodeName(std::string_view name);

inline constexpr Seconds kDefaultNodeSvidTtl{24 * 3600};
inline constexpr Seconds kDefaultJoinTokenTtl{3600};
inline constexpr Seconds kMaxJoinTokenTtl{7 * 24 * 3600};
inline constexpr Seconds kAdminCredentialTtl{365 * 24 * 3600 / 4};  // ~3 months, capped by CA
// How long after its node SVID expired a node may still rejoin with its key (node_rejoin.h).
inline constexpr Seconds kDefaultNodeRejoinGrace{72 * 3600};

struct ControlPlaneOptions {
  core::CaOptions ca;  // trust domain, CA key type and TTL
  core::RotationPolicy rotation;
  std::optional<core::UpstreamCa> upstream;
  Seconds node_svid_ttl = kDefaultNodeSvidTtl;
  Seconds server_svid_ttl = kDefaultNodeSvidTtl;        // the server's own TLS certificate
  Seconds admin_svid_ttl = kAdminCredentialTtl;         // admin client certificates
  Seconds node_rejoin_grace = kDefaultNodeRejoinGrace;  // 0: no rejoin (node_rejoin.h)
};

struct AdminCredential {
  std::string spiffe_id;
  std::string chain_pem;  // leaf first
  SecretBytes key_pem;    // PKCS#8; write it 0600, never log it
};

struct IssuedJoinToken {
  std::string id;
  SecretBytes text;  // the token to hand to the operator once
  TimePoint expires_at;
};

// What an agent attested about the process a workload request is made for (proto
// AttestedProcess). The server re-checks `selectors` against WorkloadIdentity objects and
// audits the rest.
struct AttestedProcessInfo {
  int64_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string exe_path;
  std::string exe_sha256;
  std::string cgroup;
  std::string container_id;
  std::vector<std::string> selectors;  // "unix:uid:1000", "unix:path:/usr/bin/x", ...
};

// Sealed credential-source secrets live in store blob kCredentialSecretBlobPrefix + source name
// (a JSON object of the secret fields, e.g. {"spec.value": "..."}).
inline constexpr std::string_view kCredentialSecretBlobPrefix = "secret/";
// The authority set (core::AuthoritySet::Serialize), sealed under the KEK.
inline constexpr std::string_view kAuthoritiesBlob = "authorities";
// The public summary of the authority set (trust domain, generations, fingerprints, issued
// bounds, bundle sequence), written in the same transaction as every write of kAuthoritiesBlob.
// Never synced to agents and not writable through the admin API. Its "trustDomain" is the one
// the CA was created for: what a server starting on the store must serve.
inline constexpr std::string_view kCaStateKind = "CaState";
inline constexpr std::string_view kCaStateName = "authorities";
// How long an agent may hold a static/aws secret it fetched before fetching again.
inline constexpr Seconds kCredentialGrantTtl{300};
// Largest secret `sigil credential rotate` accepts (the same bound as a secret field in a
// resource document).
inline constexpr size_t kMaxCredentialSecretBytes = size_t{64} * 1024;

// One FetchCredential answer: the secret for (binding, attested process).
struct CredentialGrant {
  std::string binding;
  std::string source;
  std::string source_type;  // static | aws | jwt | oauth2-client-credentials
  std::string spiffe_id;    // the identity of the process the binding allows
  SecretBytes secret;       // static: value; aws: secretAccessKey; jwt: the JWT-SVID; oauth2: the
                            // access token
  std::vector<std::pair<std::string, SecretBytes>> extra_secrets;  // aws: sessionToken
  std::vector<std::pair<std::string, std::string>> attributes;     // accessKeyId, region, ...
  TimePoint expires_at;
};

// What `sigil credential rotate` changed (ControlPlane::RotateCredentialSecret).
struct RotatedCredential {
  std::string source;
  std::string source_type;
  std::string field;                  // the secret field replaced, e.g. "spec.value"
  uint64_t resource_version = 0;      // the source's new version
  uint64_t revision = 0;              // the store revision of the change
  bool cached_token_dropped = false;  // oauth2: a cached access token was discarded
};

// `sigil ca status`: every generation of the authority set (ca_rotation.cc).
struct CaRotationStatus {
  TimePoint now;
  uint64_t bundle_sequence = 0;
  std::vector<core::GenerationInfo> generations;  // retiring, active, prepared
};

// Default propagation delay of `sigil ca rotate` (docs/operations.md, "CA rotation"): twice the
// bundle refresh hint (5 min) that relying parties outside Sigil poll the bundle at.
inline constexpr Seconds kDefaultCaActivateAfter{600};

struct NodeRejoinRequest;  // node_rejoin.h

struct NodeJoin {
  std::string spiffe_id;
  core::IssuedX509Svid svid;
  std::string bundle_jwks;
};

class ControlPlane {
 public:
  // Loads the sealed authority set from the store, or creates and stores it on first start
  // (audited as "ca.init"). `store` and `kek` must outlive nothing: the control plane owns them.
  static Result<std::unique_ptr<ControlPlane>> Open(ControlPlaneOptions options,
                                                    std::unique_ptr<store::Store> store,
                                                    core::Kek kek, const Clock& clock);

  bool created_authorities() const { return created_; }
  const core::TrustDomain& trust_domain() const { return options_.ca.trust_domain; }
  store::Store& store() { return *store_; }

  // Optional: issuance counters and latency go to `metrics` (not owned; must outlive this).
  void AttachMetrics(metrics::ServerMetrics* metrics) { metrics_ = metrics; }

  core::TrustBundle Bundle() const;
  // The same, shared and immutable (rebuilt only when the authorities change): cheap per call.
  std::shared_ptr<const core::TrustBundle> BundlePtr() const;
  // The current root CA certificate (what join tokens pin).
  core::Certificate Root() const;
  // Advances CA rotation (automatic schedule, activations scheduled by RotateCa, retirement of
  // generations whose issued certificates all expired); persists and audits each step
  // ("ca.rotate.prepare", "ca.rotate.activate", "ca.rotate.retire"). Returns true when the
  // bundle changed. Run by the server's maintenance thread every second (ca_rotation.cc).
  Result<bool> RotateIfDue();
  // `sigil ca rotate`: prepares and publishes a new generation now (or takes the one the
  // automatic schedule prepared) and schedules its activation at now + activate_after
  // (0 .. CA ttl). Persisted with a "ca.rotate.prepare" record. FailedPrecondition, naming
  // the pending generation and its activation time, when a rotation is already scheduled,
  // unless `force` (which reschedules that generation's activation).
  Result<core::GenerationInfo> RotateCa(Seconds activate_after, bool force,
                                        const std::string& actor);
  CaRotationStatus CaStatus() const;
  // Re-reads the authority set when another replica changed it in the store (the CaState
  // version moved past the one held). True when it was replaced. Called for every CaState change
  // the change feed sees and, as a safety net, by the maintenance thread (authority_store.cc).
  Result<bool> RefreshAuthorities();
  // The CaState version of the authority set held in memory.
  uint64_t authorities_version() const;
  // The CA certificate of the active generation (what signs now).
  core::Certificate SigningCa() const;

  // `spiffe://TD/sigil/admin` (or `.../admin/readonly`) client certificate and key. Audited.
  // TTL admin_svid_ttl (capped by the CA); `key` nullptr: a fresh EC P-256 key.
  Result<AdminCredential> IssueAdminCredential(bool read_only, const std::string& actor,
                                               const core::PrivateKey* key = nullptr);

  // Node bootstrap. Token text is returned once; the store keeps its hash only.
  Result<IssuedJoinToken> CreateJoinToken(const std::string& node_name, Seconds ttl,
                                          const std::string& actor);
  // Consumes the token (single use), checks it names `node_name`, verifies the CSR, issues
  // the node SVID and records the node. Every refusal is audited with its reason and is
  // PermissionDenied/Unauthenticated to the caller without saying which check failed.
  Result<NodeJoin> JoinNode(std::string_view token_text, const std::string& node_name,
                            std::span<const uint8_t> csr_der, const std::string& peer);
  // Audits each token that passed its expiry unused, once. Returns how many.
  Result<size_t> SweepExpiredTokens();

  // Seals `plaintext` under the KEK (additional data = `name`) and stores it as blob `name`,
  // appending `audit` in the same transaction. For credential-source secrets.
  Result<void> PutSealedBlob(const std::string& name, std::span<const uint8_t> plaintext,
                             std::span<const store::AuditEvent> audit);
  // The same sealing, for a blob written by the caller inside a larger batch
  // (store::Store::ApplyWithBlobs), so a resource and its secret commit together.
  Result<store::BlobWrite> SealBlob(const std::string& name,
                                    std::span<const uint8_t> plaintext) const;
  // Reads and unseals blob `name` (NotFound if absent; Unauthenticated if it does not open
  // under this KEK with this name).
  Result<SecretBytes> OpenSealedBlob(const std::string& name);

  // Writes validated resources (from resources::ParseDocuments*) in ONE store transaction:
  // each canonical spec (secrets redacted; metadata.resourceVersion as the expected version),
  // one `audit_type` event per document, and for each CredentialSource its secret fields
  // sealed under the KEK as blob kCredentialSecretBlobPrefix + name with a "secret.store"
  // event. All or nothing.
  Result<store::ApplyResult> ApplyResources(std::span<const resources::Resource> batch,
                                            const std::string& actor,
                                            const std::string& audit_type);

  // --- Agent API support (used by server/agent_api) ---
  const Clock& clock() const { return clock_; }
  // Re-issues spiffe://TD/sigil/node/NAME for a node that exists and is not revoked, for the
  // key in `csr_der` (self-signature and key type verified). Updates the node record (serial,
  // expiry, last_seen) and audits "node.renew" in the same transaction.
  Result<core::IssuedX509Svid> RenewNodeSvid(const std::string& node_name,
                                             std::span<const uint8_t> csr_der);
  // A node whose SVID expired proves it holds that SVID's key and gets a new one (see
  // node_rejoin.h for every check; node_rejoin.cc). Audited "node.rejoin" or
  // "node.rejoin.denied" (reason); every refusal is PermissionDenied without the reason.
  Result<core::IssuedX509Svid> RejoinNode(const NodeRejoinRequest& request,
                                          const std::string& peer);
  // The server's TLS identity: spiffe://TD/sigil/server with `dns_names` as DNS SANs (e.g.
  // "localhost"), for `key` (nullptr: a fresh EC P-256 key), TTL server_svid_ttl (capped by the
  // CA). The chain is leaf first and ends with the active root. Audited as
  // "server.credential.create". ServerIdentity reissues it at half-life.
  Result<AdminCredential> IssueServerCredential(std::vector<std::string> dns_names,
                                                const core::PrivateKey* key = nullptr);

  // Workload SVIDs for a process attested by the agent on `node` (already authenticated).
  // The process may hold `requested_id` only if a WorkloadIdentity in the store has every
  // selector among process.selectors, allows `node` (spec.nodes), and renders (node name,
  // process uid) to exactly `requested_id` in this trust domain, outside /sigil/. Otherwise
  // PermissionDenied "no WorkloadIdentity matches ...", audited as "svid.denied".
  // The parsed identities are cached per store revision (WorkloadCatalog); matching is a
  // linear scan of their selectors.
  //
  // X.509: verifies `csr_der` (self-signature, key policy), issues with the identity's ttl and
  // dnsNames, audits "svid.issue" (node, identity, pid, exe; sha256, uid, cgroup, serial,
  // expiry) before returning.
  Result<core::IssuedX509Svid> SignWorkloadSvid(const std::string& node,
                                                const std::string& requested_id,
                                                std::span<const uint8_t> csr_der,
                                                const AttestedProcessInfo& process);
  // JWT: `audience` must be non-empty (and, when the identity lists jwtAudiences, within
  // them). TTL kDefaultJwtSvidTtl, capped by the signing key. Audited as "jwt.issue".
  // Returns the token and its expiry.
  Result<std::pair<std::string, TimePoint>> MintWorkloadJwt(
      const std::string& node, const std::string& requested_id,
      const std::vector<std::string>& audience, const AttestedProcessInfo& process);

  // The credential of CredentialBinding `binding` for a process attested on `node`: the
  // process must hold (HeldIdentities) a SPIFFE ID the binding's `identities` patterns match.
  // Every grant is audited "credential.grant" (binding, source, type, identity, pid, exe,
  // expiry; never the value) before it is returned; every refusal "credential.denied" with
  // its reason. NotFound for an unknown binding or source; PermissionDenied when the process
  // holds no matching identity; FailedPrecondition for a binding without a source (svid-pem:
  // the agent serves the process's own SVID).
  //
  // oauth2-client-credentials: the secret is an access token from the source's token
  // endpoint, cached per source by oauth2::Broker (single-flight, until shortly before
  // expiry, per source resource version); the grant expires when the cache would refresh.
  // A failed token request is "credential.denied" with the endpoint's HTTP status and OAuth
  // `error` code (never the client secret): FailedPrecondition when the endpoint refused
  // (4xx), Unavailable when it could not be reached or answered 5xx.
  Result<CredentialGrant> FetchCredential(const std::string& node, const std::string& binding,
                                          const AttestedProcessInfo& process);

  // `sigil credential rotate`: replaces the secret of CredentialSource `source` (static:
  // value; oauth2-client-credentials: clientSecret) with `secret`. The new sealed blob and a
  // new resource version of the source (same spec) commit in one transaction with a
  // "credential.rotated" record (source, type, field, version; never the secret), so agents
  // see the source change over Sync and drop their grants. Drops a cached oauth2 access
  // token. NotFound for an unknown source; FailedPrecondition for jwt (no secret) and aws
  // (a new key pair has a new accessKeyId: apply it); InvalidArgument for an empty, too long
  // or "[redacted]" secret; Aborted if the source changed concurrently.
  Result<RotatedCredential> RotateCredentialSecret(const std::string& source,
                                                   const SecretBytes& secret,
                                                   const std::string& actor);
  // Drops what the server caches for a CredentialSource (its oauth2 access token), e.g. after
  // the source was deleted.
  void ForgetCredentialSource(const std::string& source) { oauth2_.Invalidate(source); }

  // Appends events an agent reports (agent_events.cc) to the audit trail, under `node` (the
  // authenticated caller, never a name the agent supplies) and the server's time. Only the
  // types in kAgentEventTypes are accepted; InvalidArgument names the first bad event.
  struct AgentEventIn {
    std::string type;
    int64_t time_unix_ms = 0;
    std::string identity;
    int64_t pid = 0;
    std::string exe;
    std::string details_json;
  };
  Result<size_t> RecordAgentEvents(const std::string& node, std::span<const AgentEventIn> events);

  // --- Revocation (revocations.cc; docs/control-plane.md, "Revocation") ---
  // Revokes `target` (node name, SPIFFE ID, certificate serial or CredentialBinding name):
  // writes the Revocation resource and a "revoke.<kind>" audit record (actor, target, reason)
  // in one transaction; a node is first marked revoked in its node record. Re-revoking updates
  // reason and time (new resource version). InvalidArgument naming `target` or `reason`;
  // NotFound for an unknown node, binding or serial.
  Result<Revocation> Revoke(RevocationKind kind, const std::string& target,
                            const std::string& reason, const std::string& actor);
  // Deletes the revocation of an identity, svid or binding (audited "revoke.lift"); a node
  // revocation cannot be lifted (FailedPrecondition). NotFound when `target` is not revoked.
  Result<Revocation> LiftRevocation(RevocationKind kind, const std::string& target,
                                    const std::string& reason, const std::string& actor);
  Result<std::vector<Revocation>> ListRevocations();
  // Deletes svid revocations whose certificate has expired (audited "revoke.expired").
  // Returns how many. Run by the server's maintenance thread.
  Result<size_t> PruneExpiredRevocations();
  // The revocations at the current store revision (cached per revision).
  Result<RevocationIndex::SnapshotPtr> Revocations() { return revocations_.Current(); }

 private:
  ControlPlane(ControlPlaneOptions options, std::unique_ptr<store::Store> store, core::Kek kek,
               const Clock& clock)
      : options_(std::move(options)),
        store_(std::move(store)),
        kek_(std::move(kek)),
        clock_(clock),
        catalog_(*store_),
        audit_(*store_),
        agent_events_(std::make_unique<AgentEventIngest>(*store_, AgentEventIngest::Options{})),
        oauth2_(clock, HttpsTokenFetcher()),
        revocations_(*store_) {}
  // oauth2::FetchToken with its default options (credentials.cc).
  static oauth2::Fetcher HttpsTokenFetcher();
  // The token request of an oauth2-client-credentials source: its spec and sealed secret.
  Result<oauth2::TokenRequest> OAuth2Request(const std::string& source,
                                             const std::string& spec_json);
  // `root`, when given, receives the root of the generation that signed (which another
  // replica's rotation may have made non-active by the time Issue returns).
  Result<core::IssuedX509Svid> Issue(const core::X509SvidRequest& request,
                                     std::optional<core::Certificate>* root = nullptr);
  store::AuditEvent Event(std::string type, std::string actor) const;
  struct WorkloadMatch {
    resources::WorkloadIdentitySpec spec;
    core::SpiffeId id;
  };
  // The identity `process` on `node` may hold as `requested_id` (see SignWorkloadSvid);
  // audits "svid.denied" (with `svid_kind` "x509" or "jwt") when there is none.
  Result<WorkloadMatch> MatchWorkload(const std::string& node, const std::string& requested_id,
                                      const AttestedProcessInfo& process,
                                      std::string_view svid_kind);
  store::AuditEvent WorkloadEvent(std::string type, const std::string& node,
                                  const AttestedProcessInfo& process) const;
  // Every identity `process` on `node` holds (WorkloadIdentitySpec::IdFor), in
  // WorkloadIdentity name order.
  Result<std::vector<WorkloadMatch>> HeldIdentities(const std::string& node,
                                                    const AttestedProcessInfo& process);
  // PermissionDenied, audited "svid.denied" (reason "identity revoked"), when `spiffe_id` is
  // revoked (revocations.cc).
  Result<void> RefuseRevokedIdentity(const std::string& node, const std::string& spiffe_id,
                                     const AttestedProcessInfo& process,
                                     std::string_view svid_kind);

  const ControlPlaneOptions options_;
  std::unique_ptr<store::Store> store_;
  const core::Kek kek_;
  const Clock& clock_;
  bool created_ = false;
  WorkloadCatalog catalog_;  // over *store_
  AuditBatcher audit_;       // over *store_: issuance audits, group-committed
  // Over *store_: what agents report, on a low-priority thread of its own, group-committed.
  std::unique_ptr<AgentEventIngest> agent_events_;
  oauth2::Broker oauth2_;  // access tokens of oauth2-client-credentials sources

  RevocationIndex revocations_;  // over *store_: every Revocation, parsed per store revision

  metrics::ServerMetrics* metrics_ = nullptr;  // set once before serving

  // CA rotation (ca_rotation.cc). Every write of the authority set happens under mu_, so the
  // stored state only moves forward. An issuance whose expiry passes what the stored state
  // records first writes a bound a little ahead (KeepIssuanceDurableLocked), so the store
  // always covers every certificate handed out and a generation never leaves the bundle early.
  struct DurableIssuance {
    std::string kid;  // active generation's JWT kid when last persisted
    std::optional<TimePoint> x509, jwt;
  };
  // The authority set in the store (authority_store.cc). PersistLocked writes `set` with a
  // compare-and-swap on the CaState version held (Aborted when another replica wrote since) and
  // returns the new version. MutateAuthoritiesLocked runs `step` on a copy of the live set and
  // persists the result; on a conflict it re-reads the store and runs `step` again on the fresh
  // set. `step` returns nullopt when there is nothing to write, else the audit records of the
  // change. True when a change was written.
  using AuthorityStep =
      std::function<Result<std::optional<std::vector<store::AuditEvent>>>(core::AuthoritySet& set)>;
  Result<core::AuthoritySet> CloneAuthoritiesLocked() const;
  Result<uint64_t> PersistLocked(const core::AuthoritySet& set,
                                 const std::vector<store::AuditEvent>& audit);
  Result<bool> MutateAuthoritiesLocked(const AuthorityStep& step);
  Result<bool> ReloadAuthoritiesLocked();
  Result<core::AuthoritySet> OpenAuthoritiesBlob(const std::vector<uint8_t>& sealed) const;
  void InstallAuthoritiesLocked(core::AuthoritySet set, uint64_t version);
  Result<void> LoadOrCreateAuthorities();
  void MarkDurableLocked();
  Result<void> KeepIssuanceDurableLocked();

  mutable std::mutex mu_;
  DurableIssuance durable_;                          // guarded by mu_
  std::optional<core::AuthoritySet> authorities_;    // guarded by mu_
  uint64_t authorities_version_ = 0;                 // guarded by mu_: CaState version held
  std::shared_ptr<const core::TrustBundle> bundle_;  // guarded by mu_; authorities_->Bundle()
};

}  // namespace sigil::server
