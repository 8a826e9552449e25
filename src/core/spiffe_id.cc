#include "core/spiffe_id.h"

namespace sigil::core {
namespace {

bool IsTrustDomainChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

bool IsPathChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

// Explains why `c` may not appear, with the URI rule it would violate.
Error BadChar(std::string_view where, char c) {
  switch (c) {
    case '%':
      return InvalidArgument(std::string(where) + ": percent-encoding is not allowed");
    case '?':
      return InvalidArgument(std::string(where) + ": a query is not allowed");
    case '#':
      return InvalidArgument(std::string(where) + ": a fragment is not allowed");
    case '@':
      return InvalidArgument(std::string(where) + ": userinfo is not allowed");
    case ':':
      return InvalidArgument(std::string(where) + ": a port is not allowed");
    default:
      break;
  }
  if (c >= 'A' && c <= 'Z' && where == "trust domain") {
    return InvalidArgument("trust domain: must be lowercase");
  }
  std::string shown = (c >= 0x21 && c < 0x7f)
                          ? std::string(1, c)
                          : "byte " + std::to_string(static_cast<unsigned char>(c));
  return InvalidArgument(std::string(where) + ": character '" + shown +
                         "' is not allowed (only letters, digits, '.', '-', '_')");
}

}  // namespace

Result<void> ValidateTrustDomainName(std::string_view name) {
  if (name.empty()) return InvalidArgument("trust domain: must not be empty");
  if (name.size() > kMaxTrustDomainLength) {
    return InvalidArgument("trust domain: longer than 255 bytes");
  }
  for (char c : name) {
    if (!IsTrustDomainChar(c)) return BadChar("trust domain", c);
  }
  return Ok();
}

Result<void> ValidatePath(std::string_view path) {
  if (path.empty()) return Ok();
  if (path.front() != '/') return InvalidArgument("path: must start with '/'");
  size_t pos = 0;
  while (pos < path.size()) {
    // path[pos] == '/'
    size_t end = path.find('/', pos + 1);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(pos + 1, end - pos - 1);
    if (seg.empty()) {
      return InvalidArgument(end == path.size() ? "path: trailing '/' is not allowed"
                                                : "path: empty segment ('//') is not allowed");
    }
    if (seg == "." || seg == "..") {
      return InvalidArgument("path: '.' and '..' segments are not allowed");
    }
    for (char c : seg) {
      if (!IsPathChar(c)) return BadChar("path", c);
    }
    pos = end;
  }
  return Ok();
}

Result<TrustDomain> TrustDomain::Parse(std::string_view text) {
  if (text.find("://") != std::string_view::npos) {
    SIGIL_ASSIGN_OR_RETURN(SpiffeId id, SpiffeId::Parse(text));
    if (!id.IsTrustDomainId()) {
      return InvalidArgument("trust domain: \"" + id.str() + "\" has a path");
    }
    return id.trust_domain();
  }
  SIGIL_TRY(ValidateTrustDomainName(text));
  return TrustDomain(std::string(text));
}

Result<SpiffeId> SpiffeId::Parse(std::string_view text) {
  if (text.empty()) return InvalidArgument("spiffe id: empty");
  if (text.size() > kMaxSpiffeIdLength) {
    return InvalidArgument("spiffe id: longer than 2048 bytes");
  }
  if (!text.starts_with(kSpiffeScheme)) {
    return InvalidArgument("spiffe id: scheme must be \"spiffe://\"");
  }
  std::string_view rest = text.substr(kSpiffeScheme.size());
  size_t slash = rest.find('/');
  std::string_view td = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (td.empty()) return InvalidArgument("spiffe id: trust domain is missing");
  auto td_ok = ValidateTrustDomainName(td);
  if (!td_ok.ok()) return std::move(td_ok).error().WithContext("spiffe id");
  auto path_ok = ValidatePath(path);
  if (!path_ok.ok()) return std::move(path_ok).error().WithContext("spiffe id");
  return SpiffeId(TrustDomain(std::string(td)), std::string(path));
}

Result<SpiffeId> SpiffeId::FromPath(const TrustDomain& td, std::string_view path) {
  auto path_ok = ValidatePath(path);
  if (!path_ok.ok()) return std::move(path_ok).error().WithContext("spiffe id");
  if (td.IdString().size() + path.size() > kMaxSpiffeIdLength) {
    return InvalidArgument("spiffe id: longer than 2048 bytes");
  }
  return SpiffeId(td, std::string(path));
}

}  // namespace sigil::core
