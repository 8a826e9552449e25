// GetForX509 converts to the legacy EC_KEY/RSA objects on purpose; see key_encoding.h.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "core/key_encoding.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>

#include <array>
#include <cstring>
#include <optional>

#include "core/der.h"

namespace sigil::core::key_encoding {
namespace {

// AlgorithmIdentifier OIDs, DER-encoded (tag and length included).
constexpr uint8_t kOidEcPublicKey[] = {0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
constexpr uint8_t kOidP256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr uint8_t kOidP384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
constexpr uint8_t kOidP521[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23};
constexpr uint8_t kOidRsaEncryption[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                         0xf7, 0x0d, 0x01, 0x01, 0x01};
constexpr uint8_t kNullParams[] = {0x05, 0x00};
constexpr uint8_t kOidEd25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};

// RFC 5480 SubjectPublicKeyInfo of a named-curve key. OSSL_PKEY_PARAM_PUB_KEY carries the
// point in the key's own conversion form, as i2d_PUBKEY writes it.
std::optional<std::vector<uint8_t>> EcSpki(EVP_PKEY* key, std::span<const uint8_t> curve) {
  uint8_t point[1 + 2 * 66];
  size_t len = 0;
  if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &len) !=
      1) {
    return std::nullopt;
  }
  der::DerWriter w(32 + len);
  w.Begin(der::kSequence);
  w.Begin(der::kSequence);
  w.AddRaw(kOidEcPublicKey);
  w.AddRaw(curve);
  w.End();
  w.AddBitString({point, len});
  w.End();
  auto out = std::move(w).Finish();
  if (!out.ok()) return std::nullopt;
  return std::move(out).value();
}

// RFC 8017 A.1.1 RSAPublicKey inside an rsaEncryption SubjectPublicKeyInfo (NULL params).
std::optional<std::vector<uint8_t>> RsaSpki(EVP_PKEY* key) {
  BIGNUM* n_raw = nullptr;
  BIGNUM* e_raw = nullptr;
  EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n_raw);
  EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e_raw);
  BignumPtr n(n_raw);
  BignumPtr e(e_raw);
  if (!n || !e) return std::nullopt;
  std::vector<uint8_t> n_bytes(static_cast<size_t>(BN_num_bytes(n.get())));
  std::vector<uint8_t> e_bytes(static_cast<size_t>(BN_num_bytes(e.get())));
  BN_bn2bin(n.get(), n_bytes.data());
  BN_bn2bin(e.get(), e_bytes.data());
  der::DerWriter rsa_key(n_bytes.size() + e_bytes.size() + 16);
  rsa_key.Begin(der::kSequence);
  rsa_key.AddUnsignedInteger(n_bytes);
  rsa_key.AddUnsignedInteger(e_bytes);
  rsa_key.End();
  auto inner = std::move(rsa_key).Finish();
  if (!inner.ok()) return std::nullopt;
  der::DerWriter w(inner->size() + 32);
  w.Begin(der::kSequence);
  w.Begin(der::kSequence);
  w.AddRaw(kOidRsaEncryption);
  w.AddRaw(kNullParams);
  w.End();
  w.AddBitString(*inner);
  w.End();
  auto out = std::move(w).Finish();
  if (!out.ok()) return std::nullopt;
  return std::move(out).value();
}

// RFC 8410 section 4: no parameters, the raw 32-byte key as the BIT STRING.
std::optional<std::vector<uint8_t>> Ed25519Spki(EVP_PKEY* key) {
  uint8_t raw[32];
  size_t len = sizeof(raw);
  if (EVP_PKEY_get_raw_public_key(key, raw, &len) != 1 || len != sizeof(raw)) return std::nullopt;
  der::DerWriter w(48);
  w.Begin(der::kSequence);
  w.Begin(der::kSequence);
  w.AddRaw(kOidEd25519);
  w.End();
  w.AddBitString({raw, len});
  w.End();
  auto out = std::move(w).Finish();
  if (!out.ok()) return std::nullopt;
  return std::move(out).value();
}

std::vector<uint8_t> GenericSpki(EVP_PKEY* key) {
  unsigned char* out = nullptr;
  int len = i2d_PUBKEY(key, &out);
  if (len <= 0) {
    ClearOsslErrors();
    return {};
  }
  std::vector<uint8_t> der(out, out + len);
  OPENSSL_free(out);
  return der;
}

using EcKeyPtr = std::unique_ptr<EC_KEY, OsslFree<EC_KEY_free>>;
using EcGroupPtr = std::unique_ptr<EC_GROUP, OsslFree<EC_GROUP_free>>;
using EcPointPtr = std::unique_ptr<EC_POINT, OsslFree<EC_POINT_free>>;

