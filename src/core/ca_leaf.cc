// X.509-SVID issuance from a per-CA DER template (X509Ca::IssueX509Svid and its template).
#include <openssl/sha.h>

#include "core/ca.h"
#include "core/der.h"
#include "core/x509_builder.h"

namespace sigil::core {

using namespace x509_builder;  // NOLINT(google-build-using-namespace): internal helpers

// ---- Leaf issuance from a DER template ----
//
// OpenSSL 3.0 builds a certificate through its generic ASN.1 item code: every setter copies
// through an encode/decode round trip, signing re-encodes the TBSCertificate and i2d encodes it
// once more. A leaf differs from the next one only in serial, validity, key, SAN and SKID, so
// the template holds everything else pre-encoded (taken from OpenSSL's own encoder, so the bytes
// are what X509_sign would have produced) and issuance writes the TBSCertificate directly.
//
// The caller also gets a normal X509 object. It is assembled from the same pieces with the
// cheap setters rather than parsed with d2i_X509: OpenSSL 3.0's d2i_X509 decodes the public
// key through the provider decoder lookup (~115 us per certificate on the reference machine,
// six times the signature), while the setter path costs a few microseconds. Both are built from
// the same values (the SPKI even from the object's own encoding), ca_template_test.cc checks
// leaf.ToDer() == der for every CA/leaf key combination, and debug builds re-check every leaf.

struct X509Ca::LeafTemplate {
  // DER, spliced into every leaf.
  std::vector<uint8_t> sig_alg;         // AlgorithmIdentifier of the CA key's signatures
  std::vector<uint8_t> issuer;          // the CA certificate's subject Name, byte for byte
  std::vector<uint8_t> subject;         // O=Sigil
  std::vector<uint8_t> fixed_exts;      // basicConstraints, keyUsage(digitalSignature), EKU
  std::vector<uint8_t> fixed_exts_rsa;  // same, keyUsage adds keyEncipherment
  std::vector<uint8_t> akid;            // authorityKeyIdentifier = the CA's SKID
  // The same values as OpenSSL objects, for the X509 returned alongside the DER.
  X509AlgorPtr sig_alg_obj;
  X509NamePtr subject_name;
  X509ExtensionPtr basic_constraints;
  X509ExtensionPtr ku_signature;  // EC, Ed25519 keys
  X509ExtensionPtr ku_rsa;        // RSA keys: digitalSignature + keyEncipherment
  X509ExtensionPtr eku;
  X509ExtensionPtr akid_ext;
  EvpMdCtxPtr sign_ctx;  // DigestSignInit'ed with the CA key; copied per leaf (null: Ed25519)
  size_t max_signature = 0;
};

namespace {

constexpr uint8_t kVersion3[] = {0xa0, 0x03, 0x02, 0x01, 0x02};  // [0] EXPLICIT INTEGER 2
constexpr uint8_t kOidSubjectAltName[] = {0x06, 0x03, 0x55, 0x1d, 0x11};
constexpr uint8_t kOidSubjectKeyId[] = {0x06, 0x03, 0x55, 0x1d, 0x0e};
constexpr uint8_t kGeneralNameDns = der::ContextTag(2, false);
constexpr uint8_t kGeneralNameUri = der::ContextTag(6, false);

// A copy of `ext` that shares nothing with it. X509_EXTENSION_dup goes through an
// encode/decode round trip; copying the three fields is a fraction of that.
Result<X509ExtensionPtr> CopyExtension(const X509_EXTENSION* ext) {
  X509ExtensionPtr copy(X509_EXTENSION_create_by_OBJ(
      nullptr, X509_EXTENSION_get_object(const_cast<X509_EXTENSION*>(ext)),
      X509_EXTENSION_get_critical(ext), X509_EXTENSION_get_data(const_cast<X509_EXTENSION*>(ext))));
  if (!copy) return OsslError("x509: extension");
  return copy;
}

// A non-critical extension with the given extnValue contents.
Result<X509ExtensionPtr> NewExtension(int nid, std::span<const uint8_t> value) {
  std::unique_ptr<ASN1_OCTET_STRING, OsslFree<ASN1_OCTET_STRING_free>> data(
      ASN1_OCTET_STRING_new());
  if (!data ||
      ASN1_OCTET_STRING_set(data.get(), value.data(), static_cast<int>(value.size())) != 1) {
    return OsslError("x509: extension");
  }
  X509ExtensionPtr ext(X509_EXTENSION_create_by_NID(nullptr, nid, 0, data.get()));
  if (!ext) return OsslError("x509: extension");
  return ext;
}

// Moves `ext` to the end of the certificate's extension list. X509_add_ext would copy it once
// more (another encode/decode round trip); a leaf's extensions are fresh objects nobody else
// holds, so they are handed over instead. The first goes through X509_add_ext, which creates
// the list and marks the certificate's cached encoding stale.
Result<void> AppendExtension(X509* x, X509ExtensionPtr ext) {
  if (X509_get_ext_count(x) == 0) {
    return OsslCheck(X509_add_ext(x, ext.get(), -1), "x509: add extension");
  }
  auto* exts = const_cast<STACK_OF(X509_EXTENSION)*>(X509_get0_extensions(x));
  if (exts == nullptr || sk_X509_EXTENSION_push(exts, ext.get()) <= 0) {
    return OsslError("x509: add extension");
  }
  ext.release();  // owned by the certificate now
  return Ok();
}

// Extension ::= SEQUENCE { extnID, extnValue OCTET STRING } (non-critical).
Result<std::vector<uint8_t>> EncodeExtension(std::span<const uint8_t> oid,
                                             std::span<const uint8_t> value) {
  der::DerWriter w(value.size() + oid.size() + 12);
  w.Begin(der::kSequence);
  w.AddRaw(oid);
  w.AddOctetString(value);
  w.End();
  return std::move(w).Finish();
}

// GeneralNames with the URI first. The names were validated by IssueX509Svid (SPIFFE ID parse,
// ValidateDnsName), so they are ASCII as IA5String requires (the writer re-checks).
Result<std::vector<uint8_t>> EncodeGeneralNames(std::string_view uri,
                                                std::span<const std::string> dns) {
  size_t hint = uri.size() + 8;
  for (const auto& d : dns) hint += d.size() + 4;
  der::DerWriter w(hint);
  w.Begin(der::kSequence);
  w.AddIa5String(kGeneralNameUri, uri);
  for (const auto& d : dns) w.AddIa5String(kGeneralNameDns, d);
  w.End();
  return std::move(w).Finish();
}

// RFC 5280 4.2.1.2 method (1), which is OpenSSL's "hash": SHA-1 of the subjectPublicKey bits,
// as a KeyIdentifier (OCTET STRING).
Result<std::vector<uint8_t>> EncodeKeyIdentifier(const ASN1_BIT_STRING* key_bits) {
  unsigned char md[SHA_DIGEST_LENGTH];
  if (key_bits == nullptr ||
      EVP_Digest(ASN1_STRING_get0_data(key_bits), static_cast<size_t>(ASN1_STRING_length(key_bits)),
                 md, nullptr, EVP_sha1(), nullptr) != 1) {
    return OsslError("x509: subjectKeyIdentifier");
  }
  der::DerWriter w(sizeof(md) + 2);
  w.AddOctetString({md, sizeof(md)});
  return std::move(w).Finish();
}

// OpenSSL 3.0 has no setter for a certificate's signature fields other than signing it again.
// They are ordinary members of the (non-const) X509, reached through the const accessors.
Result<void> AttachSignature(X509* x, const X509_ALGOR* alg, std::span<const uint8_t> sig) {
  const ASN1_BIT_STRING* sig_const = nullptr;
  const X509_ALGOR* outer_const = nullptr;
  X509_get0_signature(&sig_const, &outer_const, x);
  auto* tbs_alg = const_cast<X509_ALGOR*>(X509_get0_tbs_sigalg(x));
  auto* outer_alg = const_cast<X509_ALGOR*>(outer_const);
  auto* bits = const_cast<ASN1_BIT_STRING*>(sig_const);
  if (tbs_alg == nullptr || outer_alg == nullptr || bits == nullptr ||
      X509_ALGOR_copy(tbs_alg, alg) != 1 || X509_ALGOR_copy(outer_alg, alg) != 1 ||
      ASN1_BIT_STRING_set(bits, const_cast<uint8_t*>(sig.data()), static_cast<int>(sig.size())) !=
          1) {
    return OsslError("x509: attach signature");
  }
  // 0 unused bits; without the flag i2d would trim trailing zero bits of the signature.
  bits->flags = (bits->flags & ~0x07L) | ASN1_STRING_FLAG_BITS_LEFT;
  return Ok();
}

bool IsRsa(KeyType t) {
  return t == KeyType::kRsa2048 || t == KeyType::kRsa3072 || t == KeyType::kRsa4096;
}

}  // namespace

Result<std::shared_ptr<const X509Ca::LeafTemplate>> X509Ca::BuildLeafTemplate(const X509Ca& ca) {
  auto t = std::make_shared<LeafTemplate>();
  t->subject_name.reset(X509_NAME_new());
  if (!t->subject_name) return OsslError("x509: name");
  SIGIL_TRY(AddNameEntry(t->subject_name.get(), "O", "Sigil"));
  // Encode the fixed extensions once by building them on a scratch certificate.
  X509Ptr scratch(X509_new());
  if (!scratch) return OsslError("x509: allocation");
  SIGIL_TRY(AddBasicConstraints(scratch.get(), false));
  SIGIL_TRY(AddKeyUsage(scratch.get(), {kKuDigitalSignature}));
  SIGIL_TRY(AddServerClientEku(scratch.get()));
  X509Ptr scratch_rsa(X509_new());
  if (!scratch_rsa) return OsslError("x509: allocation");
  SIGIL_TRY(AddKeyUsage(scratch_rsa.get(), {kKuDigitalSignature, kKuKeyEncipherment}));
  auto take = [](X509* x, int nid) {
    return X509ExtensionPtr(X509_EXTENSION_dup(X509_get_ext(x, X509_get_ext_by_NID(x, nid, -1))));
  };
  t->basic_constraints = take(scratch.get(), NID_basic_constraints);
  t->ku_signature = take(scratch.get(), NID_key_usage);
  t->eku = take(scratch.get(), NID_ext_key_usage);
  t->ku_rsa = take(scratch_rsa.get(), NID_key_usage);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.certificate().get(), scratch.get(), nullptr, nullptr, 0);
  t->akid_ext.reset(
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always"));
  if (!t->basic_constraints || !t->ku_signature || !t->eku || !t->ku_rsa || !t->akid_ext) {
    return OsslError("x509: leaf extension template");
  }
  SIGIL_ASSIGN_OR_RETURN(auto bc,
                         I2dVector(i2d_X509_EXTENSION, t->basic_constraints.get(), "x509: bc"));
  SIGIL_ASSIGN_OR_RETURN(auto ku, I2dVector(i2d_X509_EXTENSION, t->ku_signature.get(), "x509: ku"));
  SIGIL_ASSIGN_OR_RETURN(auto ku_rsa, I2dVector(i2d_X509_EXTENSION, t->ku_rsa.get(), "x509: ku"));
  SIGIL_ASSIGN_OR_RETURN(auto eku, I2dVector(i2d_X509_EXTENSION, t->eku.get(), "x509: eku"));
  SIGIL_ASSIGN_OR_RETURN(t->akid, I2dVector(i2d_X509_EXTENSION, t->akid_ext.get(), "x509: akid"));
  for (auto* out : {&t->fixed_exts, &t->fixed_exts_rsa}) {
    *out = bc;
    const auto& usage = out == &t->fixed_exts ? ku : ku_rsa;
    out->insert(out->end(), usage.begin(), usage.end());
    out->insert(out->end(), eku.begin(), eku.end());
  }
  SIGIL_ASSIGN_OR_RETURN(t->subject,
                         I2dVector(i2d_X509_NAME, t->subject_name.get(), "x509: subject"));
  SIGIL_ASSIGN_OR_RETURN(
      t->issuer,
      I2dVector(i2d_X509_NAME, X509_get_subject_name(ca.certificate().get()), "x509: issuer"));
  // Ed25519 signing contexts cannot be copied; those CAs sign with a fresh context per leaf.
  if (ca.key().type() != KeyType::kEd25519) {
    t->sign_ctx.reset(EVP_MD_CTX_new());
    if (!t->sign_ctx ||
        EVP_DigestSignInit(t->sign_ctx.get(), nullptr, DefaultDigestFor(ca.key().type()), nullptr,
                           ca.key().get()) != 1) {
      return OsslError("x509: signing context");
    }
  }
  t->max_signature = static_cast<size_t>(EVP_PKEY_get_size(ca.key().get()));
  SIGIL_TRY(TemplateSignatureAlgorithm(ca, *t));
  return std::shared_ptr<const LeafTemplate>(std::move(t));
}

// The AlgorithmIdentifier OpenSSL writes for this CA key: sign a scratch certificate the way
// the pre-template code signed leaves and keep what X509_sign put in the TBSCertificate.
Result<void> X509Ca::TemplateSignatureAlgorithm(const X509Ca& ca, LeafTemplate& t) {
  TimePoint now = ca.not_before_;
  SIGIL_ASSIGN_OR_RETURN(X509Ptr scratch, NewCertificate(t.subject_name.get(), t.subject_name.get(),
                                                         ca.key().Public(), now, now));
  if (t.sign_ctx) {
    EvpMdCtxPtr sign(EVP_MD_CTX_new());
    if (!sign || EVP_MD_CTX_copy_ex(sign.get(), t.sign_ctx.get()) != 1 ||
        X509_sign_ctx(scratch.get(), sign.get()) <= 0) {
      return OsslError("x509: signature algorithm template");
    }
  } else if (X509_sign(scratch.get(), ca.key().get(), DefaultDigestFor(ca.key().type())) <= 0) {
    return OsslError("x509: signature algorithm template");
  }
  t.sig_alg_obj.reset(X509_ALGOR_dup(X509_get0_tbs_sigalg(scratch.get())));
  if (!t.sig_alg_obj) return OsslError("x509: signature algorithm template");
  SIGIL_ASSIGN_OR_RETURN(t.sig_alg, I2dVector(i2d_X509_ALGOR, t.sig_alg_obj.get(), "x509: sigalg"));
  return Ok();
}

Result<X509Ca> X509Ca::Finish() && {
  SIGIL_ASSIGN_OR_RETURN(leaf_template_, BuildLeafTemplate(*this));
  return std::move(*this);
}

Result<std::vector<uint8_t>> X509Ca::SignLeaf(std::span<const uint8_t> tbs) const {
  const LeafTemplate& t = *leaf_template_;
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  std::vector<uint8_t> sig(t.max_signature);
  size_t len = sig.size();
  if (!ctx) return OsslError("x509: signing X.509-SVID");
  if (t.sign_ctx) {
    // FINALISE: sign in place instead of duplicating the context again inside DigestSignFinal.
    if (EVP_MD_CTX_copy_ex(ctx.get(), t.sign_ctx.get()) != 1) {
      return OsslError("x509: signing X.509-SVID");
    }
    EVP_MD_CTX_set_flags(ctx.get(), EVP_MD_CTX_FLAG_FINALISE);
    if (EVP_DigestSignUpdate(ctx.get(), tbs.data(), tbs.size()) != 1 ||
        EVP_DigestSignFinal(ctx.get(), sig.data(), &len) != 1) {
      return OsslError("x509: signing X.509-SVID");
    }
  } else if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1 ||
             EVP_DigestSign(ctx.get(), sig.data(), &len, tbs.data(), tbs.size()) != 1) {
    return OsslError("x509: signing X.509-SVID");
  }
  sig.resize(len);
  return sig;
}

