// ControlPlane::RecordAgentEvents: what agents witness (data plane denials today, credential
// uses later) goes into the same hash-chained audit trail as the server's own records.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "server/control_plane.h"

namespace sigil::server {
namespace {

// The record types an agent may write. A compromised agent can lie about what it saw, but it
// cannot forge server-side types (svid.issue, token.use, ...) or another node's name.
constexpr std::string_view kAgentEventTypes[] = {
    "dataplane.denied",    // a connection refused by policy (either side)
    "dataplane.refused",   // refused for another reason: no identity, peer unverified, ...
    "dataplane.revoked",   // an established connection closed, or a handshake refused,
                           // because a certificate it used was revoked
    "dataplane.inject",    // one request with a credential added on the wire (binding, method,
                           // host, path without query)
    "credential.use",      // a credential the agent served from its cache (or the process's own
                           // SVID as a file): the server audited the grant, not this use
    "credential.refused",  // refused by the agent alone (e.g. a credential file read through
                           // a descriptor another process opened); refusals of a fetch are
                           // the server's credential.denied
};
constexpr size_t kMaxEvents = 256;
constexpr size_t kMaxDetails = 4096;
constexpr size_t kMaxField = 2048;

}  // namespace

Result<size_t> ControlPlane::RecordAgentEvents(const std::string& node,
                                               std::span<const AgentEventIn> events) {
  if (events.size() > kMaxEvents) {
    return InvalidArgument("events: " + std::to_string(events.size()) + " in one report (at most " +
                           std::to_string(kMaxEvents) + ")");
  }
  std::vector<store::AuditEvent> out;
  out.reserve(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    const AgentEventIn& e = events[i];
    const std::string where = "events[" + std::to_string(i) + "]";
    if (std::find(std::begin(kAgentEventTypes), std::end(kAgentEventTypes), e.type) ==
        std::end(kAgentEventTypes)) {
      return InvalidArgument(where + ".type: \"" + e.type.substr(0, 64) +
                             "\" is not a type agents may report");
    }
    if (e.identity.size() > kMaxField || e.exe.size() > kMaxField) {
      return InvalidArgument(where + ": identity or exe longer than 2048 bytes");
    }
    if (e.details_json.size() > kMaxDetails) {
      return InvalidArgument(where + ".details_json: longer than 4096 bytes");
    }
    nlohmann::json details = e.details_json.empty()
                                 ? nlohmann::json::object()
                                 : nlohmann::json::parse(e.details_json, nullptr, false);
    if (!details.is_object()) {
      return InvalidArgument(where + ".details_json: not a JSON object");
    }
    details["agent_time_unix_ms"] = e.time_unix_ms;
    store::AuditEvent a;
    a.type = e.type;
    a.actor = "agent:" + node;
    a.node = node;
    a.identity = e.identity;
    if (e.pid > 0) a.pid = e.pid;
    a.exe = e.exe;
    a.details_json = details.dump();
    out.push_back(std::move(a));
  }
  if (out.empty()) return size_t{0};
  SIGIL_ASSIGN_OR_RETURN(auto seqs, store_->AppendAudit(out));
  return seqs.size();
}

}  // namespace sigil::server
