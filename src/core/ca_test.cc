#include "core/ca.h"

#include <gtest/gtest.h>

#include <set>

#include "core/testing/pki_fixture.h"
#include "core/x509_svid.h"

namespace sigil::core {
namespace {

using testing::Id;
using testing::MakeCa;
using testing::Td;
using testing::TestNow;

PublicKey NewPub(KeyType t = KeyType::kEcP256) { return PrivateKey::Generate(t)->Public(); }

bool ExtensionCritical(const Certificate& c, int nid) {
  int i = X509_get_ext_by_NID(c.get(), nid, -1);
  return i >= 0 && X509_EXTENSION_get_critical(X509_get_ext(c.get(), i)) == 1;
}

TEST(X509Ca, SelfSignedRootProfile) {
  X509Ca ca = MakeCa("example.org");
  const Certificate& cert = ca.certificate();
  EXPECT_TRUE(cert.IsCa());
  EXPECT_TRUE(cert.IsSelfSigned());
  EXPECT_EQ(ca.chain().size(), 1u);
  EXPECT_EQ(cert.UriSans(), std::vector<std::string>{"spiffe://example.org"});
  EXPECT_TRUE(ExtensionCritical(cert, NID_basic_constraints));
  EXPECT_TRUE(ExtensionCritical(cert, NID_key_usage));
  uint32_t ku = X509_get_key_usage(cert.get());
  EXPECT_TRUE(ku & KU_KEY_CERT_SIGN);
  EXPECT_TRUE(ku & KU_CRL_SIGN);
  EXPECT_EQ(X509_get_pathlen(cert.get()), 0);
  EXPECT_EQ(cert.NotBefore(), TestNow() - kDefaultBackdate);
  EXPECT_EQ(cert.NotAfter(), TestNow() + kDefaultCaTtl);
  EXPECT_NE(X509_get0_subject_key_id(cert.get()), nullptr);
}

TEST(X509Ca, IssuedLeafFollowsX509SvidProfile) {
  X509Ca ca = MakeCa();
  PublicKey pub = NewPub();
  auto svid = ca.IssueX509Svid({Id("spiffe://example.org/ns/prod/sa/web"),
                                pub,
                                {"web.example.org", "localhost"},
                                Seconds(3600)},
                               TestNow());
  ASSERT_TRUE(svid.ok()) << svid.error().ToString();
  const Certificate& leaf = svid->leaf;
  EXPECT_EQ(leaf.UriSans(), std::vector<std::string>{"spiffe://example.org/ns/prod/sa/web"});
  EXPECT_EQ(leaf.DnsSans(), (std::vector<std::string>{"web.example.org", "localhost"}));
  EXPECT_FALSE(leaf.IsCa());
  EXPECT_TRUE(ExtensionCritical(leaf, NID_basic_constraints));
  EXPECT_TRUE(ExtensionCritical(leaf, NID_key_usage));
  EXPECT_EQ(X509_get_key_usage(leaf.get()), uint32_t{KU_DIGITAL_SIGNATURE});
  uint32_t xku = X509_get_extended_key_usage(leaf.get());
  EXPECT_TRUE(xku & XKU_SSL_SERVER);
  EXPECT_TRUE(xku & XKU_SSL_CLIENT);
  EXPECT_EQ(leaf.NotBefore(), TestNow() - kDefaultBackdate);
  EXPECT_EQ(leaf.NotAfter(), TestNow() + Seconds(3600));
  EXPECT_TRUE(leaf.PublicKeyOf()->Equals(pub));
  EXPECT_EQ(X509_check_issued(ca.certificate().get(), leaf.get()), X509_V_OK);
  ASSERT_EQ(svid->chain.size(), 1u);  // a self-signed root is never sent
  EXPECT_TRUE(CheckLeafProfile(leaf).ok());
}

TEST(X509Ca, RsaLeafAlsoAllowsKeyEncipherment) {
  X509Ca ca = MakeCa();
  auto svid = ca.IssueX509Svid(
      {Id("spiffe://example.org/legacy"), NewPub(KeyType::kRsa2048), {}, Seconds(60)}, TestNow());
  ASSERT_TRUE(svid.ok());
  EXPECT_EQ(X509_get_key_usage(svid->leaf.get()),
            uint32_t{KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT});
}

TEST(X509Ca, SerialsAre128BitRandomAndDistinct) {
  X509Ca ca = MakeCa();
  PublicKey pub = NewPub();
  std::set<std::string> serials;
  int wide = 0;
  for (int i = 0; i < 64; ++i) {
    auto svid = ca.IssueX509Svid({Id("spiffe://example.org/w"), pub, {}, Seconds(60)}, TestNow());
    ASSERT_TRUE(svid.ok());
    std::string hex = svid->leaf.SerialHex();
    EXPECT_LE(hex.size(), 32u);
    if (hex.size() >= 30) ++wide;  // 128 random bits: fewer than 30 hex digits is rare
    serials.insert(hex);
  }
  EXPECT_EQ(serials.size(), 64u);
  EXPECT_GE(wide, 60);
}

TEST(X509Ca, LeafNeverOutlivesItsSigner) {
  X509Ca ca = MakeCa("example.org", TestNow(), Seconds(7200));
  auto svid = ca.IssueX509Svid({Id("spiffe://example.org/w"), NewPub(), {}, Seconds(5 * 3600)},
                               TestNow() + Seconds(3600));
  ASSERT_TRUE(svid.ok());
  EXPECT_EQ(svid->leaf.NotAfter(), ca.not_after());
}

TEST(X509Ca, RefusesBadRequests) {
  X509Ca ca = MakeCa();
  PublicKey pub = NewPub();
  auto other_td = ca.IssueX509Svid({Id("spiffe://other.org/w"), pub, {}, Seconds(60)}, TestNow());
  ASSERT_FALSE(other_td.ok());
  EXPECT_EQ(other_td.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_FALSE(
      ca.IssueX509Svid({Id("spiffe://example.org"), pub, {}, Seconds(60)}, TestNow()).ok());
  EXPECT_FALSE(
      ca.IssueX509Svid({Id("spiffe://example.org/w"), pub, {}, Seconds(0)}, TestNow()).ok());
  // A DNS name cannot smuggle in further SANs.
  auto inject = ca.IssueX509Svid(
      {Id("spiffe://example.org/w"), pub, {"a.com,URI:spiffe://example.org/admin"}, Seconds(60)},
      TestNow());
  ASSERT_FALSE(inject.ok());
  EXPECT_NE(inject.error().message().find("dns name"), std::string::npos);
  EXPECT_FALSE(
      ca.IssueX509Svid({Id("spiffe://example.org/w"), pub, {"-bad.com"}, Seconds(60)}, TestNow())
          .ok());
  EXPECT_TRUE(
      ca.IssueX509Svid({Id("spiffe://example.org/w"), pub, {"*.svc.example.org"}, Seconds(60)},
                       TestNow())
          .ok());
  std::vector<std::string> many(kMaxDnsSans + 1, "a.example.org");
  EXPECT_FALSE(
      ca.IssueX509Svid({Id("spiffe://example.org/w"), pub, many, Seconds(60)}, TestNow()).ok());
  auto expired = ca.IssueX509Svid({Id("spiffe://example.org/w"), pub, {}, Seconds(60)},
                                  ca.not_after() + Seconds(1));
  ASSERT_FALSE(expired.ok());
  EXPECT_EQ(expired.error().code(), ErrorCode::kFailedPrecondition);
}

TEST(X509Ca, IntermediateUnderUpstream) {
  auto [root, root_key] = testing::MakeUpstreamRoot(TestNow(), Seconds(10 * 3600));
  std::vector<Certificate> upstream_chain{root};
  auto ca = X509Ca::CreateIntermediate(
      {Td("example.org"), KeyType::kEcP384, Seconds(24 * 3600), kDefaultBackdate}, upstream_chain,
      root_key, TestNow());
  ASSERT_TRUE(ca.ok()) << ca.error().ToString();
  ASSERT_EQ(ca->chain().size(), 2u);
  EXPECT_FALSE(ca->certificate().IsSelfSigned());
  EXPECT_EQ(ca->root().Fingerprint(), root.Fingerprint());
  EXPECT_EQ(ca->certificate().UriSans(), std::vector<std::string>{"spiffe://example.org"});
  EXPECT_EQ(ca->not_after(), root.NotAfter());  // capped at the upstream's notAfter

  auto svid =
      ca->IssueX509Svid({Id("spiffe://example.org/w"), NewPub(), {}, Seconds(60)}, TestNow());
  ASSERT_TRUE(svid.ok());
  ASSERT_EQ(svid->chain.size(), 2u);  // leaf + intermediate, not the upstream root
  EXPECT_EQ(svid->chain[1].Fingerprint(), ca->certificate().Fingerprint());
}

TEST(X509Ca, IntermediateRejectsBadUpstream) {
  X509Ca upstream = MakeCa("upstream.example");
  X509Ca stranger = MakeCa("upstream.example");
  CaOptions opts{Td("example.org"), KeyType::kEcP256, Seconds(3600), kDefaultBackdate};
  auto wrong_key = X509Ca::CreateIntermediate(opts, upstream.chain(), stranger.key(), TestNow());
  // A Sigil root has pathLen 0 (it signs leaves only), so it cannot be an upstream: the
  // self-test leaf under the new intermediate would not validate.
  auto under_sigil_root =
      X509Ca::CreateIntermediate(opts, upstream.chain(), upstream.key(), TestNow());
  ASSERT_FALSE(under_sigil_root.ok());
  EXPECT_NE(under_sigil_root.error().message().find("would not validate"), std::string::npos);
  ASSERT_FALSE(wrong_key.ok());
  EXPECT_NE(wrong_key.error().message().find("does not match"), std::string::npos);
  // A chain whose links do not connect.
  std::vector<Certificate> broken{upstream.certificate(), stranger.certificate()};
  EXPECT_FALSE(X509Ca::CreateIntermediate(opts, broken, upstream.key(), TestNow()).ok());
  // A leaf is not an upstream CA.
  auto leaf = upstream.IssueX509Svid({Id("spiffe://upstream.example/x"), NewPub(), {}, Seconds(60)},
                                     TestNow());
  ASSERT_TRUE(leaf.ok());
  EXPECT_FALSE(X509Ca::CreateIntermediate(opts, leaf->chain, upstream.key(), TestNow()).ok());
  // Sigil intermediates have pathLen 0 too: nothing can be chained below one.
  auto [root, root_key] = testing::MakeUpstreamRoot();
  std::vector<Certificate> root_chain{root};
  auto a = X509Ca::CreateIntermediate(opts, root_chain, root_key, TestNow());
  ASSERT_TRUE(a.ok()) << a.error().ToString();
  auto b = X509Ca::CreateIntermediate(opts, a->chain(), a->key(), TestNow());
  ASSERT_FALSE(b.ok());
  EXPECT_FALSE(X509Ca::CreateIntermediate(opts, upstream.chain(), upstream.key(),
                                          upstream.not_after() + Seconds(1))
                   .ok());
}

TEST(X509Ca, LoadRoundTripAndKeyMismatch) {
  X509Ca ca = MakeCa();
  auto der = ca.key().ToPkcs8Der();
  ASSERT_TRUE(der.ok());
  auto loaded = X509Ca::Load(Td("example.org"), ca.chain(), *PrivateKey::FromPkcs8Der(der->span()));
  ASSERT_TRUE(loaded.ok());
  auto svid =
      loaded->IssueX509Svid({Id("spiffe://example.org/w"), NewPub(), {}, Seconds(60)}, TestNow());
  ASSERT_TRUE(svid.ok());
  EXPECT_EQ(X509_check_issued(ca.certificate().get(), svid->leaf.get()), X509_V_OK);
  auto mismatch =
      X509Ca::Load(Td("example.org"), ca.chain(), *PrivateKey::Generate(KeyType::kEcP256));
  EXPECT_FALSE(mismatch.ok());
  auto wrong_td = X509Ca::Load(Td("other.org"), ca.chain(), *PrivateKey::FromPkcs8Der(der->span()));
  EXPECT_FALSE(wrong_td.ok());
}

TEST(X509Ca, RandomKeyIdsAreDistinct) {
  auto a = RandomKeyId();
  auto b = RandomKeyId();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 22u);
  EXPECT_NE(*a, *b);
}

}  // namespace
}  // namespace sigil::core
