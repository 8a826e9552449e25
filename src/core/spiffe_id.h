// SPIFFE IDs and trust domains (SPIFFE-ID standard; spiffe-reference.md section 1).
//
// Parsing is strict and total: every rule of the standard is enforced and every rejection
// names the rule that failed. Values are immutable and cheap to copy; thread-safe.
#pragma once

#include <compare>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sigil::core {

inline constexpr std::string_view kSpiffeScheme = "spiffe://";
inline constexpr size_t kMaxTrustDomainLength = 255;
inline constexpr size_t kMaxSpiffeIdLength = 2048;

class TrustDomain {
 public:
  // Accepts a bare name ("example.org") or the trust domain's ID ("spiffe://example.org").
  static Result<TrustDomain> Parse(std::string_view text);

  const std::string& name() const { return name_; }
  // "spiffe://example.org": the trust domain's own SPIFFE ID (used on CA certificates).
  std::string IdString() const { return std::string(kSpiffeScheme) + name_; }

  auto operator<=>(const TrustDomain&) const = default;

 private:
  friend class SpiffeId;
  explicit TrustDomain(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

class SpiffeId {
 public:
  static Result<SpiffeId> Parse(std::string_view text);
  // `path` is empty (the trust domain's ID) or "/seg/seg...".
  static Result<SpiffeId> FromPath(const TrustDomain& td, std::string_view path);

  const TrustDomain& trust_domain() const { return td_; }
  const std::string& path() const { return path_; }
  // An ID with no path names the trust domain itself; such an ID never identifies a workload.
  bool IsTrustDomainId() const { return path_.empty(); }
  bool IsMemberOf(const TrustDomain& td) const { return td_ == td; }
  std::string str() const { return td_.IdString() + path_; }

  auto operator<=>(const SpiffeId&) const = default;

 private:
  SpiffeId(TrustDomain td, std::string path) : td_(std::move(td)), path_(std::move(path)) {}
  TrustDomain td_;
  std::string path_;
};

// Validates the characters of a trust domain name (no scheme). Exposed for config parsing.
Result<void> ValidateTrustDomainName(std::string_view name);
// Validates a SPIFFE ID path ("" or "/a/b").
Result<void> ValidatePath(std::string_view path);

}  // namespace sigil::core
