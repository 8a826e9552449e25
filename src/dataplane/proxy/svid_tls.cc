#include "dataplane/proxy/svid_tls.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <array>
#include <map>
#include <mutex>
#include <vector>

#include "common/clock.h"
#include "core/x509_svid.h"
#include "dataplane/ktls/ktls.h"
#include "dataplane/protocol/mux_frame.h"
#include "dataplane/protocol/preamble.h"

namespace sigil::dataplane {
namespace {

// ex_data slot holding a heap-allocated shared_ptr<PeerCheck>, freed with the SSL.
int PeerCheckIndex() {
  static const int index = SSL_get_ex_new_index(
      0, nullptr, nullptr, nullptr,
      [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {  // NOLINT(google-runtime-int)
        delete static_cast<std::shared_ptr<PeerCheck>*>(ptr);
      });
  return index;
}

// Verified peer leaves, by SHA-256 of the leaf's DER. Every new connection (a resumed one
// too) re-checks its peer, and a full path validation (store, ECDSA verify) costs more than
// the rest of a resumed handshake; a leaf that validated once against the same trust bundle
// stays valid until it expires. Keyed by the whole certificate, so only a holder of that
// exact certificate (and, in the handshake, its key or the session's PSK) benefits. Bounded;
// cleared wholesale when full.
class VerifiedLeafCache {
 public:
  std::optional<core::SpiffeId> Find(const std::array<unsigned char, 32>& key,
                                     const core::BundleSet& bundles, TimePoint now) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return std::nullopt;
    const Entry& e = it->second;
    if (now >= e.not_after || bundles.Find(e.id.trust_domain()).get() != e.bundle) {
      entries_.erase(it);
      return std::nullopt;
    }
    return e.id;
  }
  void Put(const std::array<unsigned char, 32>& key, const core::SpiffeId& id,
           const core::BundleSet& bundles, TimePoint not_after) {
    std::lock_guard lock(mu_);
    if (entries_.size() >= 4096) entries_.clear();
    entries_.insert_or_assign(key, Entry{id, not_after, bundles.Find(id.trust_domain()).get()});
  }

 private:
  struct Entry {
    core::SpiffeId id;
    TimePoint not_after;
    const core::TrustBundle* bundle;  // identity of the bundle it was verified against
  };
  std::mutex mu_;
  std::map<std::array<unsigned char, 32>, Entry> entries_;
};

VerifiedLeafCache& LeafCache() {
  static VerifiedLeafCache* cache = new VerifiedLeafCache();  // never destroyed (threads)
  return *cache;
}

std::optional<std::array<unsigned char, 32>> LeafKey(X509* leaf) {
  std::array<unsigned char, 32> key{};
  unsigned int len = 0;
  if (X509_digest(leaf, EVP_sha256(), key.data(), &len) != 1 || len != key.size()) {
    return std::nullopt;
  }
  return key;
}

// Full verification of `chain` (leaf first), through the cache.
Result<core::SpiffeId> VerifyChain(std::vector<core::Certificate>& chain,
                                   const core::BundleSet& bundles) {
  const TimePoint now = Clock::System().Now();
  auto key = LeafKey(chain.front().get());
  if (key) {
    if (auto hit = LeafCache().Find(*key, bundles, now)) return *hit;
  }
  SIGIL_ASSIGN_OR_RETURN(core::SpiffeId id, core::VerifyX509Svid(chain, bundles, now));
  if (key) LeafCache().Put(*key, id, bundles, chain.front().NotAfter());
  return id;
}

// After path validation (the verified-leaf cache above does not know revocations).
std::optional<std::string> RevokedReason(const core::RevocationSet* revoked,
                                         const core::Certificate& leaf) {
  if (revoked == nullptr || revoked->empty()) return std::nullopt;
  const auto* e = revoked->FindCertificate(leaf);
  if (e == nullptr) return std::nullopt;
  return "peer certificate " + leaf.SerialHex() + ": " + core::RevocationSet::Describe(*e);
}

int VerifyPeer(X509_STORE_CTX* store_ctx, void*) {
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  PeerCheck* check = ssl == nullptr ? nullptr : PeerCheckOf(ssl);
  if (check == nullptr) {
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  std::vector<core::Certificate> chain;
  X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
  if (leaf == nullptr) {
    check->failure = "peer sent no certificate";
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  chain.push_back(core::Certificate::FromX509(leaf));
  STACK_OF(X509)* untrusted = X509_STORE_CTX_get0_untrusted(store_ctx);
  for (int i = 0; untrusted != nullptr && i < sk_X509_num(untrusted); ++i) {
    X509* c = sk_X509_value(untrusted, i);
    if (X509_cmp(c, leaf) == 0) continue;
    chain.push_back(core::Certificate::FromX509(c));
  }
  auto id = VerifyChain(chain, check->bundles);
  if (!id.ok()) {
    check->failure = id.error().message();
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_UNTRUSTED);
    return 0;
  }
  if (check->expect && *id != *check->expect) {
    check->failure = "peer is " + id->str() + ", expected " + check->expect->str();
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  if (auto revoked = RevokedReason(check->revoked.get(), chain.front())) {
    check->failure = *revoked;
    check->peer_revoked = true;
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_REVOKED);
    return 0;
  }
  check->verified = std::move(*id);
  return 1;
}

int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  // `in` is a list of length-prefixed protocol names: sigil/2 (pooled) when offered, else
  // sigil/1; nothing else.
  const unsigned char* v1 = nullptr;
  for (unsigned int i = 0; i < inlen;) {
    const unsigned int len = in[i];
    if (i + 1 + len > inlen) break;
    const std::string_view name(reinterpret_cast<const char*>(in + i + 1), len);
    if (name == mux::kAlpn2) {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    if (name == kAlpn) v1 = in + i + 1;
    i += 1 + len;
  }
  if (v1 == nullptr) return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = v1;
  *outlen = static_cast<unsigned char>(kAlpn.size());
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

void AttachPeerCheck(SSL* ssl, std::shared_ptr<PeerCheck> check) {
  auto* old = static_cast<std::shared_ptr<PeerCheck>*>(SSL_get_ex_data(ssl, PeerCheckIndex()));
  delete old;
  SSL_set_ex_data(ssl, PeerCheckIndex(), new std::shared_ptr<PeerCheck>(std::move(check)));
}

PeerCheck* PeerCheckOf(SSL* ssl) {
  auto* holder = static_cast<std::shared_ptr<PeerCheck>*>(SSL_get_ex_data(ssl, PeerCheckIndex()));
  return holder == nullptr ? nullptr : holder->get();
}

namespace {

int OnNewSession(SSL* ssl, SSL_SESSION* session) {
  PeerCheck* check = PeerCheckOf(ssl);
  if (check == nullptr || !check->on_session) return 0;
  check->on_session(session);  // takes its own reference
  return 0;
}

Result<SslCtxPtr> NewContext(TlsRole role) {
  SslCtxPtr ctx(SSL_CTX_new(role == TlsRole::kClient ? TLS_client_method() : TLS_server_method()));
  if (!ctx) return OsslError("SSL_CTX_new");
  // Key export after the handshake: the relay then protects records itself (or the kernel
  // does, with kTLS) and frees the SSL (docs/dataplane.md, "Record layer after the handshake").
  SIGIL_TRY(ktls::PrepareContextForKtls(ctx.get()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  // X25519 first: the cheapest (EC)DHE, which every handshake (resumed ones too) pays.
  SSL_CTX_set1_groups_list(ctx.get(), "X25519:P-256");
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_cert_verify_callback(ctx.get(), VerifyPeer, nullptr);
  if (role == TlsRole::kClient) {
    static const unsigned char kAlpnWire[] = {7, 's', 'i', 'g', 'i', 'l', '/', '1'};
    SSL_CTX_set_alpn_protos(ctx.get(), kAlpnWire, sizeof kAlpnWire);
    // Resumption (docs/dataplane.md, "Cheap new connections"): tickets are handed to the
    // proxy's own cache, keyed by source SVID and destination.
    SSL_CTX_set_session_cache_mode(ctx.get(),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx.get(), OnNewSession);
  } else {
    SSL_CTX_set_alpn_select_cb(ctx.get(), SelectAlpn, nullptr);
    static const unsigned char kSessionContext[] = {'s', 'i', 'g', 'i', 'l', '/', '1'};
    SSL_CTX_set_session_id_context(ctx.get(), kSessionContext, sizeof kSessionContext);
    SSL_CTX_set_timeout(ctx.get(), 300);  // ticket lifetime: 5 minutes at most
    SSL_CTX_set_num_tickets(ctx.get(), 1);
  }
  return ctx;
}

}  // namespace

Result<core::SpiffeId> PeerIdentity(SSL* ssl, PeerCheck& check) {
  if (check.verified) return *check.verified;
  if (SSL_session_reused(ssl) != 1) {
    return Unauthenticated(check.failure.empty() ? "peer not verified" : check.failure);
  }
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (leaf == nullptr) return Unauthenticated("resumed session carries no peer certificate");
  std::vector<core::Certificate> chain{core::Certificate::FromX509(leaf)};
  if (STACK_OF(X509)* more = SSL_get_peer_cert_chain(ssl)) {
    for (int i = 0; i < sk_X509_num(more); ++i) {
      X509* c = sk_X509_value(more, i);
      if (X509_cmp(c, leaf) != 0) chain.push_back(core::Certificate::FromX509(c));
    }
  }
  auto id = VerifyChain(chain, check.bundles);
  if (!id.ok()) return Unauthenticated("resumed session: " + id.error().message());
  if (check.expect && *id != *check.expect) {
    return Unauthenticated("resumed session: peer is " + id->str() + ", expected " +
                           check.expect->str());
  }
  if (auto revoked = RevokedReason(check.revoked.get(), chain.front())) {
    check.failure = *revoked;
    check.peer_revoked = true;
    return Unauthenticated("resumed session: " + *revoked);
  }
  check.verified = *id;
  return *id;
}

ConnCertificates CaptureCertificates(SSL* ssl) {
  ConnCertificates out;
  auto record = [](X509* x, std::string& serial, std::string& id) {
    if (x == nullptr) return;
    const core::Certificate cert = core::Certificate::FromX509(x);
    serial = cert.SerialHex();
    auto uris = cert.UriSans();
    if (!uris.empty()) id = uris.front();
  };
  record(SSL_get_certificate(ssl), out.local_serial, out.local_id);
  record(SSL_get0_peer_certificate(ssl), out.peer_serial, out.peer_id);
  return out;
}

Result<SslCtxPtr> MakeBaseServerContext() { return NewContext(TlsRole::kServer); }

Result<SslCtxPtr> MakeSvidContext(const agent::workloadapi::X509SvidGrant& grant, TlsRole role) {
  if (grant.chain.empty()) return InvalidArgument("svid " + grant.spiffe_id + ": empty chain");
  SIGIL_ASSIGN_OR_RETURN(SslCtxPtr ctx, NewContext(role));
  if (SSL_CTX_use_certificate(ctx.get(), grant.chain.front().get()) != 1) {
    return OsslError("svid " + grant.spiffe_id + ": certificate");
  }
  for (size_t i = 1; i < grant.chain.size(); ++i) {
    // add1: the context takes its own reference.
    if (SSL_CTX_add1_chain_cert(ctx.get(), grant.chain[i].get()) != 1) {
      return OsslError("svid " + grant.spiffe_id + ": chain");
    }
  }
  const auto* der = grant.key_pkcs8_der.data();
  EvpPkeyPtr key(d2i_AutoPrivateKey(nullptr, &der, static_cast<long>(grant.key_pkcs8_der.size())));
  if (!key || SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    return OsslError("svid " + grant.spiffe_id + ": private key");
  }
  return ctx;
}

}  // namespace sigil::dataplane
