#include "resources/identity_pattern.h"

#include "resources/syntax.h"

namespace sigil::resources {

Result<IdentityPattern> IdentityPattern::Parse(std::string_view text) {
  bool prefix = text.ends_with("/*");
  std::string_view base = prefix ? text.substr(0, text.size() - 2) : text;
  if (base.find('*') != std::string_view::npos) {
    return InvalidArgument(
        internal::Quote(text) +
        ": '*' is allowed only as the whole last segment (\"spiffe://td/ns/*\")");
  }
  auto id = core::SpiffeId::Parse(base);
  if (!id.ok()) return InvalidArgument(internal::Quote(text) + ": " + id.error().message());
  if (!prefix && id->IsTrustDomainId()) {
    return InvalidArgument(internal::Quote(text) +
                           ": names a trust domain, not a workload (use \"" + id->str() +
                           "/*\" for every workload in it)");
  }
  std::string canonical = id->str() + (prefix ? "/*" : "");
  return IdentityPattern(std::move(id).value(), prefix, std::move(canonical));
}

bool IdentityPattern::Matches(const core::SpiffeId& id) const {
  if (!is_prefix_) return id == base_;
  if (id.trust_domain() != base_.trust_domain()) return false;
  const std::string& want = base_.path();
  const std::string& have = id.path();
  return have.size() > want.size() && have.starts_with(want) && have[want.size()] == '/';
}

}  // namespace sigil::resources
