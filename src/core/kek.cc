#include "core/kek.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "common/encoding.h"
#include "common/file_util.h"
#include "common/ossl.h"

namespace sigil::core {
namespace {

constexpr std::string_view kMagic = "SGS1";
constexpr size_t kKeyIdBytes = 4;
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;
constexpr size_t kHeaderBytes = 4 + kKeyIdBytes + kNonceBytes;

}  // namespace

Kek::Kek(SecretBytes key) : key_(std::move(key)) {
  auto digest = Sha256(key_.span());
  key_id_.assign(digest.begin(), digest.begin() + kKeyIdBytes);
}

Result<Kek> Kek::FromBytes(SecretBytes key) {
  if (key.size() != kKekBytes) return InvalidArgument("kek: must be exactly 32 bytes");
  return Kek(std::move(key));
}

Result<Kek> Kek::LoadOrCreate(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      return Internal("kek: stat " + path + ": " + std::strerror(errno));
    }
    SecretBytes fresh(kKekBytes);
    if (RAND_bytes(fresh.data(), static_cast<int>(fresh.size())) != 1) {
      return OsslError("kek: RAND_bytes");
    }
    SIGIL_TRY(WriteFileAtomic(path, fresh.view(), 0600, Overwrite::kRefuse));
    return Kek(std::move(fresh));
  }
  return Load(path);
}

Result<Kek> Kek::Load(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("kek: " + path + " does not exist");
    return Internal("kek: stat " + path + ": " + std::strerror(errno));
  }
  if ((st.st_mode & 0077) != 0) {
    return PermissionDenied("kek: " + path + " is accessible by group or others (chmod 600 it)");
  }
  SIGIL_ASSIGN_OR_RETURN(SecretBytes key, ReadSecretFile(path, kKekBytes + 1));
  if (key.size() != kKekBytes) {
    return InvalidArgument("kek: " + path + " must hold exactly 32 bytes, has " +
                           std::to_string(key.size()));
  }
  return Kek(std::move(key));
}

std::optional<std::string> Kek::SealedKeyId(std::span<const uint8_t> sealed) {
  if (sealed.size() < kHeaderBytes + kTagBytes ||
      std::memcmp(sealed.data(), kMagic.data(), kMagic.size()) != 0) {
    return std::nullopt;
  }
  return HexEncode(sealed.subspan(kMagic.size(), kKeyIdBytes));
}

std::string Kek::KeyId() const { return HexEncode(key_id_); }

Result<std::vector<uint8_t>> Kek::Seal(std::span<const uint8_t> plaintext,
                                       std::string_view aad) const {
  if (plaintext.size() > kMaxSealedBytes) return InvalidArgument("seal: plaintext too large");
  std::vector<uint8_t> out(kHeaderBytes + plaintext.size() + kTagBytes);
  std::memcpy(out.data(), kMagic.data(), kMagic.size());
  std::memcpy(out.data() + 4, key_id_.data(), kKeyIdBytes);
  uint8_t* nonce = out.data() + 4 + kKeyIdBytes;
  if (RAND_bytes(nonce, kNonceBytes) != 1) return OsslError("seal: RAND_bytes");
  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const uint8_t*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out.data() + kHeaderBytes, &len, plaintext.data(),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + kHeaderBytes + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes,
                          out.data() + kHeaderBytes + plaintext.size()) != 1) {
    return OsslError("seal: AES-256-GCM failed");
  }
  return out;
}

Result<SecretBytes> Kek::Open(std::span<const uint8_t> sealed, std::string_view aad) const {
  if (sealed.size() < kHeaderBytes + kTagBytes || sealed.size() > kMaxSealedBytes + 64) {
    return InvalidArgument("open: sealed blob has an impossible size");
  }
  if (std::memcmp(sealed.data(), kMagic.data(), kMagic.size()) != 0) {
    return InvalidArgument("open: not a sealed blob (bad magic)");
  }
  std::span<const uint8_t> id = sealed.subspan(4, kKeyIdBytes);
  if (!std::equal(id.begin(), id.end(), key_id_.begin())) {
    return FailedPrecondition("open: blob was sealed under KEK " + HexEncode(id) +
                              ", the configured KEK is " + KeyId());
  }
  const uint8_t* nonce = sealed.data() + 4 + kKeyIdBytes;
  size_t ct_len = sealed.size() - kHeaderBytes - kTagBytes;
  SecretBytes out(ct_len);
  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  std::vector<uint8_t> tag(sealed.end() - kTagBytes, sealed.end());
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const uint8_t*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), out.data(), &len, sealed.data() + kHeaderBytes,
                        static_cast<int>(ct_len)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) != 1) {
    return OsslError("open: AES-256-GCM setup failed");
  }
  int final_len = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), out.data() + len, &final_len) != 1) {
    ClearOsslErrors();
    return Unauthenticated("open: authentication failed (blob modified, or wrong name)");
  }
  return out;
}

}  // namespace sigil::core
