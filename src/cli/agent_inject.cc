#include "cli/agent_inject.h"

#include <nlohmann/json.hpp>

#include "agent/creds/binding_index.h"
#include "common/clock.h"

namespace sigil::cli {
namespace {

// A grant as the proxy uses it. current() is cheap and never blocks: the grant stays current
// while it is not about to expire and nothing in the synced state changed since it was taken
// (a rotated source or an edited binding arrives as a sync change; the refresh that follows
// is served from the agent's grant cache when nothing relevant changed).
class AgentInjectCredential final : public dataplane::InjectCredential {
 public:
  AgentInjectCredential(const agent::Agent& agent, agent::creds::CredentialGrantHandle grant)
      : agent_(agent), grant_(std::move(grant)), generation_(agent.state().generation()) {}

  const std::string& spiffe_id() const override { return grant_.info().spiffe_id; }
  std::string attribute(std::string_view name) const override {
    auto it = grant_.info().attributes.find(std::string(name));
    return it == grant_.info().attributes.end() ? "" : it->second;
  }
  bool current() const override {
    if (agent_.state().generation() != generation_) return false;
    return Clock::System().Now() + std::chrono::seconds(5) < grant_.info().expires_at;
  }
  void WithSecret(
      const std::function<void(std::string_view, std::string_view)>& fn) const override {
    grant_.WithSecret([&](const agent::creds::SecretParts& parts) {
      fn(parts.secret(), parts.extra("sessionToken").value_or(std::string_view()));
    });
  }

 private:
  const agent::Agent& agent_;
  agent::creds::CredentialGrantHandle grant_;
  uint64_t generation_;
};

}  // namespace

std::vector<dataplane::InjectBinding> InjectBindingsFor(
    const agent::Agent& agent, const agent::attest::AttestedProcess& process,
    const std::string& service) {
  std::vector<dataplane::InjectBinding> out;
  for (const auto& [name, spec_json] : agent.state().ResourcesOfKind("CredentialBinding")) {
    auto spec = nlohmann::json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
    if (!spec.is_object() || spec.value("service", "") != service) continue;
    const auto& delivery = spec.value("delivery", nlohmann::json::object());
    dataplane::InjectBinding b;
    b.name = name;
    if (delivery.contains("header") && delivery["header"].is_object()) {
      const auto& h = delivery["header"];
      b.kind = dataplane::InjectBinding::Kind::kHeader;
      b.header_name = h.value("name", "");
      b.header_template = h.value("template", "{{secret}}");
      if (b.header_name.empty()) continue;
    } else if (delivery.contains("sigv4") && delivery["sigv4"].is_object()) {
      const auto& v = delivery["sigv4"];
      b.kind = dataplane::InjectBinding::Kind::kSigV4;
      b.region = v.value("region", "");
      b.aws_service = v.value("service", "");
      if (b.region.empty() || b.aws_service.empty()) continue;
    } else {
      continue;  // file deliveries are the credential mount's
    }
    // The identity rule the server applies too: the process must hold an identity the
    // binding's patterns allow.
    auto info = agent::creds::ParseBinding(name, spec_json);
    if (!info.ok() || agent.BindingIdentities(*info, process).empty()) continue;
    out.push_back(std::move(b));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

Result<std::shared_ptr<const dataplane::InjectCredential>> FetchInjectCredentialFor(
    agent::Agent& agent, const std::string& binding,
    const agent::attest::AttestedProcess& process) {
  SIGIL_ASSIGN_OR_RETURN(auto grant, agent.FetchCredential(binding, process));
  return std::shared_ptr<const dataplane::InjectCredential>(
      std::make_shared<AgentInjectCredential>(agent, std::move(grant)));
}

InterceptCaKeeper::InterceptCaKeeper(const agent::SyncedState& state, PolicyFn policy,
                                     std::string dir, Logger& log)
    : state_(state), policy_(std::move(policy)), log_(log) {
  dataplane::inject::InterceptCaOptions options;
  options.dir = std::move(dir);
  ca_ = std::make_shared<dataplane::inject::InterceptCa>(std::move(options));
  // The generation is read before the first cover: a sync that lands between the two is then
  // seen as a change by the thread, not lost until the minute's rotation check.
  const uint64_t first = state_.generation();
  Update();
  thread_ = std::thread([this, first] {
    uint64_t seen = first;
    auto last = std::chrono::steady_clock::now();
    while (!stop_.load()) {
      const uint64_t now = state_.WaitForChange(seen, std::chrono::milliseconds(500));
      // A sync change, or a minute without one (a generation may need rotating).
      if (now != seen || std::chrono::steady_clock::now() - last >= std::chrono::minutes(1)) {
        seen = now;
        last = std::chrono::steady_clock::now();
        if (!stop_.load()) Update();
      }
    }
  });
}

InterceptCaKeeper::~InterceptCaKeeper() { Stop(); }

void InterceptCaKeeper::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  (void)ca_->Cover({}, Clock::System().Now());
}

void InterceptCaKeeper::Update() {
  std::vector<std::string> names;
  std::vector<std::string> services;
  if (auto policy = policy_()) {
    for (const auto& s : policy->services()) {
      if (s->mode != dataplane::ServiceMode::kInject || !s->terminate_tls) continue;
      services.push_back(s->name);
      for (auto& n : dataplane::TlsServerNames(*s)) names.push_back(std::move(n));
    }
  }
  auto changed = ca_->Cover(names, Clock::System().Now());
  if (!changed.ok()) {
    if (changed.error().message() != last_error_) {
      last_error_ = changed.error().message();
      log_.Warn("dataplane.intercept_ca.failed",
                {{"services", services}, {"error", changed.error().message()}});
    }
    return;
  }
  last_error_.clear();
  if (*changed) {
    log_.Info("dataplane.intercept_ca", {{"services", services},
                                         {"names", ca_->names()},
                                         {"generations", ca_->Authorities().size()},
                                         {"bundle", names.empty() ? "" : ca_->bundle_file()}});
  }
}

}  // namespace sigil::cli
