// Service spec: mode-dependent fields.
#include "core/spiffe_id.h"
#include "resources/address.h"
#include "resources/kinds.h"
#include "resources/syntax.h"

namespace sigil::resources::internal {
namespace {

constexpr int64_t kDefaultInboundPort = 15008;

// Upstream TLS settings for modes that originate TLS (simple, inject).
void ReadUpstreamTls(ObjectReader& spec, nlohmann::json& out) {
  nlohmann::json tls = nlohmann::json::object();
  tls["verifyHostname"] = true;
  if (auto t = spec.Child("tls", Need::kOptional)) {
    ReadCaBundle(*t, "caBundle", tls);
    if (auto sni = t->String("sni", Need::kOptional, "a DNS name")) {
      auto ok = ValidateDnsName(*sni, /*allow_wildcard=*/false);
      if (ok.ok()) {
        tls["sni"] = *sni;
      } else {
        t->Report("sni", ok.error().message());
      }
    }
    if (auto v = t->Bool("verifyHostname")) tls["verifyHostname"] = *v;
    if (auto p = t->Integer("port", Need::kOptional, 1, 65535)) tls["port"] = *p;
    t->RejectUnknown();
  }
  out["tls"] = std::move(tls);
}

// Inbound settings for modes where a Sigil agent terminates mTLS (mutual, permissive).
void ReadInbound(ObjectReader& spec, nlohmann::json& out) {
  if (auto id = spec.String("identity", Need::kRequired, "a SPIFFE ID string")) {
    auto parsed = core::SpiffeId::Parse(*id);
    if (!parsed.ok()) {
      spec.Report("identity", parsed.error().message());
    } else if (parsed->IsTrustDomainId()) {
      spec.Report("identity", "spiffe id: a workload identity needs a path");
    } else {
      out["identity"] = parsed->str();
    }
  }
  out["inboundPort"] = kDefaultInboundPort;
  if (auto p = spec.Integer("inboundPort", Need::kOptional, 1, 65535)) out["inboundPort"] = *p;
  out["peerIdentityForwarding"] = "none";
  if (auto f = spec.Enum("peerIdentityForwarding", Need::kOptional, {"none", "proxy-v2", "xfcc"})) {
    out["peerIdentityForwarding"] = *f;
  }
}

// inject: how the workload reaches the agent. terminateTls (default false): the workload
// speaks HTTPS and the agent terminates it with a node-local CA (docs/injection.md, "TLS
// interception"), which needs a DNS name to present a certificate for.
void ReadInject(ObjectReader& spec, nlohmann::json& out) {
  auto inject = spec.Child("inject", Need::kOptional);
  if (!inject) return;
  nlohmann::json o = nlohmann::json::object();
  const bool terminate = inject->Bool("terminateTls").value_or(false);
  o["terminateTls"] = terminate;
  if (terminate) {
    bool named = out.contains("tls") && out["tls"].contains("sni");
    for (const auto& a : out.value("addresses", nlohmann::json::array())) {
      auto parsed = ParseServiceAddress(a.get<std::string>());
      named = named || (parsed.ok() && parsed->type == ServiceAddress::Type::kDnsName);
    }
    if (!named) {
      inject->Report("terminateTls",
                     "needs a DNS name for the workload to ask for: a DNS-name address (like "
                     "\"api.example.com:443\") or tls.sni");
    }
  }
  inject->RejectUnknown();
  out["inject"] = std::move(o);
}

}  // namespace

nlohmann::json ValidateService(ObjectReader& spec) {
  nlohmann::json out = nlohmann::json::object();
  auto mode = spec.Enum("mode", Need::kRequired,
                        {"mutual", "simple", "permissive", "inject", "passthrough", "deny"});
  if (auto addrs = spec.StringList("addresses", 1, "an address like \"api.example.com:443\"")) {
    if (CanonicalList(*addrs, spec.PathOf("addresses"), spec.problems(), true,
                      [](const std::string& s) -> Result<std::string> {
                        SIGIL_ASSIGN_OR_RETURN(auto a, ParseServiceAddress(s));
                        return a.str();
                      })) {
      out["addresses"] = *addrs;
    }
  }
  if (!mode) {
    // Without a valid mode the mode-specific fields cannot be judged; accept their names.
    spec.RejectUnknown({"identity", "inboundPort", "peerIdentityForwarding", "tls", "inject"});
    return out;
  }
  out["mode"] = *mode;
  std::string reason = "mode is \"" + *mode + "\"";
  bool inbound = *mode == "mutual" || *mode == "permissive";
  bool originates_tls = *mode == "simple" || *mode == "inject";
  if (inbound) {
    ReadInbound(spec, out);
  } else {
    for (auto k : {"identity", "inboundPort", "peerIdentityForwarding"}) spec.Forbid(k, reason);
  }
  if (originates_tls) {
    ReadUpstreamTls(spec, out);
  } else {
    spec.Forbid("tls", reason);
  }
  if (*mode == "inject") {
    ReadInject(spec, out);
  } else {
    spec.Forbid("inject", reason);
  }
  spec.RejectUnknown();
  return out;
}

}  // namespace sigil::resources::internal
