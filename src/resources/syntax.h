// Lexical checks shared by the resource validators. Internal to sigil_resources (tested).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sigil::resources::internal {

// metadata.name and references to it: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 bytes.
Result<void> ValidateName(std::string_view name);
// RFC 1123 host name, lowercase, <= 253 bytes, labels <= 63; "*." first label if allowed.
Result<void> ValidateDnsName(std::string_view name, bool allow_wildcard);
// RFC 9110 token (header field names).
bool IsHttpToken(std::string_view s);
bool IsHex(std::string_view s);
std::string ToLower(std::string_view s);
// Decimal without sign or leading zeros ("0" allowed); nullopt when not one or > max.
std::optional<uint64_t> ParseDecimal(std::string_view s, uint64_t max);
// Absolute, normalised path: starts with '/', no empty, "." or ".." segments, no trailing
// '/' (except "/" itself when allow_root), no control bytes, <= 4096 bytes.
Result<void> ValidateAbsolutePath(std::string_view path, bool allow_root);
// Printable text: no control characters (tab allowed when allow_tab).
bool IsPrintable(std::string_view s, bool allow_tab = false);
// "\"text\"" with non-printable bytes escaped and long text elided; for error messages.
std::string Quote(std::string_view s);

}  // namespace sigil::resources::internal
