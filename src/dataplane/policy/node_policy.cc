#include "dataplane/policy/node_policy.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

namespace sigil::dataplane {
namespace {

using nlohmann::json;

// Reads an optional field of the expected JSON type; a wrong type is an error naming it.
template <typename T>
Result<std::optional<T>> Optional(const json& spec, const char* field) {
  auto it = spec.find(field);
  if (it == spec.end() || it->is_null()) return std::optional<T>();
  try {
    return std::optional<T>(it->get<T>());
  } catch (const json::exception&) {
    return InvalidArgument(std::string("spec.") + field + ": wrong type");
  }
}

bool PrefixMatches(const std::array<uint8_t, 16>& net, int prefix, const uint8_t* ip) {
  const int full = prefix / 8;
  if (std::memcmp(net.data(), ip, static_cast<size_t>(full)) != 0) return false;
  const int rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (net[static_cast<size_t>(full)] & mask) == (ip[full] & mask);
}

Result<CompiledService> CompileService(const std::string& name, const std::string& spec_json) {
  json spec = json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (!spec.is_object()) return InvalidArgument("spec is not a JSON object");
  CompiledService s;
  s.name = name;
  SIGIL_ASSIGN_OR_RETURN(auto mode, Optional<std::string>(spec, "mode"));
  if (!mode) return InvalidArgument("spec.mode: missing");
  SIGIL_ASSIGN_OR_RETURN(s.mode, ParseServiceMode(*mode));
  SIGIL_ASSIGN_OR_RETURN(auto addresses, Optional<std::vector<std::string>>(spec, "addresses"));
  if (!addresses || addresses->empty()) return InvalidArgument("spec.addresses: missing");
  for (size_t i = 0; i < addresses->size(); ++i) {
    auto a = resources::ParseServiceAddress((*addresses)[i]);
    if (!a.ok()) {
      return InvalidArgument("spec.addresses[" + std::to_string(i) + "]: " + a.error().message());
    }
    s.addresses.push_back(std::move(*a));
  }
  SIGIL_ASSIGN_OR_RETURN(auto identity, Optional<std::string>(spec, "identity"));
  if (identity) {
    auto id = core::SpiffeId::Parse(*identity);
    if (!id.ok()) return InvalidArgument("spec.identity: " + id.error().message());
    s.identity = std::move(*id);
  }
  if ((s.mode == ServiceMode::kMutual || s.mode == ServiceMode::kPermissive) && !s.identity) {
    return InvalidArgument("spec.identity: required for mode " +
                           std::string(ServiceModeName(s.mode)));
  }
  SIGIL_ASSIGN_OR_RETURN(auto port, Optional<int>(spec, "inboundPort"));
  if (port) {
    if (*port < 1 || *port > 65535) return InvalidArgument("spec.inboundPort: out of range");
    s.inbound_port = static_cast<uint16_t>(*port);
  }
  SIGIL_ASSIGN_OR_RETURN(auto fwd, Optional<std::string>(spec, "peerIdentityForwarding"));
  if (fwd) {
    if (*fwd == "none") {
      s.forwarding = PeerForwarding::kNone;
    } else if (*fwd == "proxy-v2") {
      s.forwarding = PeerForwarding::kProxyV2;
    } else if (*fwd == "xfcc") {
      s.forwarding = PeerForwarding::kXfcc;
    } else {
      return InvalidArgument("spec.peerIdentityForwarding: unknown value \"" + *fwd + "\"");
    }
  }
  if (auto tls = spec.find("tls"); tls != spec.end() && tls->is_object()) {
    SIGIL_ASSIGN_OR_RETURN(auto ca, Optional<std::string>(*tls, "caBundle"));
    SIGIL_ASSIGN_OR_RETURN(auto sni, Optional<std::string>(*tls, "sni"));
    SIGIL_ASSIGN_OR_RETURN(auto verify, Optional<bool>(*tls, "verifyHostname"));
    SIGIL_ASSIGN_OR_RETURN(auto tls_port, Optional<int>(*tls, "port"));
    if (ca) s.tls.ca_bundle_pem = *ca;
    if (sni) s.tls.sni = *sni;
    if (verify) s.tls.verify_hostname = *verify;
    if (tls_port) {
      if (*tls_port < 1 || *tls_port > 65535) return InvalidArgument("spec.tls.port: out of range");
      s.tls.port = static_cast<uint16_t>(*tls_port);
    }
  }
  if (auto inject = spec.find("inject"); inject != spec.end() && inject->is_object()) {
    SIGIL_ASSIGN_OR_RETURN(auto terminate, Optional<bool>(*inject, "terminateTls"));
    s.terminate_tls = terminate.value_or(false) && s.mode == ServiceMode::kInject;
  }
  return s;
}

}  // namespace

std::vector<std::string> TlsServerNames(const CompiledService& service) {
  std::vector<std::string> out;
  auto add = [&out](std::string name) {
    for (char& c : name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    out.push_back(std::move(name));
  };
  for (const auto& a : service.addresses) {
    if (a.type == resources::ServiceAddress::Type::kDnsName) add(a.host);
  }
  if (!service.tls.sni.empty()) add(service.tls.sni);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string_view ServiceModeName(ServiceMode mode) {
  switch (mode) {
    case ServiceMode::kMutual:
      return "mutual";
    case ServiceMode::kSimple:
      return "simple";
    case ServiceMode::kPermissive:
      return "permissive";
    case ServiceMode::kInject:
      return "inject";
    case ServiceMode::kPassthrough:
      return "passthrough";
    case ServiceMode::kDeny:
      return "deny";
  }
  return "unknown";
}

Result<ServiceMode> ParseServiceMode(std::string_view text) {
  for (ServiceMode m : {ServiceMode::kMutual, ServiceMode::kSimple, ServiceMode::kPermissive,
                        ServiceMode::kInject, ServiceMode::kPassthrough, ServiceMode::kDeny}) {
    if (ServiceModeName(m) == text) return m;
  }
  return InvalidArgument("mode \"" + std::string(text) +
                         "\" is not one of mutual, simple, permissive, inject, passthrough, deny");
}

std::shared_ptr<const NodePolicy> NodePolicy::Build(const Objects& services,
                                                    const Objects& policies, Options options) {
  std::shared_ptr<NodePolicy> p(new NodePolicy());
  p->options_ = options;
  for (const auto& [name, spec] : services) {
    auto compiled = CompileService(name, spec);
    if (!compiled.ok()) {
      p->errors_.push_back("Service/" + name + ": " + compiled.error().message());
      continue;
    }
    p->services_.push_back(std::make_unique<CompiledService>(std::move(*compiled)));
    const CompiledService* s = p->services_.back().get();
    p->by_name_[s->name] = s;
    for (const auto& a : s->addresses) {
      if (a.type == resources::ServiceAddress::Type::kDnsName) continue;
      p->by_port_[a.port].push_back(
          Entry{s, a.type == resources::ServiceAddress::Type::kIpv4 ? AF_INET : AF_INET6, a.ip,
                a.prefix_length});
    }
  }
  for (auto& [port, entries] : p->by_port_) {
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& x, const Entry& y) {
      if (x.prefix_length != y.prefix_length) return x.prefix_length > y.prefix_length;
      return x.service->name < y.service->name;
    });
  }
  for (const auto& [name, spec_json] : policies) {
    json spec = json::parse(spec_json, nullptr, false);
    Rule rule;
    rule.name = name;
    std::string error;
    if (!spec.is_object()) {
      error = "spec is not a JSON object";
    } else {
      auto sources = Optional<std::vector<std::string>>(spec, "sources");
      auto destinations = Optional<std::vector<std::string>>(spec, "destinations");
      auto action = Optional<std::string>(spec, "action");
      if (!sources.ok() || !*sources || (*sources)->empty()) {
        error = "spec.sources: missing or not a list of strings";
      } else if (!destinations.ok() || !*destinations || (*destinations)->empty()) {
        error = "spec.destinations: missing or not a list of strings";
      } else if (!action.ok() || (*action && **action != "allow" && **action != "deny")) {
        error = "spec.action: must be allow or deny";
      } else {
        rule.allow = !*action || **action == "allow";
        rule.destinations = **destinations;
        for (const auto& text : **sources) {
          auto pattern = resources::IdentityPattern::Parse(text);
          if (!pattern.ok()) {
            error = "spec.sources: " + pattern.error().message();
            break;
          }
          rule.sources.push_back(std::move(*pattern));
        }
      }
    }
    if (!error.empty()) {
      p->errors_.push_back("AccessPolicy/" + name + ": " + error);
      continue;
    }
    p->rules_.push_back(std::move(rule));
  }
  return p;
}

const CompiledService* NodePolicy::MatchWhere(const Destination& dst, bool inbound_only) const {
  auto it = by_port_.find(dst.port);
  if (it == by_port_.end()) return nullptr;
  for (const Entry& e : it->second) {
    if (e.family != dst.family) continue;
    if (inbound_only && e.service->mode != ServiceMode::kMutual &&
        e.service->mode != ServiceMode::kPermissive) {
      continue;
    }
    if (PrefixMatches(e.ip, e.prefix_length, dst.ip.data())) return e.service;
  }
  return nullptr;
}

const CompiledService* NodePolicy::Match(const Destination& dst) const {
  return MatchWhere(dst, false);
}

const CompiledService* NodePolicy::MatchInbound(const Destination& local) const {
  return MatchWhere(local, true);
}

const CompiledService* NodePolicy::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

AccessDecision NodePolicy::Authorize(const core::SpiffeId& source,
                                     const CompiledService& service) const {
  const Rule* allow = nullptr;
  for (const Rule& rule : rules_) {
    if (std::find(rule.destinations.begin(), rule.destinations.end(), service.name) ==
        rule.destinations.end()) {
      continue;
    }
    const bool matches = std::any_of(rule.sources.begin(), rule.sources.end(),
                                     [&](const auto& p) { return p.Matches(source); });
    if (!matches) continue;
    if (!rule.allow) {
      return {false, rule.name, "denied by AccessPolicy " + rule.name};
    }
    if (allow == nullptr) allow = &rule;
  }
  if (allow != nullptr) return {true, allow->name, "allowed by AccessPolicy " + allow->name};
  return {false, "", "no AccessPolicy allows " + source.str() + " to reach " + service.name};
}

}  // namespace sigil::dataplane
