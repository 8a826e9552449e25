// ServerIdentity: the server's own TLS certificate (spiffe://TD/sigil/server) and the roots it
// verifies clients against, kept current while the server runs.
//
// - The SVID is reissued for the same key once half of its lifetime has passed (the server
//   certificate lasts ControlPlaneOptions::server_svid_ttl, 24 h by default), and at once when
//   a CA rotation activated a new generation: by then every client has had the new root in its
//   bundle for the propagation delay, and the old CA can leave the bundle sooner.
// - The roots follow the bundle: after a CA rotation, clients with SVIDs from the new CA are
//   accepted without a restart, and the server chain ends with the new root.
//
// Consumers:
// - OpenSSL servers (the admin API): InstallOn(ctx) registers a certificate callback that, per
//   handshake, serves the current chain and key and verifies the client against the current
//   roots. Connections already established keep the identity they were made with.
// - gRPC (the agent API): WriteFiles keeps <dir>/server.key (0600), server.crt and roots.pem
//   current; a grpc FileWatcherCertificateProvider re-reads them (see agent_api.h). The key
//   stays the same across renewals, so a watcher never sees a mismatched key and certificate.
//
// Thread-safe: Refresh() may run on a maintenance thread while handshakes read Current().
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/ossl.h"
#include "common/result.h"
#include "core/keys.h"
#include "server/control_plane.h"

namespace sigil::server {

class ServerIdentity {
 public:
  struct Material {
    X509Ptr leaf;
    std::vector<X509Ptr> chain;  // after the leaf: intermediates, then the root
    X509StorePtr roots;          // bundle roots, for client verification
    std::string chain_pem;       // leaf first
    std::string roots_pem;
    std::string serial;
    std::string signer_sha256;  // the CA certificate that signed the leaf
    uint64_t bundle_sequence = 0;
    TimePoint not_before;
    TimePoint not_after;
    TimePoint issued_at;  // renewal counts from here (not_before is backdated by the CA)
  };

  // Issues the first certificate. `files_dir` (may be empty) receives the gRPC files.
  static Result<std::unique_ptr<ServerIdentity>> Create(ControlPlane& cp,
                                                        std::vector<std::string> dns_names,
                                                        std::string files_dir);

  // Reissues the certificate when half its lifetime has passed or another CA signs now, and
  // rebuilds the roots when the bundle changed. Returns true when anything changed (files
  // rewritten then).
  Result<bool> Refresh();

  std::shared_ptr<const Material> Current() const;
  // The PKCS#8 PEM of the (stable) key, for one-off consumers (tests, gRPC static setup).
  Result<SecretBytes> KeyPem() const { return key_.ToPkcs8Pem(); }

  // Serves Current() on every handshake of `ctx`. This object must outlive `ctx`.
  bool InstallOn(SSL_CTX& ctx);

  std::string key_path() const { return files_dir_ + "/server.key"; }
  std::string chain_path() const { return files_dir_ + "/server.crt"; }
  std::string roots_path() const { return files_dir_ + "/roots.pem"; }

 private:
  ServerIdentity(ControlPlane& cp, std::vector<std::string> dns_names, std::string files_dir,
                 core::PrivateKey key)
      : cp_(cp),
        dns_names_(std::move(dns_names)),
        files_dir_(std::move(files_dir)),
        key_(std::move(key)) {}
  Result<std::shared_ptr<const Material>> Build(bool reissue,
                                                const std::shared_ptr<const Material>& old);
  Result<void> WriteFiles(const Material& m);
  static int CertCallback(SSL* ssl, void* arg);

  ControlPlane& cp_;
  const std::vector<std::string> dns_names_;
  const std::string files_dir_;
  const core::PrivateKey key_;
  EvpPkeyPtr ssl_key_;  // key_ as an EVP_PKEY shared with OpenSSL (up-ref'd)

  mutable std::mutex mu_;
  std::shared_ptr<const Material> current_;  // guarded by mu_
};

}  // namespace sigil::server
