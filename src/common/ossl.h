// Ownership wrappers for OpenSSL handles and the one place where OpenSSL's error queue is
// turned into a sigil::Error. Raw OpenSSL pointers passed to or returned from our functions
// are borrowed unless the name says otherwise.
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sigil {

template <auto F>
struct OsslFree {
  template <class P>
  void operator()(P* p) const noexcept {
    F(p);
  }
};

using BioPtr = std::unique_ptr<BIO, OsslFree<BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, OsslFree<BN_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, OsslFree<ECDSA_SIG_free>>;
using EvpCipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, OsslFree<EVP_CIPHER_CTX_free>>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, OsslFree<EVP_MD_CTX_free>>;
using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, OsslFree<EVP_PKEY_CTX_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OsslFree<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, OsslFree<X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, OsslFree<X509_REQ_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OsslFree<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OsslFree<X509_STORE_CTX_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, OsslFree<X509_NAME_free>>;
using X509AlgorPtr = std::unique_ptr<X509_ALGOR, OsslFree<X509_ALGOR_free>>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, OsslFree<X509_EXTENSION_free>>;
using Asn1IntegerPtr = std::unique_ptr<ASN1_INTEGER, OsslFree<ASN1_INTEGER_free>>;
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, OsslFree<ASN1_TIME_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, OsslFree<GENERAL_NAMES_free>>;
using BasicConstraintsPtr = std::unique_ptr<BASIC_CONSTRAINTS, OsslFree<BASIC_CONSTRAINTS_free>>;
using Asn1BitStringPtr = std::unique_ptr<ASN1_BIT_STRING, OsslFree<ASN1_BIT_STRING_free>>;
using ExtKeyUsagePtr = std::unique_ptr<EXTENDED_KEY_USAGE, OsslFree<EXTENDED_KEY_USAGE_free>>;
// sk_X509_free is a macro; wrap it so it can be a template argument. Frees the stack only,
// not the certificates (they stay owned by their Certificate objects).
inline void FreeX509Stack(STACK_OF(X509) * s) { sk_X509_free(s); }
using StackOfX509Ptr = std::unique_ptr<STACK_OF(X509), OsslFree<FreeX509Stack>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, OsslFree<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, OsslFree<SSL_free>>;

// The first few reasons on OpenSSL's (thread-local) error queue, "reason; reason" ("" when
// empty), and clears the queue so a later failure does not report stale reasons.
std::string DrainOsslErrors();

// Builds an Error from `what` plus DrainOsslErrors(): "what (reason; reason)".
Error OsslError(std::string_view what, ErrorCode code = ErrorCode::kInternal);

// Discards whatever is on the error queue: after a failure we handled ourselves, and before an
// SSL call whose failure is explained from the queue. Cheap when the queue is empty.
void ClearOsslErrors();

// Normalises OpenSSL's "1 means success" convention.
inline Result<void> OsslCheck(int rc, std::string_view what) {
  if (rc == 1) return Ok();
  return OsslError(what);
}

// Decodes exactly one DER object with an OpenSSL d2i function (d2i_X509, d2i_PUBKEY, ...):
// malformed input and trailing bytes are InvalidArgument errors prefixed with `what`.
template <class Ptr, class D2i>
Result<Ptr> D2iExact(D2i d2i, std::span<const uint8_t> der, std::string_view what) {
  const unsigned char* p = der.data();
  Ptr obj(d2i(nullptr, &p, static_cast<long>(der.size())));
  if (!obj) return OsslError(std::string(what) + ": malformed DER", ErrorCode::kInvalidArgument);
  if (p != der.data() + der.size()) {
    return InvalidArgument(std::string(what) + ": trailing data after DER");
  }
  return obj;
}

// Encodes an OpenSSL object with its i2d function (i2d_X509, i2d_X509_NAME, ...).
template <class T, class I2d>
Result<std::vector<uint8_t>> I2dVector(I2d i2d, const T* obj, std::string_view what) {
  unsigned char* out = nullptr;
  int len = obj == nullptr ? -1 : i2d(obj, &out);
  if (len <= 0) return OsslError(std::string(what) + ": DER encoding failed");
  std::vector<uint8_t> der(out, out + len);
  OPENSSL_free(out);
  return der;
}

}  // namespace sigil
