#include "core/keys.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <array>
#include <cstring>
#include <optional>

#include "common/encoding.h"
#include "core/der.h"
#include "core/key_encoding.h"

namespace sigil::core {
namespace {

using key_encoding::EncodeSpki;
using key_encoding::LegacyCopy;

struct KeyTypeInfo {
  KeyType type;
  std::string_view name;
};
constexpr std::array<KeyTypeInfo, 7> kKeyTypes = {{
    {KeyType::kEcP256, "ec-p256"},
    {KeyType::kEcP384, "ec-p384"},
    {KeyType::kEcP521, "ec-p521"},
    {KeyType::kRsa2048, "rsa-2048"},
    {KeyType::kRsa3072, "rsa-3072"},
    {KeyType::kRsa4096, "rsa-4096"},
    {KeyType::kEd25519, "ed25519"},
}};

BioPtr MemBio(std::span<const uint8_t> bytes) {
  return BioPtr(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
}

std::string_view BioContents(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return {data, static_cast<size_t>(len)};
}

}  // namespace

std::string_view KeyTypeName(KeyType type) {
  for (const auto& info : kKeyTypes) {
    if (info.type == type) return info.name;
  }
  return "unknown";
}

Result<KeyType> ParseKeyType(std::string_view name) {
  for (const auto& info : kKeyTypes) {
    if (info.name == name) return info.type;
  }
  return InvalidArgument("key type \"" + std::string(name) +
                         "\" is not one of ec-p256, ec-p384, ec-p521, rsa-2048, rsa-3072, "
                         "rsa-4096, ed25519");
}

Result<KeyType> ClassifyKey(const EVP_PKEY* key) {
  if (key == nullptr) return InvalidArgument("key: missing");
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC: {
      char group[64] = {};
      size_t len = 0;
      if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                         &len) != 1) {
        ClearOsslErrors();
        return InvalidArgument("key: EC key without a named curve");
      }
      std::string_view g(group, len);
      if (g == "prime256v1" || g == "P-256") return KeyType::kEcP256;
      if (g == "secp384r1" || g == "P-384") return KeyType::kEcP384;
      if (g == "secp521r1" || g == "P-521") return KeyType::kEcP521;
      return InvalidArgument("key: EC curve \"" + std::string(g) + "\" is not allowed");
    }
    case EVP_PKEY_RSA: {
      int bits = EVP_PKEY_get_bits(key);
      if (bits == 2048) return KeyType::kRsa2048;
      if (bits == 3072) return KeyType::kRsa3072;
      if (bits == 4096) return KeyType::kRsa4096;
      return InvalidArgument("key: RSA modulus of " + std::to_string(bits) +
                             " bits is not allowed (2048, 3072 or 4096)");
    }
    case EVP_PKEY_ED25519:
      return KeyType::kEd25519;
    default:
      return InvalidArgument("key: algorithm is not allowed (EC, RSA or Ed25519 only)");
  }
}

const EVP_MD* DefaultDigestFor(KeyType type) {
  switch (type) {
    case KeyType::kEcP384:
      return EVP_sha384();
    case KeyType::kEcP521:
      return EVP_sha512();
    case KeyType::kEd25519:
      return nullptr;
    default:
      return EVP_sha256();
  }
}

// ---- PublicKey ----

Result<PublicKey> PublicKey::FromEvp(EVP_PKEY* key) {
  SIGIL_ASSIGN_OR_RETURN(KeyType type, ClassifyKey(key));
  EVP_PKEY_up_ref(key);
  return PublicKey(EvpPkeyPtr(key), type);
}

Result<PublicKey> PublicKey::FromDer(std::span<const uint8_t> der) {
  if (der.size() > kMaxKeyInputBytes) return InvalidArgument("public key: input too large");
  SIGIL_ASSIGN_OR_RETURN(EvpPkeyPtr key, D2iExact<EvpPkeyPtr>(d2i_PUBKEY, der, "public key"));
  SIGIL_ASSIGN_OR_RETURN(KeyType type, ClassifyKey(key.get()));
  return PublicKey(std::move(key), type);
}

