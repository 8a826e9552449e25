#include "core/join_token.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/encoding.h"
#include "common/ossl.h"

namespace sigil::core {
namespace {

constexpr std::string_view kPrefix = "SJT1.";
constexpr size_t kIdChars = 8;
constexpr size_t kSecretChars = 32;  // 24 bytes of base64url
constexpr size_t kHashChars = 64;

bool AllOf(std::string_view s, bool (*pred)(char)) {
  for (char c : s) {
    if (!pred(c)) return false;
  }
  return true;
}
bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
bool IsBase64Url(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

}  // namespace

Result<JoinToken> JoinToken::Generate(const Certificate& ca_root) {
  uint8_t id_bytes[kIdChars / 2];
  SecretBytes raw(kSecretChars * 3 / 4);
  if (RAND_bytes(id_bytes, sizeof(id_bytes)) != 1 ||
      RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    return OsslError("join token: RAND_bytes");
  }
  std::string encoded = Base64UrlEncode(raw.span());
  SecretBytes secret = SecretBytes::Copy(encoded);
  OPENSSL_cleanse(encoded.data(), encoded.size());
  return JoinToken(HexEncode(id_bytes), std::move(secret), ca_root.Fingerprint());
}

Result<JoinToken> JoinToken::Parse(std::string_view text) {
  // Surrounding whitespace from copy/paste is forgiven; nothing else is.
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.remove_suffix(1);
  }
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  if (!text.starts_with(kPrefix)) {
    return InvalidArgument("join token: does not start with \"SJT1.\" (not a Sigil join token)");
  }
  text.remove_prefix(kPrefix.size());
  if (text.size() != kIdChars + 1 + kSecretChars + 1 + kHashChars || text[kIdChars] != '.' ||
      text[kIdChars + 1 + kSecretChars] != '.') {
    return InvalidArgument("join token: malformed (expected SJT1.<8 hex>.<32 chars>.<64 hex>)");
  }
  std::string_view id = text.substr(0, kIdChars);
  std::string_view secret = text.substr(kIdChars + 1, kSecretChars);
  std::string_view hash = text.substr(kIdChars + 2 + kSecretChars);
  if (!AllOf(id, IsLowerHex)) return InvalidArgument("join token: id is not lowercase hex");
  if (!AllOf(secret, IsBase64Url)) return InvalidArgument("join token: secret part is malformed");
  if (!AllOf(hash, IsLowerHex)) {
    return InvalidArgument("join token: CA hash is not 64 lowercase hex digits");
  }
  return JoinToken(std::string(id), SecretBytes::Copy(secret), std::string(hash));
}

SecretBytes JoinToken::Text() const {
  std::string_view parts[] = {kPrefix, id_, ".", secret_.view(), ".", ca_sha256_};
  size_t n = 0;
  for (auto p : parts) n += p.size();
  SecretBytes out(n);
  size_t at = 0;
  for (auto p : parts) {
    std::copy(p.begin(), p.end(), out.data() + at);
    at += p.size();
  }
  return out;
}

std::string JoinToken::StorageHash() const {
  SecretBytes material(id_.size() + 1 + secret_.size());
  std::copy(id_.begin(), id_.end(), material.data());
  material.data()[id_.size()] = '.';
  std::copy(secret_.data(), secret_.data() + secret_.size(), material.data() + id_.size() + 1);
  return Sha256Hex(material.span());
}

bool JoinToken::PinsCa(const Certificate& root) const {
  std::string actual = root.Fingerprint();
  return actual.size() == ca_sha256_.size() &&
         CRYPTO_memcmp(actual.data(), ca_sha256_.data(), actual.size()) == 0;
}

}  // namespace sigil::core
