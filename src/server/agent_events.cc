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
    "dataplane.inject",    // requests of one connection with a credential added on the wire
                           // (binding, service; each request's time, method, host, path
                           // without query)
    "credential.use",      // a credential the agent served from its cache (or the process's own
                           // SVID as a file): the server audited the grant, not this use
    "credential.refused",  // refused by the agent alone (e.g. a credential file read through
                           // a descriptor another process opened); refusals of a fetch are
                           // the server's credential.denied
};
constexpr size_t kMaxEvents = 256;
constexpr size_t kMaxDetails = 16 * 1024;
constexpr size_t kMaxField = 2048;
constexpr std::string_view kAgentTimeKey = "agent_time_unix_ms";

// One pass over an event's details, without building a document: a JSON object, no top-level
// member named kAgentTimeKey (the server adds it), and whether it has any member.
class DetailsCheck final : public nlohmann::json::json_sax_t {
 public:
  bool is_object = false, has_members = false, has_agent_time = false;

  bool null() override { return Value(); }
  bool boolean(bool) override { return Value(); }
  bool number_integer(number_integer_t) override { return Value(); }
  bool number_unsigned(number_unsigned_t) override { return Value(); }
  bool number_float(number_float_t, const string_t&) override { return Value(); }
  bool string(string_t&) override { return Value(); }
  bool binary(binary_t&) override { return Value(); }
  bool start_object(std::size_t) override {
    if (depth_ == 0) is_object = true;
    return Open();
  }
  bool key(string_t& k) override {
    if (depth_ == 1) {
      has_members = true;
      if (k == kAgentTimeKey) has_agent_time = true;
    }
    return true;
  }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override { return Open(); }
  bool end_array() override { return Close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception&) override {
    return false;
  }

 private:
  bool Value() { return depth_ > 0; }  // a bare top-level scalar is not an object
  bool Open() {
    ++depth_;
    return true;
  }
  bool Close() {
    --depth_;
    return true;
  }
  int depth_ = 0;
};

// `details` (checked by DetailsCheck) with `"agent_time_unix_ms": ms` as its first member,
// spliced in as text: the details are stored as the agent wrote them.
std::string WithAgentTime(std::string_view details, bool has_members, int64_t ms) {
  const size_t brace = details.find('{');
  std::string out;
  out.reserve(details.size() + 48);
  out.append("{\"").append(kAgentTimeKey).append("\":").append(std::to_string(ms));
  if (has_members) out.push_back(',');
  out.append(details.substr(brace + 1));
  return out;
}

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
      return InvalidArgument(where + ".details_json: longer than " + std::to_string(kMaxDetails) +
                             " bytes");
    }
    const std::string_view raw =
        e.details_json.empty() ? std::string_view("{}") : std::string_view(e.details_json);
    DetailsCheck check;
    if (!nlohmann::json::sax_parse(raw, &check) || !check.is_object) {
      return InvalidArgument(where + ".details_json: not a JSON object");
    }
    if (check.has_agent_time) {
      return InvalidArgument(where + ".details_json: \"" + std::string(kAgentTimeKey) +
                             "\" is set by the server");
    }
    store::AuditEvent a;
    a.type = e.type;
    a.actor = "agent:" + node;
    a.node = node;
    a.identity = e.identity;
    if (e.pid > 0) a.pid = e.pid;
    a.exe = e.exe;
    a.details_json = WithAgentTime(raw, check.has_members, e.time_unix_ms);
    out.push_back(std::move(a));
  }
  if (out.empty()) return size_t{0};
  SIGIL_ASSIGN_OR_RETURN(auto seqs, agent_events_->Append(std::move(out)));
  return seqs.size();
}

}  // namespace sigil::server
