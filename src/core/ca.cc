#include "core/ca.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>

#include "common/encoding.h"
#include "core/x509_builder.h"
#include "core/x509_svid.h"

namespace sigil::core {
namespace {

using namespace x509_builder;  // NOLINT(google-build-using-namespace): internal helpers

Result<X509NamePtr> CaSubject() {
  X509NamePtr name(X509_NAME_new());
  if (!name) return OsslError("x509: name");
  unsigned char rnd[4];
  if (RAND_bytes(rnd, sizeof(rnd)) != 1) return OsslError("x509: random");
  SIGIL_TRY(AddNameEntry(name.get(), "O", "Sigil"));
  // A distinct CN per CA generation keeps old and new CAs apart during rotation.
  SIGIL_TRY(AddNameEntry(name.get(), "CN", "Sigil CA " + HexEncode(rnd)));
  return name;
}

Result<Certificate> SignCaCertificate(const CaOptions& options, const PrivateKey& key,
                                      const X509_NAME* issuer_name, X509* issuer_cert,
                                      const PrivateKey& issuer_key, TimePoint not_before,
                                      TimePoint not_after) {
  SIGIL_ASSIGN_OR_RETURN(X509NamePtr subject, CaSubject());
  const X509_NAME* issuer = issuer_name != nullptr ? issuer_name : subject.get();
  SIGIL_ASSIGN_OR_RETURN(
      X509Ptr x, NewCertificate(subject.get(), issuer, key.Public(), not_before, not_after));
  SIGIL_TRY(AddBasicConstraints(x.get(), true));
  SIGIL_TRY(AddKeyUsage(x.get(), {kKuKeyCertSign, kKuCrlSign}));
  SIGIL_TRY(AddSubjectAltNames(x.get(), options.trust_domain.IdString(), {}));
  SIGIL_TRY(AddKeyIdentifiers(x.get(), issuer_cert != nullptr ? issuer_cert : x.get()));
  if (X509_sign(x.get(), issuer_key.get(), DefaultDigestFor(issuer_key.type())) <= 0) {
    return OsslError("x509: signing CA certificate");
  }
  return Certificate::Adopt(std::move(x));
}

Result<void> CheckChainLinks(std::span<const Certificate> chain) {
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    EVP_PKEY* issuer_key = X509_get0_pubkey(chain[i + 1].get());
    if (issuer_key == nullptr || X509_verify(chain[i].get(), issuer_key) != 1) {
      ClearOsslErrors();
      return InvalidArgument("ca chain: certificate " + std::to_string(i) +
                             " is not signed by certificate " + std::to_string(i + 1));
    }
  }
  if (!chain.back().IsSelfSigned()) {
    return InvalidArgument("ca chain: must end with a self-signed root certificate");
  }
  for (const auto& c : chain) {
    if (!c.IsCa()) return InvalidArgument("ca chain: contains a certificate that is not a CA");
  }
  return Ok();
}

}  // namespace

Result<Asn1IntegerPtr> RandomSerial() {
  SIGIL_ASSIGN_OR_RETURN(auto bytes, RandomSerialBytes());
  BignumPtr bn(BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr));
  if (!bn) return OsslError("serial: BN_bin2bn");
  Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  if (!serial) return OsslError("serial: BN_to_ASN1_INTEGER");
  return serial;
}

Result<std::string> RandomKeyId() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return OsslError("kid: RAND_bytes");
  return Base64UrlEncode(std::span<const uint8_t>(bytes, sizeof(bytes)));
}

X509Ca::X509Ca(TrustDomain td, std::vector<Certificate> chain, PrivateKey key, Seconds backdate)
    : td_(std::move(td)), chain_(std::move(chain)), key_(std::move(key)), backdate_(backdate) {
  not_before_ = chain_.front().NotBefore();
  not_after_ = chain_.front().NotAfter();
  // Leaves are presented with every non-root certificate of the CA's chain.
  // Leaves are presented with every certificate of the CA's chain except the root, which the
  // relying party has in its bundle.
  leaf_suffix_.assign(chain_.begin(), chain_.end() - 1);
}

