// Internal to src/core: fast public-key encodings for the issuance path.
//
// OpenSSL 3.0 encodes and decodes keys through its provider encoder/decoder lookup, which costs
// 60-170 us per call, several times an ECDSA signature. These functions avoid it: EncodeSpki
// writes SubjectPublicKeyInfo DER from the key's parameters (byte-identical to i2d_PUBKEY, as
// keys_test.cc checks), and LegacyCopy gives the EC_KEY/RSA twin that X509_set_pubkey encodes
// through the cheap method-table path.
#pragma once

#include <cstdint>
#include <vector>

#include "common/ossl.h"
#include "core/keys.h"

namespace sigil::core::key_encoding {

std::vector<uint8_t> EncodeSpki(EVP_PKEY* key, KeyType type);
// An EVP_PKEY around a legacy EC_KEY/RSA copy of `key` (EC keys use a generic-method twin of
// the named curve, so encoding the point needs no field inversion); null for other key types.
EvpPkeyPtr LegacyCopy(EVP_PKEY* key);

}  // namespace sigil::core::key_encoding
