#include "core/certificate.h"

#include <openssl/pem.h>

#include <cctype>
#include <cstring>
#include <ctime>

#include "common/encoding.h"

namespace sigil::core {
namespace {

BioPtr MemBio(std::string_view s) {
  return BioPtr(BIO_new_mem_buf(s.data(), static_cast<int>(s.size())));
}

std::vector<std::string> SansOfType(X509* x509, int type) {
  std::vector<std::string> out;
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x509, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type != type) continue;
    const ASN1_IA5STRING* s = type == GEN_URI ? gn->d.uniformResourceIdentifier : gn->d.dNSName;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
  }
  return out;
}

}  // namespace

Result<Certificate> Certificate::FromDer(std::span<const uint8_t> der) {
  if (der.empty()) return InvalidArgument("certificate: empty DER");
  if (der.size() > kMaxCertificateBytes) return InvalidArgument("certificate: larger than 64 KiB");
  SIGIL_ASSIGN_OR_RETURN(X509Ptr x509, D2iExact<X509Ptr>(d2i_X509, der, "certificate"));
  return Certificate(std::move(x509));
}

Certificate Certificate::FromX509(X509* x509) {
  X509_up_ref(x509);
  return Certificate(X509Ptr(x509));
}

Certificate::Certificate(const Certificate& other) {
  X509_up_ref(other.x509_.get());
  x509_.reset(other.x509_.get());
}

Certificate& Certificate::operator=(const Certificate& other) {
  if (this != &other) {
    X509_up_ref(other.x509_.get());
    x509_.reset(other.x509_.get());
  }
  return *this;
}

std::vector<uint8_t> Certificate::ToDer() const {
  auto der = I2dVector(i2d_X509, x509_.get(), "certificate");
  return der.ok() ? std::move(der).value() : std::vector<uint8_t>();
}

std::string Certificate::ToPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), x509_.get());
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string Certificate::Fingerprint() const { return Sha256Hex(ToDer()); }

std::string Certificate::SerialHex() const {
  BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(x509_.get()), nullptr));
  if (!bn) return "";
  if (BN_is_zero(bn.get())) return "0";
  char* hex = BN_bn2hex(bn.get());
  std::string out(hex);
  OPENSSL_free(hex);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t nz = out.find_first_not_of('0');
  return nz == std::string::npos ? "0" : out.substr(nz);
}

Result<TimePoint> FromAsn1Time(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    return OsslError("certificate: invalid time", ErrorCode::kInvalidArgument);
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

TimePoint Certificate::NotBefore() const {
  auto t = FromAsn1Time(X509_get0_notBefore(x509_.get()));
  return t.ok() ? *t : TimePoint::max();
}

TimePoint Certificate::NotAfter() const {
  auto t = FromAsn1Time(X509_get0_notAfter(x509_.get()));
  return t.ok() ? *t : TimePoint::min();
}

// basicConstraints cA=true only: X509_check_ca also accepts v1 roots and keyCertSign-only
// certificates, which the X509-SVID standard does not treat as CAs.
bool Certificate::IsCa() const { return (X509_get_extension_flags(x509_.get()) & EXFLAG_CA) != 0; }

bool Certificate::IsSelfSigned() const { return X509_self_signed(x509_.get(), 0) == 1; }

std::vector<std::string> Certificate::UriSans() const { return SansOfType(x509_.get(), GEN_URI); }
std::vector<std::string> Certificate::DnsSans() const { return SansOfType(x509_.get(), GEN_DNS); }

Result<PublicKey> Certificate::PublicKeyOf() const {
  EVP_PKEY* key = X509_get0_pubkey(x509_.get());
  if (key == nullptr)
    return OsslError("certificate: unreadable public key", ErrorCode::kInvalidArgument);
  return PublicKey::FromEvp(key);
}

Result<std::vector<Certificate>> ParseCertificatesPem(std::string_view pem,
                                                      bool skip_other_blocks) {
  if (pem.size() > kMaxPemInputBytes) return InvalidArgument("pem: input larger than 1 MiB");
  BioPtr bio = MemBio(pem);
  std::vector<Certificate> out;
  for (;;) {
    char* name = nullptr;
    char* header = nullptr;
    unsigned char* data = nullptr;
    long len = 0;
    if (PEM_read_bio(bio.get(), &name, &header, &data, &len) != 1) {
      ClearOsslErrors();  // end of input (or garbage after the last block: see below)
      break;
    }
    std::string block_name(name);
    bool has_header = header != nullptr && header[0] != '\0';
    std::vector<uint8_t> der(data, data + len);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    if (block_name != "CERTIFICATE") {
      if (skip_other_blocks) continue;
      return InvalidArgument("pem: block " + std::to_string(out.size() + 1) + " is \"" +
                             block_name + "\", expected CERTIFICATE");
    }
    if (has_header) return InvalidArgument("pem: encrypted or annotated CERTIFICATE block");
    if (out.size() == kMaxCertificatesPerInput) {
      return InvalidArgument("pem: more than 64 certificates");
    }
    auto cert = Certificate::FromDer(der);
    if (!cert.ok()) {
      return std::move(cert).error().WithContext("pem: block " + std::to_string(out.size() + 1));
    }
    out.push_back(std::move(cert).value());
  }
  if (out.empty()) return InvalidArgument("pem: no CERTIFICATE block found");
  return out;
}

Result<std::vector<Certificate>> ParseCertificatesDer(std::span<const uint8_t> der) {
  if (der.empty()) return InvalidArgument("der: empty certificate chain");
  if (der.size() > kMaxPemInputBytes) return InvalidArgument("der: input larger than 1 MiB");
  std::vector<Certificate> out;
  const unsigned char* p = der.data();
  const unsigned char* end = der.data() + der.size();
  while (p < end) {
    if (out.size() == kMaxCertificatesPerInput) {
      return InvalidArgument("der: more than 64 certificates");
    }
    const unsigned char* start = p;
    X509Ptr x509(d2i_X509(nullptr, &p, static_cast<long>(end - p)));
    if (!x509) {
      return OsslError("der: certificate " + std::to_string(out.size() + 1) + " is malformed",
                       ErrorCode::kInvalidArgument);
    }
    if (static_cast<size_t>(p - start) > kMaxCertificateBytes) {
      return InvalidArgument("der: certificate larger than 64 KiB");
    }
    out.push_back(Certificate::Adopt(std::move(x509)));
  }
  return out;
}

std::string CertificatesToPem(std::span<const Certificate> certs) {
  std::string out;
  for (const auto& c : certs) out += c.ToPem();
  return out;
}

std::vector<uint8_t> CertificatesToDer(std::span<const Certificate> certs) {
  std::vector<uint8_t> out;
  for (const auto& c : certs) {
    auto der = c.ToDer();
    out.insert(out.end(), der.begin(), der.end());
  }
  return out;
}

}  // namespace sigil::core