Result<X509Ca> X509Ca::CreateSelfSigned(const CaOptions& options, TimePoint now) {
  if (options.ttl <= Seconds(0)) return InvalidArgument("ca: ttl must be positive");
  SIGIL_ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::Generate(options.key_type));
  SIGIL_ASSIGN_OR_RETURN(Certificate cert,
                         SignCaCertificate(options, key, nullptr, nullptr, key,
                                           now - options.backdate, now + options.ttl));
  return X509Ca(options.trust_domain, {std::move(cert)}, std::move(key), options.backdate).Finish();
}

Result<X509Ca> X509Ca::CreateIntermediate(const CaOptions& options,
                                          std::span<const Certificate> upstream_chain,
                                          const PrivateKey& upstream_key, TimePoint now) {
  if (options.ttl <= Seconds(0)) return InvalidArgument("ca: ttl must be positive");
  if (upstream_chain.empty()) return InvalidArgument("upstream ca: empty certificate chain");
  auto links = CheckChainLinks(upstream_chain);
  if (!links.ok()) return std::move(links).error().WithContext("upstream ca");
  const Certificate& upstream = upstream_chain.front();
  SIGIL_ASSIGN_OR_RETURN(PublicKey upstream_pub, upstream.PublicKeyOf());
  if (!upstream_pub.Equals(upstream_key.Public())) {
    return InvalidArgument("upstream ca: private key does not match the first certificate");
  }
  if ((X509_get_key_usage(upstream.get()) & KU_KEY_CERT_SIGN) == 0) {
    return InvalidArgument("upstream ca: certificate may not sign certificates (keyUsage)");
  }
  if (now >= upstream.NotAfter() || now < upstream.NotBefore()) {
    return FailedPrecondition("upstream ca: certificate is not valid now");
  }
  TimePoint not_after = std::min(now + options.ttl, upstream.NotAfter());
  SIGIL_ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::Generate(options.key_type));
  SIGIL_ASSIGN_OR_RETURN(
      Certificate cert,
      SignCaCertificate(options, key, X509_get_subject_name(upstream.get()), upstream.get(),
                        upstream_key, now - options.backdate, not_after));
  std::vector<Certificate> chain{std::move(cert)};
  chain.insert(chain.end(), upstream_chain.begin(), upstream_chain.end());

  SIGIL_ASSIGN_OR_RETURN(
      X509Ca ca,
      X509Ca(options.trust_domain, std::move(chain), std::move(key), options.backdate).Finish());
  // Catch upstream constraints (pathLen, name constraints, policies) now rather than at the
  // first handshake: a leaf issued by the new intermediate must validate against the root.
  auto probe = ca.SelfTest(now);
  if (!probe.ok()) {
    return std::move(probe).error().WithContext(
        "upstream ca: leaves of the minted intermediate would not validate");
  }
  return ca;
}

Result<void> X509Ca::SelfTest(TimePoint now) const {
  SIGIL_ASSIGN_OR_RETURN(PrivateKey probe_key, PrivateKey::Generate(KeyType::kEcP256));
  SIGIL_ASSIGN_OR_RETURN(SpiffeId probe_id, SpiffeId::FromPath(td_, "/sigil/ca-self-test"));
  SIGIL_ASSIGN_OR_RETURN(IssuedX509Svid svid,
                         IssueX509Svid({probe_id, probe_key.Public(), {}, Seconds(60)}, now));
  auto bundle = std::make_shared<TrustBundle>(td_);
  bundle->AddX509Authority(root());
  BundleSet bundles;
  bundles.Put(std::move(bundle));
  SIGIL_TRY(VerifyX509Svid(svid.chain, bundles, now));
  return Ok();
}

Result<X509Ca> X509Ca::Load(const TrustDomain& td, std::vector<Certificate> chain, PrivateKey key,
                            Seconds backdate) {
  if (chain.empty()) return InvalidArgument("ca: empty certificate chain");
  SIGIL_TRY(CheckChainLinks(chain));
  SIGIL_ASSIGN_OR_RETURN(PublicKey pub, chain.front().PublicKeyOf());
  if (!pub.Equals(key.Public())) {
    return InvalidArgument("ca: private key does not match the signing certificate");
  }
  auto uris = chain.front().UriSans();
  if (uris.size() == 1 && uris.front() != td.IdString()) {
    return InvalidArgument("ca: certificate carries \"" + uris.front() + "\", expected \"" +
                           td.IdString() + "\"");
  }
  return X509Ca(td, std::move(chain), std::move(key), backdate).Finish();
}

}  // namespace sigil::core
