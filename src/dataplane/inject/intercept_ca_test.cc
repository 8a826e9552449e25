#include "dataplane/inject/intercept_ca.h"

#include <gtest/gtest.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/file_util.h"
#include "common/ossl.h"

namespace sigil::dataplane::inject {
namespace {

const TimePoint kNow = FromUnixSeconds(1'900'000'000);

// Verifies `leaf` for `host` the way a TLS client does (strict X.509, hostname check) with
// `anchors` as the only trust anchors, at `at`. "" when it verifies, else OpenSSL's reason.
std::string Verify(const core::Certificate& leaf, const std::vector<core::Certificate>& anchors,
                   const std::string& host, TimePoint at) {
  X509StorePtr store(X509_STORE_new());
  for (const auto& a : anchors) X509_STORE_add_cert(store.get(), a.get());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), nullptr);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT | X509_V_FLAG_USE_CHECK_TIME);
  X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(ToUnixSeconds(at)));
  X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
  X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  if (X509_verify_cert(ctx.get()) == 1) return "";
  return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

core::Certificate LeafOf(const std::shared_ptr<SSL_CTX>& ctx) {
  return core::Certificate::FromX509(SSL_CTX_get0_certificate(ctx.get()));
}

class InterceptCaTest : public testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sigil-intercept-ca-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    roots_ = dir_ + "/roots.pem";
    ASSERT_TRUE(WriteFileAtomic(roots_, "# system roots stand-in\n", 0644).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  InterceptCaOptions Options() {
    InterceptCaOptions o;
    o.dir = dir_ + "/run";
    o.system_roots = roots_;
    return o;
  }

  std::string dir_, roots_;
};

TEST_F(InterceptCaTest, LeafVerifiesForCoveredNamesOnly) {
  InterceptCa ca(Options());
  auto changed = ca.Cover({"api.example", "*.svc.example", "API.example"}, kNow);
  ASSERT_TRUE(changed.ok()) << changed.error().message();
  EXPECT_TRUE(*changed);
  EXPECT_EQ(ca.names(), (std::vector<std::string>{"*.svc.example", "api.example"}));
  const auto anchors = ca.Authorities();
  ASSERT_EQ(anchors.size(), 1u);

  for (const char* host : {"api.example", "API.Example", "s3.svc.example"}) {
    auto ctx = ca.ContextFor(host, kNow);
    ASSERT_TRUE(ctx.ok()) << host << ": " << ctx.error().message();
    const core::Certificate leaf = LeafOf(*ctx);
    EXPECT_EQ(Verify(leaf, anchors, host, kNow + Seconds(60)), "") << host;
    EXPECT_FALSE(leaf.IsCa());
    EXPECT_LE(leaf.NotAfter(), kNow + Seconds(3600));
    // Another host name than the leaf's: the client's hostname check fails.
    EXPECT_NE(Verify(leaf, anchors, "other.example", kNow), "") << host;
  }
  // Names the CA does not cover are refused before anything is issued.
  for (const char* host : {"evil.example", "a.b.svc.example", "svc.example", "x.api.example"}) {
    auto ctx = ca.ContextFor(host, kNow);
    ASSERT_FALSE(ctx.ok()) << host;
    EXPECT_EQ(ctx.error().code(), ErrorCode::kPermissionDenied) << host;
  }
  // Hostile SNI values.
  for (const char* host : {"", "a..b", "-a.example", "a_b.example", "1.2.3.4\n", "*.svc.example"}) {
    EXPECT_FALSE(ca.ContextFor(host, kNow).ok()) << host;
  }
  // Reused while fresh.
  auto again = ca.ContextFor("api.example", kNow + Seconds(60));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), ca.ContextFor("api.example", kNow).value().get());
}

TEST_F(InterceptCaTest, NameConstraintsHoldEvenForALeafSignedWithTheKey) {
  InterceptCa ca(Options());
  ASSERT_TRUE(ca.Cover({"api.example", "*.svc.example"}, kNow).ok());
  const auto anchors = ca.Authorities();
  // The CA certificate: critical nameConstraints, CA with pathLen 0, keyCertSign.
  X509* root = anchors[0].get();
  int crit = -1;
  auto* nc =
      static_cast<NAME_CONSTRAINTS*>(X509_get_ext_d2i(root, NID_name_constraints, &crit, nullptr));
  ASSERT_NE(nc, nullptr);
  EXPECT_EQ(crit, 1);
  EXPECT_EQ(sk_GENERAL_SUBTREE_num(nc->permittedSubtrees), 2);
  EXPECT_EQ(sk_GENERAL_SUBTREE_num(nc->excludedSubtrees), 2);
  NAME_CONSTRAINTS_free(nc);
  EXPECT_TRUE(anchors[0].IsCa());
  EXPECT_EQ(X509_get_key_usage(root) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN),
            static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));

  // Leaves the proxy would never issue, signed with the CA's own key: path validation fails on
  // the name constraints, whatever the client's hostname.
  for (const char* host : {"evil.example", "svc.example", "example", "api.example.evil"}) {
    auto leaf = ca.IssueUncheckedForTest(host, kNow);
    ASSERT_TRUE(leaf.ok()) << leaf.error().message();
    EXPECT_EQ(Verify(*leaf, anchors, host, kNow), "permitted subtree violation") << host;
  }
  // ... while covered ones pass (the control).
  auto ok = ca.IssueUncheckedForTest("a.svc.example", kNow);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(Verify(*ok, anchors, "a.svc.example", kNow), "");
}