Result<PublicKey> PublicKey::FromPem(std::string_view pem) {
  if (pem.size() > kMaxKeyInputBytes) return InvalidArgument("public key: input too large");
  BioPtr bio = MemBio(AsBytes(pem));
  EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return OsslError("public key: no PUBLIC KEY PEM block", ErrorCode::kInvalidArgument);
  SIGIL_ASSIGN_OR_RETURN(KeyType type, ClassifyKey(key.get()));
  return PublicKey(std::move(key), type);
}

PublicKey::PublicKey(EvpPkeyPtr key, KeyType type, std::vector<uint8_t> spki_der)
    : PublicKey(std::move(key), type) {
  std::call_once(cache_->spki_once, [&] { cache_->spki = std::move(spki_der); });
}

PublicKey::PublicKey(const PublicKey& other) : type_(other.type_), cache_(other.cache_) {
  EVP_PKEY_up_ref(other.key_.get());
  key_.reset(other.key_.get());
}

PublicKey& PublicKey::operator=(const PublicKey& other) {
  if (this != &other) {
    EVP_PKEY_up_ref(other.key_.get());
    key_.reset(other.key_.get());
    type_ = other.type_;
    cache_ = other.cache_;
  }
  return *this;
}

std::span<const uint8_t> PublicKey::SpkiDer() const {
  if (!cache_) return {};  // moved-from
  std::call_once(cache_->spki_once, [this] { cache_->spki = EncodeSpki(key_.get(), type_); });
  return cache_->spki;
}

EVP_PKEY* PublicKey::GetForX509() const {
  if (!cache_) return key_.get();  // moved-from
  std::call_once(cache_->legacy_once, [this] { cache_->legacy = LegacyCopy(key_.get()); });
  return cache_->legacy ? cache_->legacy.get() : key_.get();
}

std::vector<uint8_t> PublicKey::ToDer() const {
  std::span<const uint8_t> der = SpkiDer();
  return {der.begin(), der.end()};
}

std::string PublicKey::ToPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key_.get());
  return std::string(BioContents(bio.get()));
}

std::string PublicKey::Fingerprint() const { return Sha256Hex(SpkiDer()); }

bool PublicKey::Equals(const PublicKey& other) const {
  return EVP_PKEY_eq(key_.get(), other.key_.get()) == 1;
}

// ---- PrivateKey ----

Result<PrivateKey> PrivateKey::Generate(KeyType type) {
  EvpPkeyPtr key;
  switch (type) {
    case KeyType::kEcP256:
      key.reset(EVP_EC_gen("P-256"));
      break;
    case KeyType::kEcP384:
      key.reset(EVP_EC_gen("P-384"));
      break;
    case KeyType::kEcP521:
      key.reset(EVP_EC_gen("P-521"));
      break;
    case KeyType::kRsa2048:
      key.reset(EVP_RSA_gen(2048));
      break;
    case KeyType::kRsa3072:
      key.reset(EVP_RSA_gen(3072));
      break;
    case KeyType::kRsa4096:
      key.reset(EVP_RSA_gen(4096));
      break;
    case KeyType::kEd25519: {
      EVP_PKEY* raw = nullptr;
      EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
      if (ctx && EVP_PKEY_keygen_init(ctx.get()) == 1 && EVP_PKEY_keygen(ctx.get(), &raw) == 1) {
        key.reset(raw);
      }
      break;
    }
  }
  if (!key) return OsslError("key generation (" + std::string(KeyTypeName(type)) + ") failed");
  return PrivateKey(std::move(key), type);
}

Result<PrivateKey> PrivateKey::FromPkcs8Der(std::span<const uint8_t> der) {
  if (der.size() > kMaxKeyInputBytes) return InvalidArgument("private key: input too large");
  SIGIL_ASSIGN_OR_RETURN(EvpPkeyPtr key,
                         D2iExact<EvpPkeyPtr>(d2i_AutoPrivateKey, der, "private key"));
  SIGIL_ASSIGN_OR_RETURN(KeyType type, ClassifyKey(key.get()));
  return PrivateKey(std::move(key), type);
}

