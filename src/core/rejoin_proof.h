// Proof of possession for a node rejoin (docs/control-plane.md, "Rejoin").
//
// An agent whose node SVID expired proves that it still holds the key of that SVID by signing a
// domain-separated message that binds the trust domain, the node name, the expired SVID's serial,
// the SHA-256 of the CSR for its new key, and the time of the request:
//
//   "sigil-rejoin-v1\n" TD "\n" NODE "\n" SERIAL-HEX "\n" hex(SHA-256(CSR DER)) "\n" UNIX-SECONDS
//
// The signature is made by PrivateKey::Sign with SHA-256 (Ed25519: pure, no digest; RSA:
// PKCS#1 v1.5). The context string keeps a rejoin signature from being valid as anything else.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/keys.h"
#include "core/spiffe_id.h"

namespace sigil::core {

inline constexpr std::string_view kRejoinContext = "sigil-rejoin-v1";

// The message above. `serial_hex` as core::Certificate::SerialHex prints it.
std::string RejoinMessage(const TrustDomain& trust_domain, std::string_view node_name,
                          std::string_view serial_hex, std::span<const uint8_t> csr_der,
                          int64_t timestamp);

Result<std::vector<uint8_t>> SignRejoin(const PrivateKey& key, std::string_view message);
// Unauthenticated when `signature` is not `key`'s signature over `message`.
Result<void> VerifyRejoin(const PublicKey& key, std::string_view message,
                          std::span<const uint8_t> signature);

}  // namespace sigil::core
