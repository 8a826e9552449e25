#include "resources/selector.h"

#include <algorithm>
#include <array>

#include "resources/syntax.h"

namespace sigil::resources {
namespace {

using internal::Quote;

constexpr uint64_t kMaxId = 4294967294;  // (uid_t)-1 means "no id"

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

Result<std::string> Id(std::string_view v) {
  if (!internal::ParseDecimal(v, kMaxId)) {
    return InvalidArgument("must be a decimal number 0-4294967294");
  }
  return std::string(v);
}

Result<std::string> UnixName(std::string_view v) {
  if (v.empty() || v.size() > 32 || v.front() == '-' ||
      !std::all_of(v.begin(), v.end(), IsNameChar)) {
    return InvalidArgument(
        "must be a user or group name ([A-Za-z0-9._-], at most 32, not "
        "starting with '-')");
  }
  return std::string(v);
}

Result<std::string> FilePath(std::string_view v) {
  SIGIL_TRY(internal::ValidateAbsolutePath(v, /*allow_root=*/false));
  return std::string(v);
}

Result<std::string> CgroupPath(std::string_view v) {
  SIGIL_TRY(internal::ValidateAbsolutePath(v, /*allow_root=*/true));
  return std::string(v);
}

Result<std::string> Hex64(std::string_view v) {
  if (v.size() != 64 || !internal::IsHex(v)) return InvalidArgument("must be 64 hex digits");
  return internal::ToLower(v);
}

Result<std::string> DnsLabel(std::string_view v) {
  SIGIL_TRY(internal::ValidateName(v));
  return std::string(v);
}

Result<std::string> DnsSubdomain(std::string_view v) {
  SIGIL_TRY(internal::ValidateDnsName(v, /*allow_wildcard=*/false));
  return std::string(v);
}

Result<std::string> Uuid(std::string_view v) {
  bool ok = v.size() == 36;
  for (size_t i = 0; ok && i < v.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    ok = dash ? v[i] == '-' : internal::IsHex(v.substr(i, 1));
  }
  if (!ok) return InvalidArgument("must be a UUID (8-4-4-4-12 hex digits)");
  return internal::ToLower(v);
}

Result<std::string> LabelPair(std::string_view v) {
  size_t colon = v.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return InvalidArgument("must be KEY:VALUE");
  }
  std::string_view key = v.substr(0, colon);
  std::string_view value = v.substr(colon + 1);
  bool key_ok = key.size() <= 253 && std::all_of(key.begin(), key.end(),
                                                 [](char c) { return IsNameChar(c) || c == '/'; });
  bool value_ok = value.size() <= 63 && std::all_of(value.begin(), value.end(), IsNameChar);
  if (!key_ok || !value_ok) return InvalidArgument("is not a valid Kubernetes label KEY:VALUE");
  return std::string(v);
}

Result<std::string> Image(std::string_view v) {
  if (v.empty() || v.size() > 512 || !internal::IsPrintable(v) ||
      v.find(' ') != std::string_view::npos) {
    return InvalidArgument("must be an image reference (printable, no spaces)");
  }
  return std::string(v);
}

struct SelectorType {
  std::string_view type;
  Result<std::string> (*check)(std::string_view);
};

constexpr std::array<SelectorType, 16> kTypes = {{
    {"unix:uid", Id},
    {"unix:gid", Id},
    {"unix:user", UnixName},
    {"unix:group", UnixName},
    {"unix:path", FilePath},
    {"unix:sha256", Hex64},
    {"cgroup", CgroupPath},
    {"container", Hex64},
    {"k8s:ns", DnsLabel},
    {"k8s:sa", DnsSubdomain},
    {"k8s:pod-name", DnsSubdomain},
    {"k8s:pod-uid", Uuid},
    {"k8s:pod-label", LabelPair},
    {"k8s:container-name", DnsLabel},
    {"k8s:container-image", Image},
    {"k8s:node-name", DnsSubdomain},
}};

}  // namespace

Result<std::string> CanonicalSelector(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return InvalidArgument(Quote(text) +
                           " is not a selector (expected type:value, like "
                           "\"unix:uid:1000\")");
  }
  std::string_view family = text.substr(0, colon);
  size_t type_end = colon;
  if (family == "unix" || family == "k8s") type_end = text.find(':', colon + 1);
  std::string_view type = text.substr(0, type_end);
  const SelectorType* known = nullptr;
  for (const auto& t : kTypes) {
    if (t.type == type) known = &t;
  }
  if (known == nullptr || type_end == std::string_view::npos) {
    std::string list;
    for (const auto& t : kTypes) list += (list.empty() ? "" : ", ") + std::string(t.type);
    return InvalidArgument(Quote(text) + ": unknown selector type " + Quote(type) +
                           " (known: " + list + ")");
  }
  std::string_view value = text.substr(type_end + 1);
  auto v = known->check(value);
  if (!v.ok()) {
    return InvalidArgument(Quote(text) + ": " + std::string(type) + " value " +
                           v.error().message());
  }
  return std::string(type) + ":" + *v;
}

bool SelectorSatisfiedBy(std::string_view required, std::string_view attested) {
  constexpr std::string_view kCgroup = "cgroup:";
  if (!required.starts_with(kCgroup)) return required == attested;
  if (!attested.starts_with(kCgroup)) return false;
  std::string_view want = required.substr(kCgroup.size());
  std::string_view have = attested.substr(kCgroup.size());
  if (want == "/") return true;
  return have.starts_with(want) && (have.size() == want.size() || have[want.size()] == '/');
}

bool SelectorsMatch(std::span<const std::string> required, std::span<const std::string> attested) {
  if (required.empty()) return false;
  return std::all_of(required.begin(), required.end(), [&](const std::string& r) {
    return std::any_of(attested.begin(), attested.end(),
                       [&](const std::string& a) { return SelectorSatisfiedBy(r, a); });
  });
}

}  // namespace sigil::resources
