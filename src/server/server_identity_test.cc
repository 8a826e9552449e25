// ServerIdentity: renewal at half-life for the same key, roots following CA rotation, and the
// OpenSSL certificate callback serving the current chain to new handshakes (in-memory TLS).
#include "server/server_identity.h"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <filesystem>

#include "common/file_util.h"
#include "core/certificate.h"
#include "store/sqlite_store.h"

namespace sigil::server {
namespace {

using namespace std::chrono_literals;

// Runs a TLS handshake between a fresh client and `server_ctx` over memory BIOs and returns the
// chain the server presented (leaf first).
std::vector<core::Certificate> Handshake(SSL_CTX* server_ctx) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> client_ctx(SSL_CTX_new(TLS_client_method()),
                                                               SSL_CTX_free);
  SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_NONE, nullptr);
  std::unique_ptr<SSL, decltype(&SSL_free)> client(SSL_new(client_ctx.get()), SSL_free);
  std::unique_ptr<SSL, decltype(&SSL_free)> server(SSL_new(server_ctx), SSL_free);
  BIO* c_bio = nullptr;
  BIO* s_bio = nullptr;
  BIO_new_bio_pair(&c_bio, 0, &s_bio, 0);
  SSL_set_bio(client.get(), c_bio, c_bio);
  SSL_set_bio(server.get(), s_bio, s_bio);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());
  for (int i = 0; i < 20; ++i) {
    int c = SSL_do_handshake(client.get());
    int s = SSL_do_handshake(server.get());
    if (c == 1 && s == 1) break;
  }
  std::vector<core::Certificate> out;
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(client.get());
  for (int i = 0; chain != nullptr && i < sk_X509_num(chain); ++i) {
    out.push_back(core::Certificate::FromX509(sk_X509_value(chain, i)));
  }
  ERR_clear_error();
  return out;
}

class ServerIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sigil-server-identity-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto store = store::SqliteStore::Open(":memory:");
    ASSERT_TRUE(store.ok());
    auto kek = core::Kek::FromBytes(SecretBytes(32));
    ASSERT_TRUE(kek.ok());
    ControlPlaneOptions options{{*core::TrustDomain::Parse("example.org")}, {}, {}};
    options.ca.ttl = Seconds(10 * 24 * 3600);
    options.server_svid_ttl = Seconds(24 * 3600);
    auto cp = ControlPlane::Open(options, std::move(store).value(), std::move(kek).value(), clock_);
    ASSERT_TRUE(cp.ok()) << cp.error().ToString();
    cp_ = std::move(cp).value();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  FakeClock clock_{Clock::System().Now()};
  std::string dir_;
  std::unique_ptr<ControlPlane> cp_;
};

