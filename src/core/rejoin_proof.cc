#include "core/rejoin_proof.h"

#include <openssl/evp.h>

#include "common/encoding.h"

namespace sigil::core {
namespace {

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

std::string RejoinMessage(const TrustDomain& trust_domain, std::string_view node_name,
                          std::string_view serial_hex, std::span<const uint8_t> csr_der,
                          int64_t timestamp) {
  std::string m(kRejoinContext);
  m += '\n';
  m += trust_domain.name();
  m += '\n';
  m += node_name;
  m += '\n';
  m += serial_hex;
  m += '\n';
  m += Sha256Hex(csr_der);
  m += '\n';
  m += std::to_string(timestamp);
  return m;
}

Result<std::vector<uint8_t>> SignRejoin(const PrivateKey& key, std::string_view message) {
  return key.Sign(Bytes(message), EVP_sha256());
}

Result<void> VerifyRejoin(const PublicKey& key, std::string_view message,
                          std::span<const uint8_t> signature) {
  if (signature.empty() || signature.size() > 1024) {
    return Unauthenticated("rejoin signature: missing or longer than 1024 bytes");
  }
  return VerifySignature(key, Bytes(message), signature, EVP_sha256());
}

}  // namespace sigil::core
