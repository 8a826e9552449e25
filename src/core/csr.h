// Certificate signing requests. The server treats a CSR as a proof of possession of a key and
// nothing more: subject, requested extensions and attributes are ignored; the issuer decides
// every name and usage in the certificate.
#pragma once

#include <cstdint>
#include <set>
#include <span>
#include <string_view>
#include <vector>

#include "common/ossl.h"
#include "common/result.h"
#include "core/keys.h"

namespace sigil::core {

inline constexpr size_t kMaxCsrBytes = size_t{64} * 1024;

// Key types a CSR may carry. Default: EC P-256/P-384, RSA 2048/3072/4096.
struct KeyPolicy {
  std::set<KeyType> allowed = {KeyType::kEcP256, KeyType::kEcP384, KeyType::kRsa2048,
                               KeyType::kRsa3072, KeyType::kRsa4096};
  Result<void> Check(KeyType type) const;
};

class Csr {
 public:
  static Result<Csr> ParseDer(std::span<const uint8_t> der);
  static Result<Csr> ParsePem(std::string_view pem);

  // Verifies the self-signature and the key type; returns the key the certificate will carry.
  Result<PublicKey> Verify(const KeyPolicy& policy) const;

  X509_REQ* get() const { return req_.get(); }  // borrowed
  std::vector<uint8_t> ToDer() const;

 private:
  explicit Csr(X509ReqPtr req) : req_(std::move(req)) {}
  X509ReqPtr req_;
};

// Builds a CSR for `key` (subject O=Sigil, no extensions). Used by agents and tests.
Result<std::vector<uint8_t>> CreateCsrDer(const PrivateKey& key);
std::string CsrDerToPem(std::span<const uint8_t> der);

}  // namespace sigil::core
