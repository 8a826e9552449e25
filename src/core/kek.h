// Kek: the server's key-encryption key and the sealed-blob format for secrets at rest.
//
// Sealed blob: "SGS1" || key_id(4) || nonce(12) || AES-256-GCM ciphertext || tag(16), where
// key_id is the first 4 bytes of SHA-256(KEK) and the blob's name is the additional
// authenticated data, so a sealed value cannot be moved to another row undetected. A blob
// sealed under another KEK fails with an error naming both key ids.
//
// Thread-safe (const methods only after construction).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/secret_bytes.h"

namespace sigil::core {

inline constexpr size_t kKekBytes = 32;
inline constexpr size_t kMaxSealedBytes = size_t{16} * 1024 * 1024;

class Kek {
 public:
  // Reads a 32-byte KEK from `path`; if the file does not exist, creates it (0600) with fresh
  // random bytes. Refuses a file that is group/world accessible or not exactly 32 bytes.
  static Result<Kek> LoadOrCreate(const std::string& path);
  // The same checks, but a missing file is NotFound (never a new key): for a store that already
  // holds blobs sealed under some KEK.
  static Result<Kek> Load(const std::string& path);
  static Result<Kek> FromBytes(SecretBytes key);
  // Lowercase hex of the key id a sealed blob names (no key needed); nullopt if `sealed` is
  // not a sealed blob.
  static std::optional<std::string> SealedKeyId(std::span<const uint8_t> sealed);

  // Lowercase hex of the 4-byte key id.
  std::string KeyId() const;

  Result<std::vector<uint8_t>> Seal(std::span<const uint8_t> plaintext, std::string_view aad) const;
  Result<SecretBytes> Open(std::span<const uint8_t> sealed, std::string_view aad) const;

 private:
  explicit Kek(SecretBytes key);
  SecretBytes key_;
  std::vector<uint8_t> key_id_;
};

}  // namespace sigil::core
