#include "store/store_common.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>
#include <utility>

namespace sigil::store {

std::string_view WriteOpName(WriteOp op) { return op == WriteOp::kDelete ? "delete" : "upsert"; }

std::string_view ConsumeStatusName(ConsumeStatus s) {
  switch (s) {
    case ConsumeStatus::kConsumed:
      return "consumed";
    case ConsumeStatus::kUnknown:
      return "unknown";
    case ConsumeStatus::kAlreadyUsed:
      return "already-used";
    case ConsumeStatus::kExpired:
      return "expired";
  }
  return "invalid";
}

namespace internal {

int64_t ToMicros(TimePoint t) {
  return std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()).count();
}
TimePoint FromMicros(int64_t us) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::microseconds(us)));
}

Result<void> ValidateKey(std::string_view what, std::string_view value, size_t max) {
  if (value.empty()) return InvalidArgument("store: " + std::string(what) + " is empty");
  if (value.size() > max) {
    return InvalidArgument("store: " + std::string(what) + " is longer than " +
                           std::to_string(max) + " bytes");
  }
  for (char c : value) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return InvalidArgument("store: " + std::string(what) + " contains a control character");
    }
  }
  return Ok();
}

std::string AuditMemberNeedle(std::string_view member, std::string_view value) {
  return nlohmann::json(std::string(member)).dump() + ":" +
         nlohmann::json(std::string(value)).dump();
}

bool MatchesAuditMember(std::string_view details_json, std::string_view member,
                        std::string_view value) {
  auto details = nlohmann::json::parse(details_json, nullptr, /*allow_exceptions=*/false);
  if (!details.is_object()) return false;
  auto it = details.find(member);
  return it != details.end() && it->is_string() && it->get_ref<const std::string&>() == value;
}

std::string AuditBindingNeedle(std::string_view binding) {
  return AuditMemberNeedle("binding", binding);
}

bool MatchesAuditBinding(std::string_view details_json, std::string_view binding) {
  return MatchesAuditMember(details_json, "binding", binding);
}

Result<void> ValidateJsonObject(std::string_view what, std::string_view text, size_t max) {
  if (text.size() > max) {
    return ResourceExhausted("store: " + std::string(what) + " is larger than " +
                             std::to_string(max) + " bytes");
  }
  // Valid JSON whose first token is '{' is an object; accept() checks that without building
  // the document (this runs once per audit record).
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || text[first] != '{' || !nlohmann::json::accept(text)) {
    return InvalidArgument("store: " + std::string(what) + " is not a JSON object");
  }
  return Ok();
}

Result<void> ValidateTokenHash(std::string_view hash) {
  bool ok = hash.size() == 64 && std::all_of(hash.begin(), hash.end(), [](char c) {
              return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
            });
  if (!ok) return InvalidArgument("store: join token hash must be 64 lowercase hex characters");
  return Ok();
}

std::string ResourceKey(std::string_view kind, std::string_view name) {
  std::string key(kind);
  key += '/';
  key += name;
  return key;
}

Result<void> ValidateBlob(std::string_view name, size_t size) {
  SIGIL_TRY(ValidateKey("blob name", name, kMaxNameBytes));
  if (size > kMaxBlobBytes) {
    return ResourceExhausted("store: blob " + std::string(name) + " is larger than " +
                             std::to_string(kMaxBlobBytes) + " bytes");
  }
  return Ok();
}

Result<void> ValidateApplyBatch(std::span<const ResourceWrite> writes,
                                std::span<const BlobWrite> blobs) {
  std::set<std::pair<std::string_view, std::string_view>> seen;
  for (const ResourceWrite& w : writes) {
    SIGIL_TRY(ValidateKey("resource kind", w.kind, kMaxKindBytes));
    SIGIL_TRY(ValidateKey("resource name", w.name, kMaxNameBytes));
    const std::string key = ResourceKey(w.kind, w.name);
    if (w.op == WriteOp::kUpsert) {
      SIGIL_TRY(ValidateJsonObject(key + ": spec", w.spec_json, kMaxSpecBytes));
    }
    if (!seen.emplace(w.kind, w.name).second) {
      return InvalidArgument("store: batch writes " + key + " more than once");
    }
  }
  std::set<std::string_view> blob_names;
  for (const BlobWrite& b : blobs) {
    SIGIL_TRY(ValidateBlob(b.name, b.bytes.size()));
    if (!blob_names.insert(b.name).second) {
      return InvalidArgument("store: batch writes blob " + b.name + " more than once");
    }
  }
  return Ok();
}

Result<void> ValidateJoinToken(const JoinTokenRecord& token) {
  SIGIL_TRY(ValidateTokenHash(token.token_hash));
  SIGIL_TRY(ValidateKey("join token node name", token.node_name, kMaxNameBytes));
  SIGIL_TRY(ValidateKey("join token creator", token.created_by, kMaxAuditFieldBytes));
  if (token.used_at || token.expired_at) {
    return InvalidArgument("store: a new join token cannot be used or expired already");
  }
  return Ok();
}

Result<void> ValidateNode(const NodeRecord& node) {
  SIGIL_TRY(ValidateKey("node name", node.name, kMaxNameBytes));
  return ValidateKey("node " + node.name + ": spiffe_id", node.spiffe_id, kMaxAuditFieldBytes);
}

namespace {

Result<void> ValidateAuditField(std::string_view what, std::string_view value) {
  if (value.size() > kMaxAuditFieldBytes) {
    return InvalidArgument("store: audit " + std::string(what) + " is longer than " +
                           std::to_string(kMaxAuditFieldBytes) + " bytes");
  }
  return Ok();
}

}  // namespace

Result<AuditEvent> NormalizeAuditEvent(const AuditEvent& e, const Clock& clock) {
  SIGIL_TRY(ValidateKey("audit type", e.type, 64));
  SIGIL_TRY(ValidateAuditField("actor", e.actor));
  SIGIL_TRY(ValidateAuditField("node", e.node));
  SIGIL_TRY(ValidateAuditField("identity", e.identity));
  SIGIL_TRY(ValidateAuditField("exe", e.exe));
  AuditEvent out = e;
  out.time = TruncateToMicros(e.time == TimePoint{} ? clock.Now() : e.time);
  if (out.details_json.empty()) out.details_json = "{}";
  SIGIL_TRY(
      ValidateJsonObject("audit " + e.type + ": details", out.details_json, kMaxDetailsBytes));
  return out;
}

}  // namespace internal
}  // namespace sigil::store
