// Certificate: a shared, immutable X.509 certificate (copy = X509_up_ref), plus the bounded
// PEM/DER parsers every untrusted certificate goes through.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/ossl.h"
#include "common/result.h"
#include "core/keys.h"

namespace sigil::core {

inline constexpr size_t kMaxCertificateBytes = size_t{64} * 1024;  // one DER certificate
inline constexpr size_t kMaxPemInputBytes = size_t{1024} * 1024;   // a PEM file or DER chain
inline constexpr size_t kMaxCertificatesPerInput = 64;             // chain or bundle entries

class Certificate {
 public:
  static Result<Certificate> FromDer(std::span<const uint8_t> der);
  // Takes a new reference on `x509`; the caller keeps its own.
  static Certificate FromX509(X509* x509);
  static Certificate Adopt(X509Ptr x509) { return Certificate(std::move(x509)); }

  Certificate(const Certificate& other);
  Certificate& operator=(const Certificate& other);
  Certificate(Certificate&&) noexcept = default;
  Certificate& operator=(Certificate&&) noexcept = default;

  X509* get() const { return x509_.get(); }  // borrowed
  std::vector<uint8_t> ToDer() const;
  std::string ToPem() const;
  // Lowercase hex SHA-256 of the DER encoding (what `sha256:` pins use).
  std::string Fingerprint() const;
  // Serial number as lowercase hex without leading zeros ("0" for zero).
  std::string SerialHex() const;
  TimePoint NotBefore() const;
  TimePoint NotAfter() const;
  bool IsCa() const;
  bool IsSelfSigned() const;
  // The URI SANs, in order (an X.509-SVID has exactly one).
  std::vector<std::string> UriSans() const;
  std::vector<std::string> DnsSans() const;
  Result<PublicKey> PublicKeyOf() const;

 private:
  explicit Certificate(X509Ptr x509) : x509_(std::move(x509)) {}
  X509Ptr x509_;
};

// One or more "CERTIFICATE" PEM blocks; other block types are skipped only if
// `skip_other_blocks` (a chain file must contain certificates only).
Result<std::vector<Certificate>> ParseCertificatesPem(std::string_view pem,
                                                      bool skip_other_blocks = false);
// Concatenated DER certificates (the Workload API encoding), parsed in a loop.
Result<std::vector<Certificate>> ParseCertificatesDer(std::span<const uint8_t> der);

std::string CertificatesToPem(std::span<const Certificate> certs);
std::vector<uint8_t> CertificatesToDer(std::span<const Certificate> certs);

// ASN1_TIME <-> TimePoint.
Result<TimePoint> FromAsn1Time(const ASN1_TIME* t);

}  // namespace sigil::core
