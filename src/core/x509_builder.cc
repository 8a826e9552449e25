#include "core/x509_builder.h"

#include "core/ca.h"

#include <openssl/rand.h>

#include <algorithm>

namespace sigil::core::x509_builder {
namespace {

Result<void> PushName(GENERAL_NAMES* names, int type, std::string_view value) {
  ASN1_IA5STRING* s = ASN1_IA5STRING_new();
  if (s == nullptr || ASN1_STRING_set(s, value.data(), static_cast<int>(value.size())) != 1) {
    ASN1_IA5STRING_free(s);
    return OsslError("x509: SAN string");
  }
  GENERAL_NAME* gn = GENERAL_NAME_new();
  if (gn == nullptr) {
    ASN1_IA5STRING_free(s);
    return OsslError("x509: SAN entry");
  }
  GENERAL_NAME_set0_value(gn, type, s);  // gn owns s
  if (sk_GENERAL_NAME_push(names, gn) <= 0) {
    GENERAL_NAME_free(gn);
    return OsslError("x509: SAN push");
  }
  return Ok();
}

}  // namespace

// 16 random bytes, not all zero: a positive 128-bit serial once encoded as an unsigned INTEGER.
Result<std::array<uint8_t, 16>> RandomSerialBytes() {
  std::array<uint8_t, 16> bytes{};
  do {
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
      return OsslError("serial: RAND_bytes");
    }
  } while (std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; }));
  return bytes;
}

Result<void> AddNameEntry(X509_NAME* name, const char* field, std::string_view value) {
  return OsslCheck(X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                              reinterpret_cast<const unsigned char*>(value.data()),
                                              static_cast<int>(value.size()), -1, 0),
                   "x509: subject entry");
}

Result<void> SetValidity(X509* x, TimePoint not_before, TimePoint not_after) {
  if (ASN1_TIME_set(X509_getm_notBefore(x), std::chrono::system_clock::to_time_t(not_before)) ==
          nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(x), std::chrono::system_clock::to_time_t(not_after)) ==
          nullptr) {
    return OsslError("x509: set validity");
  }
  return Ok();
}

Result<void> AddBasicConstraints(X509* x, bool ca) {
  BasicConstraintsPtr bc(BASIC_CONSTRAINTS_new());
  if (!bc) return OsslError("x509: basicConstraints");
  bc->ca = ca ? 0xFF : 0;
  if (ca) {
    // A Sigil CA signs leaves only: pathLenConstraint 0.
    bc->pathlen = ASN1_INTEGER_new();
    if (bc->pathlen == nullptr || ASN1_INTEGER_set(bc->pathlen, 0) != 1) {
      return OsslError("x509: pathlen");
    }
  }
  return OsslCheck(X509_add1_ext_i2d(x, NID_basic_constraints, bc.get(), 1, X509V3_ADD_DEFAULT),
                   "x509: add basicConstraints");
}

Result<void> AddKeyUsage(X509* x, std::initializer_list<int> bits) {
  Asn1BitStringPtr ku(ASN1_BIT_STRING_new());
  if (!ku) return OsslError("x509: keyUsage");
  for (int bit : bits) {
    if (ASN1_BIT_STRING_set_bit(ku.get(), bit, 1) != 1) return OsslError("x509: keyUsage bit");
  }
  return OsslCheck(X509_add1_ext_i2d(x, NID_key_usage, ku.get(), 1, X509V3_ADD_DEFAULT),
                   "x509: add keyUsage");
}

Result<void> AddServerClientEku(X509* x) {
  ExtKeyUsagePtr eku(sk_ASN1_OBJECT_new_null());
  if (!eku) return OsslError("x509: extKeyUsage");
  // OBJ_nid2obj returns static objects; freeing the stack leaves them alone.
  sk_ASN1_OBJECT_push(eku.get(), OBJ_nid2obj(NID_server_auth));
  sk_ASN1_OBJECT_push(eku.get(), OBJ_nid2obj(NID_client_auth));
  return OsslCheck(X509_add1_ext_i2d(x, NID_ext_key_usage, eku.get(), 0, X509V3_ADD_DEFAULT),
                   "x509: add extKeyUsage");
}

