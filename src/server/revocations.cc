// Revocation resources (revocations.h) and the ControlPlane members that write them.
#include "server/revocations.h"

#include <algorithm>
#include <array>
#include <set>

#include <nlohmann/json.hpp>

#include "common/duration.h"
#include "core/spiffe_id.h"
#include "server/control_plane.h"

namespace sigil::server {
namespace {

constexpr std::array<std::string_view, 4> kKindNames = {"node", "identity", "svid", "binding"};
// Resource names are at most this long (store_common.h kMaxNameBytes).
constexpr size_t kMaxResourceNameBytes = 253;
// The longest serial RFC 5280 allows: 20 octets.
constexpr size_t kMaxSerialHexDigits = 40;
// The audit records that carry the serial of a certificate this server issued to a node or a
// workload (the records of admin and server credentials are not revocable this way).
constexpr std::array<std::string_view, 4> kIssuanceTypes = {"svid.issue", "node.join", "node.renew",
                                                            "node.rejoin"};

bool HasControlCharacter(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) == 0x7f;
  });
}

// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): the spec is JSON.
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

Result<void> ValidateTarget(RevocationKind kind, std::string_view target) {
  if (target.empty()) return InvalidArgument("target: required");
  if (HasControlCharacter(target)) return InvalidArgument("target: contains a control character");
  if (!ValidUtf8(target)) return InvalidArgument("target: not valid UTF-8");
  const size_t max = kMaxResourceNameBytes - RevocationKindName(kind).size() - 1;
  if (target.size() > max) {
    return InvalidArgument("target: longer than " + std::to_string(max) + " bytes");
  }
  return Ok();
}

std::string Quoted(std::string_view s) { return nlohmann::json(std::string(s)).dump(); }

int64_t IntMember(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

Result<std::string> StringMember(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string())
    return InvalidArgument(std::string(key) + ": not a string");
  return it->get<std::string>();
}