// version, serial, validity, names, key and the fixed extensions; the caller adds SAN, SKID,
// AKID and the signature.
Result<X509Ptr> X509Ca::NewLeafObject(std::span<const uint8_t> serial, TimePoint not_before,
                                      TimePoint not_after, const PublicKey& key) const {
  const LeafTemplate& t = *leaf_template_;
  X509Ptr x(X509_new());
  if (!x) return OsslError("x509: allocation");
  SIGIL_TRY(OsslCheck(X509_set_version(x.get(), X509_VERSION_3), "x509: version"));
  SIGIL_TRY(OsslCheck(ASN1_STRING_set(X509_get_serialNumber(x.get()), serial.data(),
                                      static_cast<int>(serial.size())),
                      "x509: serial"));
  SIGIL_TRY(SetValidity(x.get(), not_before, not_after));
  SIGIL_TRY(OsslCheck(X509_set_subject_name(x.get(), t.subject_name.get()), "x509: subject"));
  SIGIL_TRY(OsslCheck(X509_set_issuer_name(x.get(), X509_get_subject_name(certificate().get())),
                      "x509: issuer"));
  SIGIL_TRY(SetPublicKey(x.get(), key));
  X509_EXTENSION* ku = IsRsa(key.type()) ? t.ku_rsa.get() : t.ku_signature.get();
  for (const X509_EXTENSION* ext : {t.basic_constraints.get(), ku, t.eku.get()}) {
    SIGIL_ASSIGN_OR_RETURN(X509ExtensionPtr copy, CopyExtension(ext));
    SIGIL_TRY(AppendExtension(x.get(), std::move(copy)));
  }
  return x;
}