Result<PrivateKey> PrivateKey::FromPem(std::string_view pem) {
  if (pem.size() > kMaxKeyInputBytes) return InvalidArgument("private key: input too large");
  BioPtr bio = MemBio(AsBytes(pem));
  // A null passphrase callback that refuses: encrypted keys are reported, never prompted for.
  auto no_pass = [](char*, int, int, void*) -> int { return -1; };
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_pass, nullptr));
  if (!key) {
    return OsslError("private key: no unencrypted PRIVATE KEY PEM block",
                     ErrorCode::kInvalidArgument);
  }
  SIGIL_ASSIGN_OR_RETURN(KeyType type, ClassifyKey(key.get()));
  return PrivateKey(std::move(key), type);
}

PublicKey PrivateKey::Public() const {
  // Re-encode the public half so the PublicKey never references private material; the
  // encoding doubles as the new key's cached SubjectPublicKeyInfo.
  std::vector<uint8_t> spki = EncodeSpki(key_.get(), type_);
  const unsigned char* p = spki.data();
  EvpPkeyPtr pub(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
  if (!pub) std::abort();  // re-parsing our own encoding cannot fail short of OOM
  return PublicKey(std::move(pub), type_, std::move(spki));
}

Result<SecretBytes> PrivateKey::ToPkcs8Der() const {
  // i2d_PrivateKey writes PKCS#8 for EC/Ed25519 only in some versions; go through the
  // PKCS8_PRIV_KEY_INFO explicitly so every type yields unencrypted PKCS#8.
  std::unique_ptr<PKCS8_PRIV_KEY_INFO, OsslFree<PKCS8_PRIV_KEY_INFO_free>> p8(
      EVP_PKEY2PKCS8(key_.get()));
  if (!p8) return OsslError("private key: PKCS#8 encoding failed");
  int len = i2d_PKCS8_PRIV_KEY_INFO(p8.get(), nullptr);
  if (len <= 0) return OsslError("private key: PKCS#8 encoding failed");
  SecretBytes out(static_cast<size_t>(len));
  unsigned char* p = out.data();
  if (i2d_PKCS8_PRIV_KEY_INFO(p8.get(), &p) != len) {
    return OsslError("private key: PKCS#8 encoding failed");
  }
  return out;
}

Result<SecretBytes> PrivateKey::ToPkcs8Pem() const {
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio || PEM_write_bio_PKCS8PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr,
                                            nullptr) != 1) {
    return OsslError("private key: PEM encoding failed");
  }
  return SecretBytes::Copy(BioContents(bio.get()));
}

Result<std::vector<uint8_t>> PrivateKey::Sign(std::span<const uint8_t> data, const EVP_MD* md,
                                              bool rsa_pss) const {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  const EVP_MD* digest = type_ == KeyType::kEd25519 ? nullptr : md;
  if (!ctx || EVP_DigestSignInit(ctx.get(), &pctx, digest, nullptr, key_.get()) != 1) {
    return OsslError("sign: init failed");
  }
  if (rsa_pss && EVP_PKEY_get_base_id(key_.get()) == EVP_PKEY_RSA) {
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1) {
      return OsslError("sign: PSS setup failed");
    }
  }
  size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, data.data(), data.size()) != 1) {
    return OsslError("sign: sizing failed");
  }
  std::vector<uint8_t> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, data.data(), data.size()) != 1) {
    return OsslError("sign: failed");
  }
  sig.resize(len);
  return sig;
}

Result<void> VerifySignature(const PublicKey& key, std::span<const uint8_t> data,
                             std::span<const uint8_t> signature, const EVP_MD* md, bool rsa_pss) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  const EVP_MD* digest = key.type() == KeyType::kEd25519 ? nullptr : md;
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), &pctx, digest, nullptr, key.get()) != 1) {
    return OsslError("verify: init failed");
  }
  if (rsa_pss && EVP_PKEY_get_base_id(key.get()) == EVP_PKEY_RSA) {
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1) {
      return OsslError("verify: PSS setup failed");
    }
  }
  int rc =
      EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), data.data(), data.size());
  if (rc != 1) {
    ClearOsslErrors();
    return Unauthenticated("signature verification failed");
  }
  return Ok();
}

}  // namespace sigil::core