Result<std::vector<std::string>> StringList(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return InvalidArgument(std::string(key) + ": not a list");
  std::vector<std::string> out;
  for (const auto& v : *it) {
    if (!v.is_string()) return InvalidArgument(std::string(key) + ": not a list of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace

std::string_view RevocationKindName(RevocationKind kind) {
  return kKindNames[static_cast<size_t>(kind)];
}

std::optional<RevocationKind> RevocationKindFromName(std::string_view name) {
  for (size_t i = 0; i < kKindNames.size(); ++i) {
    if (kKindNames[i] == name) return static_cast<RevocationKind>(i);
  }
  return std::nullopt;
}

std::string RevocationName(RevocationKind kind, std::string_view target) {
  return std::string(RevocationKindName(kind)) + "/" + std::string(target);
}

Result<std::string> NormalizeSerial(std::string_view serial) {
  if (serial.empty()) return InvalidArgument("target: a certificate serial is required");
  std::string out;
  out.reserve(serial.size());
  for (char c : serial) {
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex) {
      return InvalidArgument("target: a certificate serial is hexadecimal digits only (as " +
                             std::string("`openssl x509 -serial` prints it)"));
    }
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  const size_t nz = out.find_first_not_of('0');
  out = nz == std::string::npos ? "0" : out.substr(nz);
  if (out.size() > kMaxSerialHexDigits) {
    return InvalidArgument("target: a certificate serial is at most 20 bytes (" +
                           std::to_string(kMaxSerialHexDigits) + " hex digits)");
  }
  return out;
}

Result<void> ValidateRevocationReason(std::string_view reason) {
  if (reason.empty()) return InvalidArgument("reason: required (say why, for the audit trail)");
  if (reason.size() > kMaxRevocationReasonBytes) {
    return InvalidArgument("reason: longer than " + std::to_string(kMaxRevocationReasonBytes) +
                           " bytes");
  }
  if (HasControlCharacter(reason)) return InvalidArgument("reason: contains a control character");
  if (!ValidUtf8(reason)) return InvalidArgument("reason: not valid UTF-8");
  return Ok();
}

std::string Revocation::SpecJson() const {
  std::vector<std::string> sorted = serials;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  return nlohmann::json{
      {"kind", RevocationKindName(kind)}, {"target", target},        {"reason", reason},
      {"revokedAt", revoked_at},          {"revokedBy", revoked_by}, {"serials", sorted},
      {"identities", identities},         {"expiresAt", expires_at}}
      .dump();
}

std::string Revocation::ApiJson() const {
  nlohmann::json j = nlohmann::json::parse(SpecJson());
  j["name"] = name;
  j["resourceVersion"] = std::to_string(resource_version);
  return j.dump();
}

Result<Revocation> Revocation::FromStored(const store::StoredResource& stored) {
  auto fail = [&](const Error& e) {
    return InvalidArgument("Revocation " + Quoted(stored.name) + ": " + e.message());
  };
  nlohmann::json j = nlohmann::json::parse(stored.spec_json, nullptr, false);
  if (!j.is_object()) return fail(InvalidArgument("spec is not a JSON object"));
  Revocation r;
  auto kind_name = StringMember(j, "kind");
  if (!kind_name.ok()) return fail(kind_name.error());
  auto kind = RevocationKindFromName(*kind_name);
  if (!kind) return fail(InvalidArgument("kind: unknown kind " + Quoted(*kind_name)));
  r.kind = *kind;
  for (auto [key, out] : {std::pair{"target", &r.target}, std::pair{"reason", &r.reason},
                          std::pair{"revokedBy", &r.revoked_by}}) {
    auto v = StringMember(j, key);
    if (!v.ok()) return fail(v.error());
    *out = std::move(v).value();
  }
  for (const char* key : {"revokedAt", "expiresAt"}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) {
      return fail(InvalidArgument(std::string(key) + ": not an integer"));
    }
  }
  r.revoked_at = IntMember(j, "revokedAt");
  r.expires_at = IntMember(j, "expiresAt");
  auto serials = StringList(j, "serials");
  if (!serials.ok()) return fail(serials.error());
  r.serials = std::move(serials).value();
  auto identities = StringList(j, "identities");
  if (!identities.ok()) return fail(identities.error());
  r.identities = std::move(identities).value();
  if (RevocationName(r.kind, r.target) != stored.name) {
    return fail(InvalidArgument("name does not match kind/target"));
  }
  r.name = stored.name;
  r.resource_version = stored.resource_version;
  return r;
}

// --- RevocationIndex ------------------------------------------------------------------------

const Revocation* RevocationIndex::Snapshot::BySerial(const std::string& serial) const {
  auto it = serials.find(serial);
  return it == serials.end() ? nullptr : &items[it->second];
}

const Revocation* RevocationIndex::Snapshot::ByIdentity(const std::string& spiffe_id) const {
  auto it = identities.find(spiffe_id);
  return it == identities.end() ? nullptr : &items[it->second];
}

const Revocation* RevocationIndex::Snapshot::ByBinding(const std::string& binding) const {
  auto it = bindings.find(binding);
  return it == bindings.end() ? nullptr : &items[it->second];
}

Result<RevocationIndex::SnapshotPtr> RevocationIndex::Current() {
  SIGIL_ASSIGN_OR_RETURN(uint64_t revision, store_.CurrentRevision());
  std::lock_guard lock(mu_);
  if (snapshot_ && revision_ == revision) return snapshot_;
  SIGIL_ASSIGN_OR_RETURN(store::ResourceList list, store_.List(std::string(kRevocationKind)));
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->revision = list.revision;
  snapshot->items.reserve(list.items.size());
  uint64_t skipped = 0;
  for (const store::StoredResource& item : list.items) {
    auto parsed = Revocation::FromStored(item);
    if (!parsed.ok()) {
      ++skipped;
      continue;
    }
    snapshot->items.push_back(std::move(parsed).value());
  }
  for (size_t i = 0; i < snapshot->items.size(); ++i) {
    const Revocation& r = snapshot->items[i];
    for (const auto& serial : r.serials) snapshot->serials.emplace(serial, i);
    for (const auto& id : r.identities) snapshot->identities.emplace(id, i);
    if (r.kind == RevocationKind::kBinding) snapshot->bindings.emplace(r.target, i);
  }
  snapshot_ = std::move(snapshot);
  revision_ = list.revision;
  skipped_ = skipped;
  return snapshot_;
}

uint64_t RevocationIndex::skipped() const {
  std::lock_guard lock(mu_);
  return skipped_;
}

// --- ControlPlane ---------------------------------------------------------------------------

Result<Revocation> ControlPlane::Revoke(RevocationKind kind, const std::string& target,
                                        const std::string& reason, const std::string& actor) {
  SIGIL_TRY(ValidateRevocationReason(reason));
  SIGIL_TRY(ValidateTarget(kind, target));
  const TimePoint now = clock_.Now();
  const int64_t now_unix = ToUnixSeconds(now);
  Revocation r;
  r.kind = kind;
  r.reason = reason;
  r.revoked_at = now_unix;
  r.revoked_by = actor;
  store::AuditEvent e = Event("revoke." + std::string(RevocationKindName(kind)), actor);
  nlohmann::json details = {{"kind", RevocationKindName(kind)}, {"reason", reason}};

  switch (kind) {
    case RevocationKind::kNode: {
      if (!ValidNodeName(target)) {
        return InvalidArgument("target: " + Quoted(target) +
                               " is not a node name (1-63 of [a-z0-9-._], not starting with "
                               "'-' or '.')");
      }
      auto node = store_->GetNode(target);
      if (!node.ok()) {
        if (node.error().code() == ErrorCode::kNotFound) {
          return NotFound("target: node " + Quoted(target) + " not found");
        }
        return std::move(node).error();
      }
      // First the node record: from here on the agent API refuses the node and no renewal of
      // its SVID is recorded. A crash before the resource below is written leaves the node
      // revoked; running the revocation again completes it.
      node->revoked = true;
      node->revocation_reason = reason;
      SIGIL_TRY(store_->UpsertNode(*node, {}));
      r.target = target;
      std::set<std::string> serials;
      if (!node->svid_serial.empty()) serials.insert(node->svid_serial);
      // Every certificate issued to the node that may still be valid: its node SVIDs (a
      // renewal leaves the previous one valid for a while) and the workload SVIDs issued to
      // its processes. Read after the node record changed, so nothing issued later is missed
      // except an issuance already past its checks.
      const Seconds window = std::max(options_.node_svid_ttl, kMaxWorkloadSvidLifetime);
      for (std::string_view type : kIssuanceTypes) {
        store::AuditFilter f;
        f.node = target;
        f.type = std::string(type);
        f.since = now - window - Seconds(60);
        f.limit = store::kMaxAuditQueryLimit;
        while (true) {
          SIGIL_ASSIGN_OR_RETURN(auto page, store_->QueryAudit(f));
          for (const auto& record : page) {
            auto d = nlohmann::json::parse(record.event.details_json, nullptr, false);
            if (!d.is_object()) continue;
            auto serial = d.find("serial");
            if (serial == d.end() || !serial->is_string()) continue;
            if (IntMember(d, "expires") < now_unix) continue;
            serials.insert(serial->get<std::string>());
          }
          if (page.size() < f.limit) break;
          f.after_seq = page.back().seq;
        }
      }
      r.serials.assign(serials.begin(), serials.end());
      r.identities = {trust_domain().IdString() + "/sigil/node/" + target};
      e.node = target;
      e.identity = r.identities.front();
      details["serials"] = r.serials.size();
      break;
    }
    case RevocationKind::kIdentity: {
      auto id = core::SpiffeId::Parse(target);
      if (!id.ok()) return InvalidArgument("target: " + id.error().message());
      if (id->trust_domain() != trust_domain()) {
        return InvalidArgument("target: " + id->str() + " is not in trust domain " +
                               trust_domain().name());
      }
      if (id->IsTrustDomainId()) {
        return InvalidArgument("target: " + id->str() +
                               " is the trust domain itself, not a workload identity");
      }
      if (id->path() == "/sigil" || id->path().starts_with("/sigil/")) {
        return InvalidArgument("target: " + id->str() +
                               " is one of Sigil's own identities (to revoke a node, use "
                               "`sigil revoke node NAME`)");
      }
      r.target = id->str();
      r.identities = {r.target};
      e.identity = r.target;
      break;
    }
    case RevocationKind::kSvid: {
      SIGIL_ASSIGN_OR_RETURN(r.target, NormalizeSerial(target));
      store::AuditFilter f;
      f.serial = r.target;
      f.limit = 100;
      SIGIL_ASSIGN_OR_RETURN(auto records, store_->QueryAudit(f));
      const store::AuditRecord* issued = nullptr;
      for (const auto& record : records) {
        if (std::find(kIssuanceTypes.begin(), kIssuanceTypes.end(), record.event.type) !=
            kIssuanceTypes.end()) {
          issued = &record;
          break;
        }
      }
      if (issued == nullptr && !records.empty()) {
        return FailedPrecondition("certificate " + r.target + " is not a node or workload SVID (" +
                                  records.front().event.type +
                                  "); revocation covers the certificates of nodes and workloads");
      }
      if (issued == nullptr) {
        return NotFound("no certificate with serial " + r.target + " was issued by this server");
      }
      auto d = nlohmann::json::parse(issued->event.details_json, nullptr, false);
      r.expires_at = d.is_object() ? IntMember(d, "expires") : 0;
      if (r.expires_at <= 0) {
        return Internal("the issuance record of certificate " + r.target + " (seq " +
                        std::to_string(issued->seq) + ") has no expiry");
      }
      if (r.expires_at < now_unix) {
        return FailedPrecondition("certificate " + r.target + " (" + issued->event.identity +
                                  ") expired at " + FormatRfc3339(FromUnixSeconds(r.expires_at)) +
                                  "; an expired certificate is refused everywhere already");
      }
      r.serials = {r.target};
      e.node = issued->event.node;
      e.identity = issued->event.identity;
      details["serial"] = r.target;
      details["expires"] = r.expires_at;
      break;
    }
    case RevocationKind::kBinding: {
      auto binding = store_->Get("CredentialBinding", target);
      if (!binding.ok()) {
        if (binding.error().code() == ErrorCode::kNotFound) {
          return NotFound("target: credential binding " + Quoted(target) + " not found");
        }
        return std::move(binding).error();
      }
      r.target = target;
      details["binding"] = target;  // `sigil audit --binding` lists it
      break;
    }
  }
  details["target"] = r.target;
  r.name = RevocationName(kind, r.target);
  store::ResourceWrite w;
  w.kind = std::string(kRevocationKind);
  w.name = r.name;
  w.spec_json = r.SpecJson();
  w.force_new_version = true;  // a re-revocation is news to agents even in the same second
  e.details_json = details.dump();
  SIGIL_ASSIGN_OR_RETURN(auto applied, store_->Apply(std::span(&w, 1), std::span(&e, 1)));
  r.resource_version = applied.writes[0].resource_version;
  std::sort(r.serials.begin(), r.serials.end());
  return r;
}

Result<Revocation> ControlPlane::LiftRevocation(RevocationKind kind, const std::string& target,
                                                const std::string& reason,
                                                const std::string& actor) {
  SIGIL_TRY(ValidateRevocationReason(reason));
  if (kind == RevocationKind::kNode) {
    return FailedPrecondition(
        "a revoked node stays revoked; join the machine under a new node name");
  }
  SIGIL_TRY(ValidateTarget(kind, target));
  std::string normalized = target;
  if (kind == RevocationKind::kSvid) {
    SIGIL_ASSIGN_OR_RETURN(normalized, NormalizeSerial(target));
  }
  const std::string name = RevocationName(kind, normalized);
  const std::string not_revoked =
      std::string(RevocationKindName(kind)) + " " + normalized + " is not revoked";
  auto stored = store_->Get(std::string(kRevocationKind), name);
  if (!stored.ok()) {
    if (stored.error().code() == ErrorCode::kNotFound) return NotFound(not_revoked);
    return std::move(stored).error();
  }
  SIGIL_ASSIGN_OR_RETURN(Revocation r, Revocation::FromStored(*stored));
  store::ResourceWrite w;
  w.kind = std::string(kRevocationKind);
  w.name = name;
  w.op = store::WriteOp::kDelete;
  w.expected_version = stored->resource_version;
  store::AuditEvent e = Event("revoke.lift", actor);
  nlohmann::json details = {{"kind", RevocationKindName(kind)},
                            {"target", normalized},
                            {"reason", reason},
                            {"revocation_reason", r.reason},
                            {"revoked_at", r.revoked_at},
                            {"revoked_by", r.revoked_by}};
  if (kind == RevocationKind::kIdentity) e.identity = normalized;
  if (kind == RevocationKind::kBinding) details["binding"] = normalized;
  if (kind == RevocationKind::kSvid) details["serial"] = normalized;
  e.details_json = details.dump();
  auto applied = store_->Apply(std::span(&w, 1), std::span(&e, 1));
  if (!applied.ok()) {
    if (applied.error().code() == ErrorCode::kAborted) {
      return Error(ErrorCode::kAborted,
                   "the revocation of " + std::string(RevocationKindName(kind)) + " " + normalized +
                       " changed while it was being lifted; try again");
    }
    if (applied.error().code() == ErrorCode::kNotFound) return NotFound(not_revoked);
    return std::move(applied).error();
  }
  return r;
}

Result<std::vector<Revocation>> ControlPlane::ListRevocations() {
  SIGIL_ASSIGN_OR_RETURN(RevocationIndex::SnapshotPtr snapshot, revocations_.Current());
  return snapshot->items;
}

Result<size_t> ControlPlane::PruneExpiredRevocations() {
  SIGIL_ASSIGN_OR_RETURN(RevocationIndex::SnapshotPtr snapshot, revocations_.Current());
  const int64_t now = ToUnixSeconds(clock_.Now());
  size_t pruned = 0;
  for (const Revocation& r : snapshot->items) {
    if (r.kind != RevocationKind::kSvid || r.expires_at == 0 || r.expires_at >= now) continue;
    store::ResourceWrite w;
    w.kind = std::string(kRevocationKind);
    w.name = r.name;
    w.op = store::WriteOp::kDelete;
    w.expected_version = r.resource_version;
    store::AuditEvent e = Event("revoke.expired", "server");
    e.details_json = nlohmann::json{
        {"kind", RevocationKindName(r.kind)},
        {"target", r.target},
        {"serial", r.target},
        {"expired_at", r.expires_at},
        {"revocation_reason",
         r.reason}}.dump();
    auto applied = store_->Apply(std::span(&w, 1), std::span(&e, 1));
    if (applied.ok()) {
      ++pruned;
      continue;
    }
    // Another replica pruned it, or an admin lifted or re-revoked it meanwhile.
    const ErrorCode code = applied.error().code();
    if (code == ErrorCode::kAborted || code == ErrorCode::kNotFound) continue;
    return std::move(applied).error();
  }
  return pruned;
}

Result<void> ControlPlane::RefuseRevokedIdentity(const std::string& node,
                                                 const std::string& spiffe_id,
                                                 const AttestedProcessInfo& process,
                                                 std::string_view svid_kind) {
  SIGIL_ASSIGN_OR_RETURN(RevocationIndex::SnapshotPtr revoked, revocations_.Current());
  const Revocation* r = revoked->ByIdentity(spiffe_id);
  if (r == nullptr) return Ok();
  store::AuditEvent e = WorkloadEvent("svid.denied", node, process);
  e.identity = spiffe_id;
  e.details_json = nlohmann::json{{"reason", "identity revoked"},     {"revocation", r->name},
                                  {"revocation_reason", r->reason},   {"svid", svid_kind},
                                  {"exe_sha256", process.exe_sha256}, {"uid", process.uid},
                                  {"cgroup", process.cgroup}}
                       .dump();
  (void)store_->AppendAudit(std::span(&e, 1));  // best effort: the refusal stands anyway
  return PermissionDenied(spiffe_id + " is revoked (" + r->reason + ")");
}

}  // namespace sigil::server
