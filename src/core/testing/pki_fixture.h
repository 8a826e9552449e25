// Test-only helpers: build certificates with arbitrary (including invalid) profiles, signed by
// a real CA key, so negative verification paths are exercised with real OpenSSL objects.
#pragma once

#include <openssl/x509v3.h>

#include <string>
#include <vector>

#include "core/ca.h"
#include "core/certificate.h"
#include "core/keys.h"

namespace sigil::core::testing {

inline TimePoint TestNow() { return FromUnixSeconds(1796398545); }  // 2026-12-04T15:35:45Z

inline TrustDomain Td(std::string_view name) { return *TrustDomain::Parse(name); }
inline SpiffeId Id(std::string_view text) { return *SpiffeId::Parse(text); }

inline X509Ca MakeCa(std::string_view td = "example.org", TimePoint now = TestNow(),
                     Seconds ttl = kDefaultCaTtl) {
  auto ca = X509Ca::CreateSelfSigned({Td(td), KeyType::kEcP256, ttl, kDefaultBackdate}, now);
  if (!ca.ok()) std::abort();
  return std::move(ca).value();
}

// A leaf with extensions given as OpenSSL config strings, e.g.
// {{NID_basic_constraints, "critical,CA:FALSE"}, {NID_subject_alt_name, "URI:spiffe://a/b"}}.
// The strings are fixed test literals, never input.
inline Certificate CraftLeaf(const X509Ca& ca, const PublicKey& key,
                             const std::vector<std::pair<int, std::string>>& exts,
                             TimePoint not_before, TimePoint not_after) {
  X509Ptr x(X509_new());
  X509_set_version(x.get(), X509_VERSION_3);
  auto serial = RandomSerial();
  X509_set_serialNumber(x.get(), serial->get());
  ASN1_TIME_set(X509_getm_notBefore(x.get()), std::chrono::system_clock::to_time_t(not_before));
  ASN1_TIME_set(X509_getm_notAfter(x.get()), std::chrono::system_clock::to_time_t(not_after));
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("T"),
                             -1, -1, 0);
  X509_set_issuer_name(x.get(), X509_get_subject_name(ca.certificate().get()));
  X509_set_pubkey(x.get(), key.get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.certificate().get(), x.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : exts) {
    X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
    if (!ext) std::abort();
    X509_add_ext(x.get(), ext.get(), -1);
  }
  X509_sign(x.get(), ca.key().get(), EVP_sha256());
  return Certificate::Adopt(std::move(x));
}

// An operator-style upstream root made with config strings (no pathLen limit), as
// `openssl req -x509` would make it. Returns its certificate and key.
inline std::pair<Certificate, PrivateKey> MakeUpstreamRoot(TimePoint now = TestNow(),
                                                           Seconds ttl = Seconds(10 * 24 * 3600)) {
  auto key = PrivateKey::Generate(KeyType::kEcP256);
  X509Ptr x(X509_new());
  X509_set_version(x.get(), X509_VERSION_3);
  auto serial = RandomSerial();
  X509_set_serialNumber(x.get(), serial->get());
  ASN1_TIME_set(X509_getm_notBefore(x.get()),
                std::chrono::system_clock::to_time_t(now - Seconds(60)));
  ASN1_TIME_set(X509_getm_notAfter(x.get()), std::chrono::system_clock::to_time_t(now + ttl));
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Upstream Root"), -1, -1, 0);
  X509_set_issuer_name(x.get(), name);
  X509_set_pubkey(x.get(), key->get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x.get(), x.get(), nullptr, nullptr, 0);
  for (auto [nid, value] :
       std::vector<std::pair<int, const char*>>{{NID_basic_constraints, "critical,CA:TRUE"},
                                                {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                                {NID_subject_key_identifier, "hash"},
                                                {NID_authority_key_identifier, "keyid:always"}}) {
    X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    if (!ext) std::abort();
    X509_add_ext(x.get(), ext.get(), -1);
  }
  X509_sign(x.get(), key->get(), EVP_sha256());
  return {Certificate::Adopt(std::move(x)), std::move(key).value()};
}

}  // namespace sigil::core::testing
