#include "core/x509_svid.h"

namespace sigil::core {

Result<SpiffeId> SpiffeIdFromCertificate(const Certificate& cert) {
  std::vector<std::string> uris = cert.UriSans();
  if (uris.empty()) return InvalidArgument("x509-svid: no URI SAN");
  if (uris.size() > 1) return InvalidArgument("x509-svid: more than one URI SAN");
  auto id = SpiffeId::Parse(uris.front());
  if (!id.ok()) return std::move(id).error().WithContext("x509-svid: URI SAN");
  return id;
}

Result<SpiffeId> CheckLeafProfile(const Certificate& leaf) {
  X509* x = leaf.get();
  // X509_get_extension_flags caches the parsed extensions and flags malformed ones.
  uint32_t flags = X509_get_extension_flags(x);
  if ((flags & EXFLAG_INVALID) != 0) return InvalidArgument("x509-svid: malformed extensions");
  if ((flags & EXFLAG_CA) != 0) return InvalidArgument("x509-svid: leaf has cA=true");
  if ((flags & EXFLAG_KUSAGE) == 0) return InvalidArgument("x509-svid: leaf has no keyUsage");
  int ku_index = X509_get_ext_by_NID(x, NID_key_usage, -1);
  if (ku_index < 0 || X509_EXTENSION_get_critical(X509_get_ext(x, ku_index)) != 1) {
    return InvalidArgument("x509-svid: keyUsage is not critical");
  }
  uint32_t ku = X509_get_key_usage(x);
  if ((ku & KU_DIGITAL_SIGNATURE) == 0) {
    return InvalidArgument("x509-svid: leaf keyUsage lacks digitalSignature");
  }
  if ((ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) != 0) {
    return InvalidArgument("x509-svid: leaf keyUsage has keyCertSign or cRLSign");
  }
  if ((flags & EXFLAG_XKUSAGE) != 0) {
    uint32_t xku = X509_get_extended_key_usage(x);
    if ((xku & XKU_SSL_SERVER) == 0 || (xku & XKU_SSL_CLIENT) == 0) {
      return InvalidArgument("x509-svid: extKeyUsage lacks serverAuth or clientAuth");
    }
  }
  SIGIL_ASSIGN_OR_RETURN(SpiffeId id, SpiffeIdFromCertificate(leaf));
  if (id.IsTrustDomainId()) return InvalidArgument("x509-svid: leaf SPIFFE ID has no path");
  return id;
}

Result<SpiffeId> VerifyX509Svid(std::span<const Certificate> chain, const BundleSet& bundles,
                                TimePoint now) {
  if (chain.empty()) return InvalidArgument("x509-svid: empty certificate chain");
  if (chain.size() > kMaxCertificatesPerInput) {
    return InvalidArgument("x509-svid: chain longer than 64 certificates");
  }
  SIGIL_ASSIGN_OR_RETURN(SpiffeId id, CheckLeafProfile(chain.front()));
  auto bundle = bundles.Find(id.trust_domain());
  if (!bundle || bundle->x509_authorities().empty()) {
    return Unauthenticated("x509-svid: no X.509 bundle for trust domain " +
                           id.trust_domain().name());
  }
  X509StorePtr store(X509_STORE_new());
  if (!store) return OsslError("x509-svid: store");
  for (const auto& root : bundle->x509_authorities()) {
    if (X509_STORE_add_cert(store.get(), root.get()) != 1) return OsslError("x509-svid: add root");
  }
  StackOfX509Ptr untrusted(sk_X509_new_null());
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), chain[i].get());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx ||
      X509_STORE_CTX_init(ctx.get(), store.get(), chain.front().get(), untrusted.get()) != 1) {
    return OsslError("x509-svid: verify context");
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, std::chrono::system_clock::to_time_t(now));
  // Like go-spiffe, EKU is not enforced during path building (any purpose); the leaf
  // profile check above already required serverAuth+clientAuth when EKU is present.
  X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_ANY);
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    ClearOsslErrors();
    return Unauthenticated(std::string("x509-svid: ") + X509_verify_cert_error_string(err));
  }
  return id;
}

}  // namespace sigil::core