Result<IssuedX509Svid> X509Ca::IssueX509Svid(const X509SvidRequest& request, TimePoint now) const {
  if (!request.id.IsMemberOf(td_)) {
    return PermissionDenied("issue: " + request.id.str() + " is not in trust domain " + td_.name());
  }
  if (request.id.IsTrustDomainId()) {
    return InvalidArgument("issue: an X.509-SVID needs a SPIFFE ID with a path");
  }
  if (request.ttl <= Seconds(0)) return InvalidArgument("issue: ttl must be positive");
  if (request.dns_names.size() > kMaxDnsSans) {
    return InvalidArgument("issue: more than 32 DNS names");
  }
  for (const auto& dns : request.dns_names) SIGIL_TRY(ValidateDnsName(dns));
  if (now < not_before_ || now >= not_after_) {
    return FailedPrecondition("issue: CA certificate is not valid now (expired or not yet valid)");
  }
  TimePoint not_after = std::min(now + request.ttl, not_after_);
  TimePoint not_before = std::max(now - backdate_, not_before_);
  const LeafTemplate& t = *leaf_template_;

  SIGIL_ASSIGN_OR_RETURN(auto serial_bytes, RandomSerialBytes());
  // Minimal magnitude, as the ASN1_INTEGER of the object holds it.
  std::span<const uint8_t> serial(serial_bytes);
  while (serial.front() == 0) serial = serial.subspan(1);
  SIGIL_ASSIGN_OR_RETURN(X509Ptr x,
                         NewLeafObject(serial, not_before, not_after, request.public_key));
  // The key exactly as the object encodes it, so the DER and the object cannot disagree.
  SIGIL_ASSIGN_OR_RETURN(
      std::vector<uint8_t> spki,
      I2dVector(i2d_X509_PUBKEY, X509_get_X509_PUBKEY(x.get()), "x509: public key"));
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> names,
                         EncodeGeneralNames(request.id.str(), request.dns_names));
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> key_id,
                         EncodeKeyIdentifier(X509_get0_pubkey_bitstr(x.get())));
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> san, EncodeExtension(kOidSubjectAltName, names));
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> skid, EncodeExtension(kOidSubjectKeyId, key_id));
  SIGIL_ASSIGN_OR_RETURN(X509ExtensionPtr san_ext, NewExtension(NID_subject_alt_name, names));
  SIGIL_ASSIGN_OR_RETURN(X509ExtensionPtr skid_ext,
                         NewExtension(NID_subject_key_identifier, key_id));
  SIGIL_ASSIGN_OR_RETURN(X509ExtensionPtr akid_ext, CopyExtension(t.akid_ext.get()));
  SIGIL_TRY(AppendExtension(x.get(), std::move(san_ext)));
  SIGIL_TRY(AppendExtension(x.get(), std::move(skid_ext)));
  SIGIL_TRY(AppendExtension(x.get(), std::move(akid_ext)));

  der::DerWriter tbs_writer(1024);
  tbs_writer.Begin(der::kSequence);
  tbs_writer.AddRaw(kVersion3);
  tbs_writer.AddUnsignedInteger(serial);
  tbs_writer.AddRaw(t.sig_alg);
  tbs_writer.AddRaw(t.issuer);
  tbs_writer.Begin(der::kSequence);
  tbs_writer.AddTime(not_before);
  tbs_writer.AddTime(not_after);
  tbs_writer.End();
  tbs_writer.AddRaw(t.subject);
  tbs_writer.AddRaw(spki);
  tbs_writer.Begin(der::ContextTag(3, true));
  tbs_writer.Begin(der::kSequence);
  tbs_writer.AddRaw(IsRsa(request.public_key.type()) ? t.fixed_exts_rsa : t.fixed_exts);
  tbs_writer.AddRaw(san);
  tbs_writer.AddRaw(skid);
  tbs_writer.AddRaw(t.akid);
  tbs_writer.End();
  tbs_writer.End();
  tbs_writer.End();
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> tbs, std::move(tbs_writer).Finish());
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> sig, SignLeaf(tbs));

  der::DerWriter cert_writer(tbs.size() + t.sig_alg.size() + sig.size() + 16);
  cert_writer.Begin(der::kSequence);
  cert_writer.AddRaw(tbs);
  cert_writer.AddRaw(t.sig_alg);
  cert_writer.AddBitString(sig);
  cert_writer.End();
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> cert_der, std::move(cert_writer).Finish());
  SIGIL_TRY(AttachSignature(x.get(), t.sig_alg_obj.get(), sig));
#ifndef NDEBUG
  SIGIL_ASSIGN_OR_RETURN(std::vector<uint8_t> object_der,
                         I2dVector(i2d_X509, x.get(), "x509: encode"));
  if (object_der != cert_der) return Internal("x509: leaf object and signed DER differ");
#endif

  IssuedX509Svid out{Certificate::Adopt(std::move(x)), {}, std::move(cert_der)};
  out.chain.reserve(1 + leaf_suffix_.size());
  out.chain.push_back(out.leaf);
  out.chain.insert(out.chain.end(), leaf_suffix_.begin(), leaf_suffix_.end());
  return out;
}

}  // namespace sigil::core
