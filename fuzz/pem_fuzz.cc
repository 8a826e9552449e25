// Certificates from untrusted bytes: PEM chains, concatenated DER (Workload API encoding),
// and the X.509-SVID leaf checks that run on whatever parsed.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/certificate.h"
#include "core/x509_svid.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sigil::core;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto pem = ParseCertificatesPem(text);
  if (pem.ok()) {
    for (const auto& c : *pem) {
      (void)CheckLeafProfile(c);
      (void)c.SerialHex();
      (void)c.UriSans();
      // Re-encoding what parsed must parse again.
      if (!Certificate::FromDer(c.ToDer()).ok()) __builtin_trap();
    }
  }
  auto der = ParseCertificatesDer(std::span<const uint8_t>(data, size));
  if (der.ok()) {
    for (const auto& c : *der) (void)SpiffeIdFromCertificate(c);
  }
  (void)PrivateKey::FromPem(text);
  (void)PublicKey::FromDer(std::span<const uint8_t>(data, size));
  return 0;
}
