#include "core/csr.h"

#include <openssl/pem.h>

#include "common/encoding.h"

namespace sigil::core {

Result<void> KeyPolicy::Check(KeyType type) const {
  if (allowed.contains(type)) return Ok();
  return InvalidArgument("key type " + std::string(KeyTypeName(type)) + " is not allowed here");
}

Result<Csr> Csr::ParseDer(std::span<const uint8_t> der) {
  if (der.empty()) return InvalidArgument("csr: empty");
  if (der.size() > kMaxCsrBytes) return InvalidArgument("csr: larger than 64 KiB");
  SIGIL_ASSIGN_OR_RETURN(X509ReqPtr req, D2iExact<X509ReqPtr>(d2i_X509_REQ, der, "csr"));
  return Csr(std::move(req));
}

Result<Csr> Csr::ParsePem(std::string_view pem) {
  if (pem.size() > kMaxCsrBytes * 2) return InvalidArgument("csr: larger than 128 KiB of PEM");
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  if (PEM_read_bio(bio.get(), &name, &header, &data, &len) != 1) {
    return OsslError("csr: no PEM block found", ErrorCode::kInvalidArgument);
  }
  std::string block(name);
  std::vector<uint8_t> der(data, data + len);
  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_free(data);
  if (block != "CERTIFICATE REQUEST" && block != "NEW CERTIFICATE REQUEST") {
    return InvalidArgument("csr: PEM block is \"" + block + "\", expected CERTIFICATE REQUEST");
  }
  return ParseDer(der);
}

Result<PublicKey> Csr::Verify(const KeyPolicy& policy) const {
  EVP_PKEY* key = X509_REQ_get0_pubkey(req_.get());
  if (key == nullptr) return OsslError("csr: unreadable public key", ErrorCode::kInvalidArgument);
  auto type = ClassifyKey(key);
  if (!type.ok()) return std::move(type).error().WithContext("csr");
  auto allowed = policy.Check(*type);
  if (!allowed.ok()) return std::move(allowed).error().WithContext("csr");
  if (X509_REQ_verify(req_.get(), key) != 1) {
    ClearOsslErrors();
    return InvalidArgument("csr: signature does not verify (no proof of key possession)");
  }
  return PublicKey::FromEvp(key);
}

std::vector<uint8_t> Csr::ToDer() const {
  auto der = I2dVector(i2d_X509_REQ, req_.get(), "csr");
  return der.ok() ? std::move(der).value() : std::vector<uint8_t>();
}

Result<std::vector<uint8_t>> CreateCsrDer(const PrivateKey& key) {
  X509ReqPtr req(X509_REQ_new());
  if (!req) return OsslError("csr: allocation failed");
  SIGIL_TRY(OsslCheck(X509_REQ_set_version(req.get(), 0), "csr: set version"));
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  SIGIL_TRY(OsslCheck(
      X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("Sigil"), -1, -1, 0),
      "csr: set subject"));
  SIGIL_TRY(OsslCheck(X509_REQ_set_pubkey(req.get(), key.get()), "csr: set key"));
  if (X509_REQ_sign(req.get(), key.get(), DefaultDigestFor(key.type())) <= 0) {
    return OsslError("csr: signing failed");
  }
  return I2dVector(i2d_X509_REQ, req.get(), "csr");
}

std::string CsrDerToPem(std::span<const uint8_t> der) {
  std::string body = Base64Encode(der);
  std::string out = "-----BEGIN CERTIFICATE REQUEST-----\n";
  for (size_t i = 0; i < body.size(); i += 64) {
    out += body.substr(i, 64);
    out += '\n';
  }
  out += "-----END CERTIFICATE REQUEST-----\n";
  return out;
}

}  // namespace sigil::core
