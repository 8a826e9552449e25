#include "agent/custody/workload_key.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#include "core/csr.h"

namespace sigil::agent::custody {
namespace {

constexpr size_t kScalarBytes = 32;
constexpr size_t kPointBytes = 65;  // 0x04 || X || Y

// DER up to the private scalar (see kP256Pkcs8DerSize):
//   30 81 87                                 PrivateKeyInfo, 135 bytes
//     02 01 00                               version 0
//     30 13 06 07 2a8648ce3d0201             AlgorithmIdentifier: id-ecPublicKey,
//           06 08 2a8648ce3d030107                                prime256v1
//     04 6d                                  privateKey OCTET STRING, 109 bytes
//       30 6b                                ECPrivateKey, 107 bytes
//         02 01 01                           version 1
//         04 20 <32-byte scalar>             privateKey
constexpr std::array<uint8_t, 36> kPrefix = {0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06,
                                             0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                                             0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                                             0x04, 0x6d, 0x30, 0x6b, 0x02, 0x01, 0x01, 0x04, 0x20};
//         a1 44 03 42 00 <65-byte point>     [1] publicKey BIT STRING, no unused bits
constexpr std::array<uint8_t, 5> kMiddle = {0xa1, 0x44, 0x03, 0x42, 0x00};
static_assert(kPrefix.size() + kScalarBytes + kMiddle.size() + kPointBytes == kP256Pkcs8DerSize);

}  // namespace

Result<WorkloadKey> WorkloadKey::Generate(core::SpiffeId id) {
  if (id.IsTrustDomainId()) {
    return InvalidArgument("workload key: " + id.str() + " names a trust domain, not a workload");
  }
  if (CRYPTO_secure_malloc_initialized() != 1) {
    return FailedPrecondition(
        "workload key: the OpenSSL secure heap is not initialised (call HardenProcess first)");
  }
  SIGIL_ASSIGN_OR_RETURN(core::PrivateKey key, core::PrivateKey::Generate(core::KeyType::kEcP256));
  core::PublicKey pub = key.Public();
  return WorkloadKey(std::move(id), std::move(key), std::move(pub));
}

Result<std::vector<uint8_t>> WorkloadKey::CreateCsrDer() const { return core::CreateCsrDer(key_); }

Result<SecretBytes> WorkloadKey::ExportPkcs8Der() const {
  SecretBytes out(kP256Pkcs8DerSize);
  uint8_t* p = out.data();
  std::memcpy(p, kPrefix.data(), kPrefix.size());
  uint8_t* scalar = p + kPrefix.size();
  // The provider writes the scalar, zero-padded to the group order's size, straight into our
  // buffer in native byte order; no intermediate BIGNUM or heap buffer is involved.
  std::array<OSSL_PARAM, 2> params = {
      OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_PRIV_KEY, scalar, kScalarBytes),
      OSSL_PARAM_construct_end()};
  if (EVP_PKEY_get_params(key_.get(), params.data()) != 1 ||
      params[0].return_size != kScalarBytes) {
    return OsslError("workload key: private scalar export failed");
  }
  if constexpr (std::endian::native == std::endian::little) {
    std::reverse(scalar, scalar + kScalarBytes);
  }
  uint8_t* middle = scalar + kScalarBytes;
  std::memcpy(middle, kMiddle.data(), kMiddle.size());
  uint8_t* point = middle + kMiddle.size();
  size_t point_len = 0;
  if (EVP_PKEY_get_octet_string_param(key_.get(), OSSL_PKEY_PARAM_PUB_KEY, point, kPointBytes,
                                      &point_len) != 1 ||
      point_len != kPointBytes || point[0] != 0x04) {
    return OsslError("workload key: public point export failed");
  }
  return out;
}

Result<std::vector<uint8_t>> WorkloadKey::Sign(std::span<const uint8_t> data) const {
  return key_.Sign(data, EVP_sha256());
}

}  // namespace sigil::agent::custody