// Built structurally (never from a config string), so no input can smuggle in extra names.
Result<void> AddSubjectAltNames(X509* x, std::string_view uri,
                                std::span<const std::string> dns_names) {
  GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
  if (!names) return OsslError("x509: SAN");
  SIGIL_TRY(PushName(names.get(), GEN_URI, uri));
  for (const auto& dns : dns_names) SIGIL_TRY(PushName(names.get(), GEN_DNS, dns));
  return OsslCheck(X509_add1_ext_i2d(x, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT),
                   "x509: add subjectAltName");
}

// SKID from the key hash, AKID from the issuer's SKID (fixed strings only).
Result<void> AddKeyIdentifiers(X509* x, X509* issuer) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  X509ExtensionPtr skid(X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_key_identifier, "hash"));
  if (!skid || X509_add_ext(x, skid.get(), -1) != 1) return OsslError("x509: subjectKeyIdentifier");
  if (issuer == x) X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  X509ExtensionPtr akid(
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always"));
  if (!akid || X509_add_ext(x, akid.get(), -1) != 1) {
    return OsslError("x509: authorityKeyIdentifier");
  }
  return Ok();
}

// "*.example.com" or "a-b.example.com": LDH labels of 1..63, total <= 253.
Result<void> ValidateDnsName(std::string_view name) {
  if (name.empty() || name.size() > 253) return InvalidArgument("dns name: length must be 1..253");
  std::string_view rest = name;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  size_t start = 0;
  while (start <= rest.size()) {
    size_t dot = rest.find('.', start);
    if (dot == std::string_view::npos) dot = rest.size();
    std::string_view label = rest.substr(start, dot - start);
    if (label.empty() || label.size() > 63) {
      return InvalidArgument("dns name \"" + std::string(name) + "\": bad label length");
    }
    if (label.front() == '-' || label.back() == '-') {
      return InvalidArgument("dns name \"" + std::string(name) + "\": label starts/ends with '-'");
    }
    for (char c : label) {
      bool ok =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok) {
        return InvalidArgument("dns name \"" + std::string(name) +
                               "\": only letters, digits, '-' and '.' are allowed");
      }
    }
    start = dot + 1;
  }
  return Ok();
}

// Sets the certificate's public key. OpenSSL 3.0's X509_set_pubkey on a provider-native key
// encodes the key through the provider encoder lookup and decodes it again: ~170 us, seven
// times the ECDSA signature itself (measured; see docs/benchmarks.md). For EC and RSA keys the
// legacy twin from PublicKey::GetForX509 takes the method-table path instead (~4 us) and stays
// cached in the certificate, so X509_get0_pubkey and SSL_CTX_use_certificate keep working.
Result<void> SetPublicKey(X509* x, const PublicKey& key) {
  return OsslCheck(X509_set_pubkey(x, key.GetForX509()), "x509: public key");
}

// Common skeleton: version 3, random serial, validity, issuer/subject, key.
Result<X509Ptr> NewCertificate(const X509_NAME* subject, const X509_NAME* issuer,
                               const PublicKey& public_key, TimePoint not_before,
                               TimePoint not_after) {
  X509Ptr x(X509_new());
  if (!x) return OsslError("x509: allocation");
  SIGIL_TRY(OsslCheck(X509_set_version(x.get(), X509_VERSION_3), "x509: version"));
  SIGIL_ASSIGN_OR_RETURN(Asn1IntegerPtr serial, RandomSerial());
  SIGIL_TRY(OsslCheck(X509_set_serialNumber(x.get(), serial.get()), "x509: serial"));
  SIGIL_TRY(SetValidity(x.get(), not_before, not_after));
  SIGIL_TRY(OsslCheck(X509_set_subject_name(x.get(), subject), "x509: subject"));
  SIGIL_TRY(OsslCheck(X509_set_issuer_name(x.get(), issuer), "x509: issuer"));
  SIGIL_TRY(SetPublicKey(x.get(), public_key));
  return x;
}

}  // namespace sigil::core::x509_builder