// `group`'s curve built through the generic prime-field method, with its curve NID and the
// named-curve flag, so keys on it encode, compare and export to providers as the named curve.
EcGroupPtr NewGenericMethodGroup(const EC_GROUP* group) {
  BignumPtr p(BN_new()), a(BN_new()), b(BN_new());
  if (!p || !a || !b || EC_GROUP_get_curve(group, p.get(), a.get(), b.get(), nullptr) != 1) {
    return nullptr;
  }
  EcGroupPtr generic(EC_GROUP_new_curve_GFp(p.get(), a.get(), b.get(), nullptr));
  if (!generic) return nullptr;
  // Points move between the two methods only through their encoding.
  uint8_t buf[1 + 2 * 66];
  size_t len = EC_POINT_point2oct(group, EC_GROUP_get0_generator(group),
                                  POINT_CONVERSION_UNCOMPRESSED, buf, sizeof(buf), nullptr);
  EcPointPtr generator(EC_POINT_new(generic.get()));
  if (len == 0 || !generator ||
      EC_POINT_oct2point(generic.get(), generator.get(), buf, len, nullptr) != 1 ||
      EC_GROUP_set_generator(generic.get(), generator.get(), EC_GROUP_get0_order(group),
                             EC_GROUP_get0_cofactor(group)) != 1) {
    return nullptr;
  }
  EC_GROUP_set_curve_name(generic.get(), EC_GROUP_get_curve_name(group));
  EC_GROUP_set_asn1_flag(generic.get(), OPENSSL_EC_NAMED_CURVE);
  return generic;
}

// The generic-method twin of each named curve, built once per process (thread-safe static
// initialisation) and never modified afterwards; null if it could not be built.
const EC_GROUP* GenericMethodGroup(const EC_GROUP* group) {
  struct Groups {
    int nid[3] = {NID_X9_62_prime256v1, NID_secp384r1, NID_secp521r1};
    EcGroupPtr generic[3];
  };
  static const Groups groups = [] {
    Groups g;
    for (int i = 0; i < 3; ++i) {
      EcGroupPtr named(EC_GROUP_new_by_curve_name(g.nid[i]));
      if (named) g.generic[i] = NewGenericMethodGroup(named.get());
    }
    ClearOsslErrors();
    return g;
  }();
  for (int i = 0; i < 3; ++i) {
    if (groups.nid[i] == EC_GROUP_get_curve_name(group)) return groups.generic[i].get();
  }
  return nullptr;
}

// The EC key on the same named curve, but on the generic prime-field method. OpenSSL's P-256
// code (nistz256) leaves the point in Jacobian form and pays a field inversion on every
// encoding, and X509_set_pubkey encodes twice (~5 us); with the generic method the decoded
// point stays affine (~1.7 us). Null on failure (the caller falls back to the plain copy).
EcKeyPtr GenericMethodEcKey(const EC_KEY* ec) {
  const EC_GROUP* group = EC_KEY_get0_group(ec);
  const EC_POINT* point = EC_KEY_get0_public_key(ec);
  const EC_GROUP* generic = group != nullptr ? GenericMethodGroup(group) : nullptr;
  if (generic == nullptr || point == nullptr) return nullptr;
  uint8_t buf[1 + 2 * 66];
  size_t len =
      EC_POINT_point2oct(group, point, POINT_CONVERSION_UNCOMPRESSED, buf, sizeof(buf), nullptr);
  EcKeyPtr out(EC_KEY_new());
  if (len == 0 || !out || EC_KEY_set_group(out.get(), generic) != 1) return nullptr;
  EcPointPtr copy(EC_POINT_new(EC_KEY_get0_group(out.get())));
  if (!copy ||
      EC_POINT_oct2point(EC_KEY_get0_group(out.get()), copy.get(), buf, len, nullptr) != 1 ||
      EC_KEY_set_public_key(out.get(), copy.get()) != 1) {
    return nullptr;
  }
  EC_KEY_set_conv_form(out.get(), EC_KEY_get_conv_form(ec));
  return out;
}

// An EVP_PKEY around a legacy EC_KEY/RSA copy of `key`; null for other types or on failure.
}  // namespace

EvpPkeyPtr LegacyCopy(EVP_PKEY* key) {
  EvpPkeyPtr legacy(EVP_PKEY_new());
  if (!legacy) return nullptr;
  if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
    EcKeyPtr ec(EVP_PKEY_get1_EC_KEY(key));
    EcKeyPtr generic = ec ? GenericMethodEcKey(ec.get()) : nullptr;
    if (generic) ec = std::move(generic);
    if (!ec || EVP_PKEY_assign_EC_KEY(legacy.get(), ec.get()) != 1) {
      legacy.reset();
    } else {
      ec.release();  // owned by `legacy`
    }
  } else if (EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA) {
    RSA* rsa = EVP_PKEY_get1_RSA(key);
    if (rsa == nullptr || EVP_PKEY_assign_RSA(legacy.get(), rsa) != 1) {
      RSA_free(rsa);
      legacy.reset();
    }
  } else {
    legacy.reset();
  }
  ClearOsslErrors();
  return legacy;
}

std::vector<uint8_t> EncodeSpki(EVP_PKEY* key, KeyType type) {
  std::optional<std::vector<uint8_t>> fast;
  switch (type) {
    case KeyType::kEcP256:
      fast = EcSpki(key, kOidP256);
      break;
    case KeyType::kEcP384:
      fast = EcSpki(key, kOidP384);
      break;
    case KeyType::kEcP521:
      fast = EcSpki(key, kOidP521);
      break;
    case KeyType::kRsa2048:
    case KeyType::kRsa3072:
    case KeyType::kRsa4096:
      fast = RsaSpki(key);
      break;
    case KeyType::kEd25519:
      fast = Ed25519Spki(key);
      break;
  }
  if (fast) return std::move(*fast);
  ClearOsslErrors();
  return GenericSpki(key);
}

}  // namespace sigil::core::key_encoding
