// SPIFFE ID patterns used by CredentialBinding.identities and AccessPolicy.sources:
//   spiffe://td/a/b     exactly that ID
//   spiffe://td/a/*     every ID strictly below /a (spiffe://td/a/x, spiffe://td/a/x/y)
//   spiffe://td/*       every workload ID of trust domain td
// Immutable value type; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "core/spiffe_id.h"

namespace sigil::resources {

class IdentityPattern {
 public:
  // Errors reuse core::SpiffeId::Parse's text; "*" is accepted only as the whole last
  // segment.
  static Result<IdentityPattern> Parse(std::string_view text);

  bool Matches(const core::SpiffeId& id) const;
  bool is_prefix() const { return is_prefix_; }
  const std::string& str() const { return text_; }

 private:
  IdentityPattern(core::SpiffeId base, bool is_prefix, std::string text)
      : base_(std::move(base)), is_prefix_(is_prefix), text_(std::move(text)) {}
  core::SpiffeId base_;  // the ID, or the prefix without "/*"
  bool is_prefix_;
  std::string text_;
};

}  // namespace sigil::resources