TEST_F(ServerIdentityTest, RenewsAtHalfLifeForTheSameKeyAndServesNewHandshakes) {
  auto id = ServerIdentity::Create(*cp_, {"localhost", "sigil.test"}, dir_ + "/tls");
  ASSERT_TRUE(id.ok()) << id.error().ToString();
  auto first = (*id)->Current();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()),
                                                        SSL_CTX_free);
  ASSERT_TRUE((*id)->InstallOn(*ctx));
  auto served = Handshake(ctx.get());
  ASSERT_EQ(served.size(), 2u);
  EXPECT_EQ(served[0].SerialHex(), first->serial);
  EXPECT_EQ(served[1].Fingerprint(), cp_->Root().Fingerprint());  // ends with the pinned root
  EXPECT_EQ(served[0].DnsSans(), (std::vector<std::string>{"localhost", "sigil.test"}));

  // Files for gRPC: key 0600, chain = what the callback serves.
  struct stat st {};
  ASSERT_EQ(::stat((*id)->key_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto chain_file = ReadFile((*id)->chain_path(), 1 << 16);
  ASSERT_TRUE(chain_file.ok());
  EXPECT_EQ(*chain_file, first->chain_pem);
  auto key_before = ReadFile((*id)->key_path(), 1 << 16);

  clock_.Advance(11h);
  auto early = (*id)->Refresh();
  ASSERT_TRUE(early.ok());
  EXPECT_FALSE(*early);
  clock_.Advance(2h);  // past half of 24 h
  auto renewed = (*id)->Refresh();
  ASSERT_TRUE(renewed.ok()) << renewed.error().ToString();
  EXPECT_TRUE(*renewed);
  auto second = (*id)->Current();
  EXPECT_NE(second->serial, first->serial);
  auto served_again = Handshake(ctx.get());
  ASSERT_FALSE(served_again.empty());
  EXPECT_EQ(served_again[0].SerialHex(), second->serial);
  // Same key: the gRPC watcher never pairs a new certificate with an old key.
  auto pk1 = served[0].PublicKeyOf();
  auto pk2 = served_again[0].PublicKeyOf();
  ASSERT_TRUE(pk1.ok() && pk2.ok());
  EXPECT_EQ(pk1->ToDer(), pk2->ToDer());
  EXPECT_EQ(*ReadFile((*id)->key_path(), 1 << 16), *key_before);
  EXPECT_EQ(*ReadFile((*id)->chain_path(), 1 << 16), second->chain_pem);
}

TEST_F(ServerIdentityTest, RootsFollowCaRotation) {
  auto id = ServerIdentity::Create(*cp_, {"localhost"}, dir_ + "/tls");
  ASSERT_TRUE(id.ok());
  const std::string old_root = cp_->Root().Fingerprint();
  // Walk the clock through the CA's life: the next CA is published, then activated.
  bool saw_two_roots = false;
  for (int day = 0; day < 9; ++day) {
    clock_.Advance(24h);
    ASSERT_TRUE(cp_->RotateIfDue().ok());
    ASSERT_TRUE((*id)->Refresh().ok());
    auto m = (*id)->Current();
    auto roots = core::ParseCertificatesPem(m->roots_pem);
    ASSERT_TRUE(roots.ok());
    if (roots->size() == 2) saw_two_roots = true;
    EXPECT_EQ(m->bundle_sequence, cp_->Bundle().sequence());
    EXPECT_EQ(*ReadFile((*id)->roots_path(), 1 << 16), m->roots_pem);
  }
  EXPECT_TRUE(saw_two_roots) << "the next CA never reached the server's client roots";
  ASSERT_NE(cp_->Root().Fingerprint(), old_root) << "the CA did not rotate in 9 of 10 days";
  // After the switch, the renewed certificate's chain ends with the new root.
  auto chain = core::ParseCertificatesPem((*id)->Current()->chain_pem);
  ASSERT_TRUE(chain.ok());
  EXPECT_EQ(chain->back().Fingerprint(), cp_->Root().Fingerprint());
}

TEST_F(ServerIdentityTest, ReissuedByTheNewCaRightAfterActivation) {
  auto id = ServerIdentity::Create(*cp_, {"localhost"}, dir_ + "/tls");
  ASSERT_TRUE(id.ok());
  const auto first = (*id)->Current();
  const std::string old_ca = cp_->SigningCa().Fingerprint();
  auto prepared = cp_->RotateCa(Seconds(10), false, "test");
  ASSERT_TRUE(prepared.ok()) << prepared.error().ToString();
  // Published: the client roots gain the new CA, the certificate stays (old CA still signs).
  ASSERT_TRUE(*(*id)->Refresh());
  EXPECT_EQ((*id)->Current()->serial, first->serial);
  EXPECT_EQ(core::ParseCertificatesPem((*id)->Current()->roots_pem)->size(), 2u);
  // Activated, long before half-life: reissued by the new CA at the next refresh.
  clock_.Set(*prepared->activate_at);  // now + 10 s, rounded up to a whole second
  ASSERT_TRUE(*cp_->RotateIfDue());
  ASSERT_TRUE(*(*id)->Refresh());
  auto m = (*id)->Current();
  EXPECT_NE(m->serial, first->serial);
  EXPECT_EQ(m->signer_sha256, prepared->ca_sha256);
  EXPECT_NE(m->signer_sha256, old_ca);
  auto chain = core::ParseCertificatesPem(*ReadFile((*id)->chain_path(), 1 << 16));
  ASSERT_TRUE(chain.ok());
  ASSERT_GE(chain->size(), 2u);
  EXPECT_EQ(X509_check_issued((*chain)[1].get(), (*chain)[0].get()), X509_V_OK);
  EXPECT_EQ((*chain)[1].Fingerprint(), prepared->ca_sha256);
  // Nothing more to do until half-life.
  EXPECT_FALSE(*(*id)->Refresh());
}

}  // namespace
}  // namespace sigil::server
