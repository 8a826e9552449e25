#include "server/server_identity.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/file_util.h"
#include "core/certificate.h"

namespace sigil::server {

Result<std::unique_ptr<ServerIdentity>> ServerIdentity::Create(ControlPlane& cp,
                                                               std::vector<std::string> dns_names,
                                                               std::string files_dir) {
  SIGIL_ASSIGN_OR_RETURN(auto key, core::PrivateKey::Generate(core::KeyType::kEcP256));
  std::unique_ptr<ServerIdentity> id(
      new ServerIdentity(cp, std::move(dns_names), std::move(files_dir), std::move(key)));
  EVP_PKEY_up_ref(id->key_.get());
  id->ssl_key_.reset(id->key_.get());
  if (!id->files_dir_.empty()) SIGIL_TRY(MakeDirs(id->files_dir_, 0700));
  SIGIL_ASSIGN_OR_RETURN(auto first, id->Build(true, nullptr));
  if (!id->files_dir_.empty()) SIGIL_TRY(id->WriteFiles(*first));
  id->current_ = std::move(first);
  return id;
}

std::shared_ptr<const ServerIdentity::Material> ServerIdentity::Current() const {
  std::lock_guard lock(mu_);
  return current_;
}

Result<std::shared_ptr<const ServerIdentity::Material>> ServerIdentity::Build(
    bool reissue, const std::shared_ptr<const Material>& old) {
  auto m = std::make_shared<Material>();
  if (reissue) {
    SIGIL_ASSIGN_OR_RETURN(AdminCredential cred, cp_.IssueServerCredential(dns_names_, &key_));
    SIGIL_ASSIGN_OR_RETURN(auto certs, core::ParseCertificatesPem(cred.chain_pem));
    m->chain_pem = std::move(cred.chain_pem);
    m->serial = certs.front().SerialHex();
    // The chain is leaf, the signing CA's certificate, ... (IssueServerCredential).
    if (certs.size() >= 2) m->signer_sha256 = certs[1].Fingerprint();
    m->not_before = certs.front().NotBefore();
    m->not_after = certs.front().NotAfter();
    m->issued_at = cp_.clock().Now();
    X509_up_ref(certs.front().get());
    m->leaf.reset(certs.front().get());
    for (size_t i = 1; i < certs.size(); ++i) {
      X509_up_ref(certs[i].get());
      m->chain.emplace_back(certs[i].get());
    }
  } else {
    m->chain_pem = old->chain_pem;
    m->serial = old->serial;
    m->signer_sha256 = old->signer_sha256;
    m->not_before = old->not_before;
    m->not_after = old->not_after;
    m->issued_at = old->issued_at;
    X509_up_ref(old->leaf.get());
    m->leaf.reset(old->leaf.get());
    for (const auto& c : old->chain) {
      X509_up_ref(c.get());
      m->chain.emplace_back(c.get());
    }
  }
  core::TrustBundle bundle = cp_.Bundle();
  m->bundle_sequence = bundle.sequence();
  m->roots_pem = bundle.X509AuthoritiesPem();
  m->roots.reset(X509_STORE_new());
  if (!m->roots) return Internal("server identity: X509_STORE_new failed");
  for (const auto& root : bundle.x509_authorities()) {
    if (X509_STORE_add_cert(m->roots.get(), root.get()) != 1) {
      return OsslError("server identity: adding a bundle root");
    }
  }
  return std::shared_ptr<const Material>(std::move(m));
}

Result<bool> ServerIdentity::Refresh() {
  std::shared_ptr<const Material> old = Current();
  const TimePoint now = cp_.clock().Now();
  const bool roots_changed = cp_.Bundle().sequence() != old->bundle_sequence;
  // An activation always changes the bundle, so the signer is compared only then.
  const bool reissue = now >= old->issued_at + (old->not_after - old->issued_at) / 2 ||
                       (roots_changed && cp_.SigningCa().Fingerprint() != old->signer_sha256);
  if (!reissue && !roots_changed) return false;
  SIGIL_ASSIGN_OR_RETURN(auto next, Build(reissue, old));
  if (!files_dir_.empty()) SIGIL_TRY(WriteFiles(*next));
  std::lock_guard lock(mu_);
  current_ = std::move(next);
  return true;
}

Result<void> ServerIdentity::WriteFiles(const Material& m) {
  // Key first (it never changes after the first write), then the certificate, then roots.
  SIGIL_ASSIGN_OR_RETURN(SecretBytes key_pem, key_.ToPkcs8Pem());
  SIGIL_TRY(WriteFileAtomic(key_path(), key_pem.view(), 0600));
  SIGIL_TRY(WriteFileAtomic(chain_path(), m.chain_pem, 0644));
  return WriteFileAtomic(roots_path(), m.roots_pem, 0644);
}

int ServerIdentity::CertCallback(SSL* ssl, void* arg) {
  auto* self = static_cast<ServerIdentity*>(arg);
  std::shared_ptr<const Material> m = self->Current();
  if (SSL_use_certificate(ssl, m->leaf.get()) != 1) return 0;
  if (SSL_use_PrivateKey(ssl, self->ssl_key_.get()) != 1) return 0;
  if (SSL_clear_chain_certs(ssl) != 1) return 0;
  for (const auto& c : m->chain) {
    if (SSL_add1_chain_cert(ssl, c.get()) != 1) return 0;
  }
  return SSL_set1_verify_cert_store(ssl, m->roots.get()) == 1 ? 1 : 0;
}

bool ServerIdentity::InstallOn(SSL_CTX& ctx) {
  std::shared_ptr<const Material> m = Current();
  // The context's own certificate and store are what handshakes start from; the callback
  // replaces both per connection with the current ones.
  if (SSL_CTX_use_certificate(&ctx, m->leaf.get()) != 1) return false;
  if (SSL_CTX_use_PrivateKey(&ctx, ssl_key_.get()) != 1) return false;
  for (const auto& c : m->chain) {
    if (SSL_CTX_add1_chain_cert(&ctx, c.get()) != 1) return false;
  }
  if (SSL_CTX_set1_verify_cert_store(&ctx, m->roots.get()) != 1) return false;
  SSL_CTX_set_cert_cb(&ctx, &ServerIdentity::CertCallback, this);
  return true;
}

}  // namespace sigil::server
