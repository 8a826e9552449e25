// The certificate-building steps shared by CA creation (ca.cc), leaf issuance (ca_leaf.cc) and
// the data plane's interception CA (dataplane/inject/intercept_ca.cc). Every name and usage is set
// structurally, never from OpenSSL config strings fed with input, so no value can smuggle in a
// further extension or name.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/ossl.h"
#include "common/result.h"
#include "core/keys.h"

namespace sigil::core::x509_builder {

// KeyUsage bit positions (RFC 5280 section 4.2.1.3).
inline constexpr int kKuDigitalSignature = 0;
inline constexpr int kKuKeyEncipherment = 2;
inline constexpr int kKuKeyCertSign = 5;
inline constexpr int kKuCrlSign = 6;

// 16 random bytes, not all zero: a positive 128-bit serial once encoded as an unsigned INTEGER.
Result<std::array<uint8_t, 16>> RandomSerialBytes();

Result<void> AddNameEntry(X509_NAME* name, const char* field, std::string_view value);
Result<void> SetValidity(X509* x, TimePoint not_before, TimePoint not_after);
// Critical basicConstraints; a CA gets pathLenConstraint 0 (Sigil CAs sign leaves only).
Result<void> AddBasicConstraints(X509* x, bool ca);
// Critical keyUsage with the given bits.
Result<void> AddKeyUsage(X509* x, std::initializer_list<int> bits);
// Non-critical extKeyUsage serverAuth + clientAuth.
Result<void> AddServerClientEku(X509* x);
// URI first, then DNS names; non-critical (the subject is never empty).
Result<void> AddSubjectAltNames(X509* x, std::string_view uri,
                                std::span<const std::string> dns_names);
// SKID from the key hash, AKID from the issuer's SKID.
Result<void> AddKeyIdentifiers(X509* x, X509* issuer);
// "*.example.com" or "a-b.example.com": LDH labels of 1..63, total <= 253.
Result<void> ValidateDnsName(std::string_view name);
Result<void> SetPublicKey(X509* x, const PublicKey& key);
// Version 3, random serial, validity, issuer/subject, key; no extensions.
Result<X509Ptr> NewCertificate(const X509_NAME* subject, const X509_NAME* issuer,
                               const PublicKey& public_key, TimePoint not_before,
                               TimePoint not_after);

}  // namespace sigil::core::x509_builder