TEST_F(InterceptCaTest, FilesFollowTheCoveredNames) {
  const InterceptCaOptions o = Options();
  {
    // A stale file from an earlier agent is removed at once.
    ASSERT_TRUE(MakeDirs(o.dir, 0755).ok());
    ASSERT_TRUE(WriteFileAtomic(o.dir + "/inject-ca.pem", "stale", 0644).ok());
    InterceptCa ca(o);
    EXPECT_FALSE(std::filesystem::exists(ca.ca_file()));
    ASSERT_TRUE(ca.Cover({}, kNow).ok());
    EXPECT_FALSE(std::filesystem::exists(ca.bundle_file()));  // nothing to intercept: no files

    ASSERT_TRUE(ca.Cover({"api.example"}, kNow).ok());
    auto pem = ReadFile(ca.ca_file(), 1 << 20);
    auto bundle = ReadFile(ca.bundle_file(), 1 << 20);
    ASSERT_TRUE(pem.ok() && bundle.ok());
    EXPECT_EQ(*pem, ca.Authorities()[0].ToPem());
    EXPECT_EQ(*bundle, "# system roots stand-in\n" + *pem);  // roots first, then the CA
    struct stat st {};
    ASSERT_EQ(::stat(ca.bundle_file().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0644u);
    // No private key anywhere in what is written.
    EXPECT_EQ(bundle->find("PRIVATE KEY"), std::string::npos);

    // The same names again: nothing changes.
    EXPECT_FALSE(*ca.Cover({"api.example"}, kNow + Seconds(60)));
    // Interception turned off: the files go.
    EXPECT_TRUE(*ca.Cover({}, kNow + Seconds(60)));
    EXPECT_FALSE(std::filesystem::exists(ca.ca_file()));
    EXPECT_FALSE(std::filesystem::exists(ca.bundle_file()));
    ASSERT_TRUE(ca.Cover({"api.example"}, kNow).ok());
    EXPECT_TRUE(std::filesystem::exists(ca.ca_file()));
  }
  // Destroyed (the agent stops): the files go with the key.
  EXPECT_FALSE(std::filesystem::exists(o.dir + "/inject-ca.pem"));
  EXPECT_FALSE(std::filesystem::exists(o.dir + "/inject-ca-bundle.pem"));
}

TEST_F(InterceptCaTest, MissingSystemRootsIsAnError) {
  InterceptCaOptions o = Options();
  o.system_roots = dir_ + "/nope.pem";
  InterceptCa ca(o);
  auto r = ca.Cover({"api.example"}, kNow);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("system roots"), std::string::npos);
  EXPECT_FALSE(ca.Cover({"bad name"}, kNow).ok());
}

TEST_F(InterceptCaTest, GenerationsRotateAndOldWorkloadsKeepWorking) {
  InterceptCa ca(Options());
  ASSERT_TRUE(ca.Cover({"api.example"}, kNow).ok());
  const auto first = ca.Authorities();  // what a workload started now trusts
  ASSERT_EQ(first.size(), 1u);

  // A new name an hour later: a second generation; the first stays and keeps signing
  // api.example.
  const TimePoint t1 = kNow + Seconds(3600);
  EXPECT_TRUE(*ca.Cover({"api.example", "new.example"}, t1));
  ASSERT_EQ(ca.Authorities().size(), 2u);
  auto leaf = LeafOf(ca.ContextFor("api.example", t1).value());
  EXPECT_EQ(Verify(leaf, first, "api.example", t1), "");
  auto fresh = LeafOf(ca.ContextFor("new.example", t1).value());
  EXPECT_NE(Verify(fresh, first, "new.example", t1), "");  // not in `first`
  EXPECT_EQ(Verify(fresh, ca.Authorities(), "new.example", t1), "");

  // No generation has half its lifetime left: a third one (rotation). Leaves still come from
  // the oldest with time left, so the workload that loaded `first` keeps working.
  const TimePoint t2 = kNow + Seconds(13 * 3600 + 60);
  EXPECT_TRUE(*ca.Cover({"api.example", "new.example"}, t2));
  EXPECT_EQ(ca.Authorities().size(), 3u);
  leaf = LeafOf(ca.ContextFor("api.example", t2).value());
  EXPECT_EQ(Verify(leaf, first, "api.example", t2), "");
  EXPECT_LE(leaf.NotAfter(), first[0].NotAfter());

  // The first generation expired: dropped, leaves from the next one.
  const TimePoint t3 = kNow + Seconds(24 * 3600);
  EXPECT_TRUE(*ca.Cover({"api.example", "new.example"}, t3));
  const auto trusted = ca.Authorities();
  EXPECT_EQ(trusted.size(), 2u);
  leaf = LeafOf(ca.ContextFor("api.example", t3).value());
  EXPECT_EQ(Verify(leaf, trusted, "api.example", t3), "");
  EXPECT_NE(Verify(leaf, first, "api.example", t3), "");

  // A name no Service has any more: refused at once.
  ASSERT_TRUE(ca.Cover({"api.example"}, t3).ok());
  auto gone = ca.ContextFor("new.example", t3);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), ErrorCode::kPermissionDenied);
}

}  // namespace
}  // namespace sigil::dataplane::inject
