#include "core/trust_bundle.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/encoding.h"
#include "core/ca.h"
#include "core/jwk.h"

namespace sigil::core {
namespace {

using Json = nlohmann::json;

const TimePoint kNow = FromUnixSeconds(1'700'000'000);

TrustDomain Td(std::string_view name) { return TrustDomain::Parse(name).value(); }

const PrivateKey& Key(KeyType type) {
  static std::map<KeyType, PrivateKey> keys;
  auto it = keys.find(type);
  if (it == keys.end()) it = keys.emplace(type, PrivateKey::Generate(type).value()).first;
  return it->second;
}

// CAs are costly to mint; each test reuses these.
const X509Ca& Ca(int which, KeyType type = KeyType::kEcP256) {
  static std::map<std::pair<int, KeyType>, X509Ca> cas;
  auto it = cas.find({which, type});
  if (it == cas.end()) {
    auto ca = X509Ca::CreateSelfSigned(CaOptions{Td("example.org"), type}, kNow);
    if (!ca.ok()) {
      ADD_FAILURE() << ca.error().ToString();
      std::abort();
    }
    it = cas.emplace(std::make_pair(which, type), std::move(ca).value()).first;
  }
  return it->second;
}

Json X509Entry(const Certificate& cert) {
  Json jwk = PublicKeyToJwk(cert.PublicKeyOf().value()).value();
  jwk["use"] = "x509-svid";
  jwk["x5c"] = Json::array({Base64Encode(cert.ToDer())});
  return jwk;
}

Json JwtEntry(const PublicKey& key, std::string kid) {
  Json jwk = PublicKeyToJwk(key).value();
  jwk["use"] = "jwt-svid";
  jwk["kid"] = std::move(kid);
  return jwk;
}

Result<TrustBundle> Parse(const Json& doc) {
  return TrustBundle::ParseJwks(Td("example.org"), doc.dump());
}

void ExpectError(const Json& doc, std::string_view needle) {
  auto bundle = Parse(doc);
  ASSERT_FALSE(bundle.ok()) << doc.dump();
  EXPECT_EQ(bundle.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(bundle.error().message().find(needle), std::string::npos)
      << bundle.error().message() << " should mention " << needle;
}

TrustBundle FullBundle() {
  TrustBundle bundle(Td("example.org"));
  bundle.AddX509Authority(Ca(1).root());
  bundle.AddX509Authority(Ca(2, KeyType::kRsa2048).root());
  EXPECT_TRUE(bundle.AddJwtAuthority("ec", Key(KeyType::kEcP256).Public()).ok());
  EXPECT_TRUE(bundle.AddJwtAuthority("rsa", Key(KeyType::kRsa2048).Public()).ok());
  bundle.set_sequence(42);
  bundle.set_refresh_hint(Seconds(300));
  return bundle;
}

TEST(TrustBundleTest, JwksRoundTrip) {
  TrustBundle bundle = FullBundle();
  auto parsed = TrustBundle::ParseJwks(Td("example.org"), bundle.ToJwks());
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(parsed->trust_domain(), Td("example.org"));
  ASSERT_EQ(parsed->x509_authorities().size(), 2u);
  EXPECT_EQ(parsed->x509_authorities()[0].ToDer(), Ca(1).root().ToDer());
  EXPECT_EQ(parsed->x509_authorities()[1].ToDer(), Ca(2, KeyType::kRsa2048).root().ToDer());
  ASSERT_EQ(parsed->jwt_authorities().size(), 2u);
  ASSERT_NE(parsed->FindJwtAuthority("ec"), nullptr);
  EXPECT_TRUE(parsed->FindJwtAuthority("ec")->key.Equals(Key(KeyType::kEcP256).Public()));
  EXPECT_TRUE(parsed->FindJwtAuthority("rsa")->key.Equals(Key(KeyType::kRsa2048).Public()));
  EXPECT_EQ(parsed->FindJwtAuthority("nope"), nullptr);
  EXPECT_EQ(parsed->sequence(), 42u);
  EXPECT_EQ(parsed->refresh_hint(), Seconds(300));
  EXPECT_EQ(parsed->ToJwks(), bundle.ToJwks());
}

TEST(TrustBundleTest, ToJwksShape) {
  Json doc = Json::parse(FullBundle().ToJwks());
  EXPECT_EQ(doc["spiffe_sequence"], 42);
  EXPECT_EQ(doc["spiffe_refresh_hint"], 300);
  ASSERT_EQ(doc["keys"].size(), 4u);
  int x509 = 0;
  int jwt = 0;
  for (const Json& k : doc["keys"]) {
    if (k["use"] == "x509-svid") {
      ++x509;
      EXPECT_FALSE(k.contains("kid"));
      ASSERT_EQ(k["x5c"].size(), 1u);
      EXPECT_TRUE(k.contains("kty"));
    } else {
      ++jwt;
      EXPECT_EQ(k["use"], "jwt-svid");
      EXPECT_TRUE(k.contains("kid"));
      EXPECT_FALSE(k.contains("x5c"));
    }
  }
  EXPECT_EQ(x509, 2);
  EXPECT_EQ(jwt, 2);

  Json jwt_only = Json::parse(FullBundle().ToJwtJwks());
  ASSERT_EQ(jwt_only["keys"].size(), 2u);
  for (const Json& k : jwt_only["keys"]) EXPECT_EQ(k["use"], "jwt-svid");

  TrustBundle no_hint(Td("example.org"));
  Json empty = Json::parse(no_hint.ToJwks());
  EXPECT_EQ(empty["keys"], Json::array());
  EXPECT_FALSE(empty.contains("spiffe_refresh_hint"));
}

TEST(TrustBundleTest, Ed25519AuthorityRoundTripsAsOkp) {
  TrustBundle bundle(Td("example.org"));
  bundle.AddX509Authority(Ca(1, KeyType::kEd25519).root());
  Json doc = Json::parse(bundle.ToJwks());
  ASSERT_EQ(doc["keys"].size(), 1u);
  EXPECT_EQ(doc["keys"][0]["kty"], "OKP");
  EXPECT_EQ(doc["keys"][0]["crv"], "Ed25519");
  auto parsed = TrustBundle::ParseJwks(Td("example.org"), doc.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(parsed->x509_authorities().size(), 1u);
  EXPECT_FALSE(bundle.AddJwtAuthority("ed", Key(KeyType::kEd25519).Public()).ok());
}

TEST(TrustBundleTest, KeysMemberRules) {
  auto empty = Parse(Json{{"keys", Json::array()}});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->x509_authorities().empty());
  EXPECT_TRUE(empty->jwt_authorities().empty());
  EXPECT_EQ(empty->sequence(), 0u);
  EXPECT_FALSE(empty->refresh_hint().has_value());

  ExpectError(Json::object(), "member \"keys\": missing");
  ExpectError(Json{{"keys", Json::object()}}, "member \"keys\": must be an array");
  ExpectError(Json::array(), "must be a JSON object");
  ExpectError(Json{{"keys", Json::array({"x"})}}, "keys[0]: must be a JSON object");
}

TEST(TrustBundleTest, UnknownTopLevelMembersAreAllowed) {
  auto b = Parse(Json{{"keys", Json::array()}, {"x_vendor", {{"a", 1}}}, {"spiffe_extra", 1}});
  EXPECT_TRUE(b.ok());
}

TEST(TrustBundleTest, SkipsEntriesPerStandard) {
  Json x509 = X509Entry(Ca(1).root());
  Json jwt = JwtEntry(Key(KeyType::kEcP256).Public(), "k1");
  Json keys = Json::array();
  Json no_use = jwt;
  no_use.erase("use");
  keys.push_back(no_use);
  Json unknown_use = jwt;
  unknown_use["use"] = "sig";
  keys.push_back(unknown_use);
  Json wrong_case = x509;
  wrong_case["use"] = "X509-SVID";
  keys.push_back(wrong_case);
  Json non_string_use = jwt;
  non_string_use["use"] = 1;
  keys.push_back(non_string_use);
  Json oct = {{"kty", "oct"}, {"use", "jwt-svid"}, {"kid", "h"}, {"k", "AAAA"}};
  keys.push_back(oct);
  Json unknown_kty_x509 = {{"kty", "foo"}, {"use", "x509-svid"}, {"x5c", x509["x5c"]}};
  keys.push_back(unknown_kty_x509);
  Json okp_jwt = {{"kty", "OKP"},
                  {"crv", "Ed25519"},
                  {"use", "jwt-svid"},
                  {"kid", "ed"},
                  {"x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}};
  keys.push_back(okp_jwt);
  Json no_x5c = x509;
  no_x5c.erase("x5c");
  keys.push_back(no_x5c);
  Json empty_x5c = x509;
  empty_x5c["x5c"] = Json::array();
  keys.push_back(empty_x5c);
  auto b = Parse(Json{{"keys", keys}});
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_TRUE(b->x509_authorities().empty());
  EXPECT_TRUE(b->jwt_authorities().empty());

  keys.push_back(x509);
  keys.push_back(jwt);
  b = Parse(Json{{"keys", keys}});
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_EQ(b->x509_authorities().size(), 1u);
  EXPECT_EQ(b->jwt_authorities().size(), 1u);
}

TEST(TrustBundleTest, X509EntryRules) {
  Json good = X509Entry(Ca(1).root());
  Json with_kid = good;
  with_kid["kid"] = "abc";
  ExpectError(Json{{"keys", {with_kid}}}, "keys[0]: member \"kid\": must not be set");

  Json no_kty = good;
  no_kty.erase("kty");
  ExpectError(Json{{"keys", {good, no_kty}}}, "keys[1]: member \"kty\": missing");

  Json bad = good;
  bad["x5c"] = "not-an-array";
  ExpectError(Json{{"keys", {bad}}}, "member \"x5c\": must be an array");
  bad["x5c"] = Json::array({1});
  ExpectError(Json{{"keys", {bad}}}, "x5c[0] must be a string");
  std::string wrapped = Base64Encode(Ca(1).root().ToDer());
  wrapped.insert(64, "\n");  // PEM-style line breaks are not base64
  bad["x5c"] = Json::array({wrapped});
  ExpectError(Json{{"keys", {bad}}}, "member \"x5c\": x5c[0]: base64");
  bad["x5c"] = Json::array({Base64Encode(AsBytes("not a certificate"))});
  ExpectError(Json{{"keys", {bad}}}, "member \"x5c\": x5c[0]: certificate");

  // Only x5c[0] is used; later entries are ignored.
  Json extra = good;
  extra["x5c"].push_back("!!garbage!!");
  auto b = Parse(Json{{"keys", {extra}}});
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_EQ(b->x509_authorities().size(), 1u);
}

TEST(TrustBundleTest, X509EntryMustBeCaWithMatchingKey) {
  auto leaf_key = PrivateKey::Generate(KeyType::kEcP256).value();
  X509SvidRequest request{
      SpiffeId::Parse("spiffe://example.org/w").value(), leaf_key.Public(), {}, Seconds(3600)};
  auto leaf = Ca(1).IssueX509Svid(request, kNow);
  ASSERT_TRUE(leaf.ok()) << leaf.error().ToString();
  ExpectError(Json{{"keys", {X509Entry(leaf->leaf)}}}, "x5c[0] is not a CA certificate");

  Json mismatched = X509Entry(Ca(1).root());
  Json other = X509Entry(Ca(2).root());
  mismatched["x"] = other["x"];
  ExpectError(Json{{"keys", {mismatched}}}, "member \"x\": does not match the key of x5c[0]");
  Json with_private = X509Entry(Ca(1).root());
  with_private["d"] = "AAAA";
  ExpectError(Json{{"keys", {with_private}}}, "member \"d\": private key material");
  Json wrong_kty = X509Entry(Ca(2, KeyType::kRsa2048).root());
  wrong_kty["x5c"] = X509Entry(Ca(1).root())["x5c"];
  ExpectError(Json{{"keys", {wrong_kty}}}, "does not match the key of x5c[0]");
}

TEST(TrustBundleTest, DuplicateCertificatesAreMerged) {
  Json entry = X509Entry(Ca(1).root());
  auto b = Parse(Json{{"keys", {entry, entry}}});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->x509_authorities().size(), 1u);
}

TEST(TrustBundleTest, JwtEntryRules) {
  Json good = JwtEntry(Key(KeyType::kEcP256).Public(), "k1");
  Json no_kid = good;
  no_kid.erase("kid");
  ExpectError(Json{{"keys", {no_kid}}}, "keys[0]: member \"kid\": required");
  Json empty_kid = good;
  empty_kid["kid"] = "";
  ExpectError(Json{{"keys", {empty_kid}}}, "member \"kid\": must be a non-empty string");
  empty_kid["kid"] = 7;
  ExpectError(Json{{"keys", {empty_kid}}}, "member \"kid\": must be a non-empty string");
  Json bad_point = good;
  bad_point["y"] = bad_point["x"];
  ExpectError(Json{{"keys", {good, bad_point}}}, "jwks: keys[1]: jwk: member \"x\"");
  Json bad_b64 = good;
  bad_b64["x"] = "***";
  ExpectError(Json{{"keys", {bad_b64}}}, "jwk: member \"x\": base64");
}

TEST(TrustBundleTest, DuplicateKid) {
  Json a = JwtEntry(Key(KeyType::kEcP256).Public(), "same");
  Json b = JwtEntry(Key(KeyType::kEcP384).Public(), "same");
  ExpectError(Json{{"keys", {a, b}}}, "keys[1]: jwt authority: kid is already used");
  auto same = Parse(Json{{"keys", {a, a}}});
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->jwt_authorities().size(), 1u);

  TrustBundle bundle(Td("example.org"));
  EXPECT_TRUE(bundle.AddJwtAuthority("k", Key(KeyType::kEcP256).Public()).ok());
  EXPECT_TRUE(bundle.AddJwtAuthority("k", Key(KeyType::kEcP256).Public()).ok());
  EXPECT_FALSE(bundle.AddJwtAuthority("k", Key(KeyType::kRsa2048).Public()).ok());
  EXPECT_FALSE(bundle.AddJwtAuthority("", Key(KeyType::kEcP256).Public()).ok());
  EXPECT_EQ(bundle.jwt_authorities().size(), 1u);
}

TEST(TrustBundleTest, SequenceAndRefreshHint) {
  auto b = TrustBundle::ParseJwks(
      Td("example.org"),
      R"({"keys":[],"spiffe_sequence":18446744073709551615,"spiffe_refresh_hint":0})");
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_EQ(b->sequence(), 18446744073709551615u);
  EXPECT_EQ(b->refresh_hint(), Seconds(0));

  for (const char* bad : {"-1", "1.5", "\"7\"", "null", "18446744073709551616", "true"}) {
    SCOPED_TRACE(bad);
    auto r = TrustBundle::ParseJwks(Td("example.org"),
                                    std::string(R"({"keys":[],"spiffe_sequence":)") + bad + "}");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("spiffe_sequence"), std::string::npos);
  }
  for (const char* bad : {"-5", "300.0", "\"300\"", "9223372036854775808"}) {
    SCOPED_TRACE(bad);
    auto r = TrustBundle::ParseJwks(
        Td("example.org"), std::string(R"({"keys":[],"spiffe_refresh_hint":)") + bad + "}");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("spiffe_refresh_hint"), std::string::npos);
  }
}

TEST(TrustBundleTest, RejectsMalformedAndOversizedInput) {
  for (std::string_view bad :
       {"", "{", "[]", "null", "{\"keys\":[]} trailing", "{\"keys\":[],\"keys\":[]}"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(TrustBundle::ParseJwks(Td("example.org"), bad).ok());
  }
  std::string big = R"({"keys":[],"pad":")" + std::string(kMaxJwksBytes, 'a') + "\"}";
  auto r = TrustBundle::ParseJwks(Td("example.org"), big);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kResourceExhausted);

  Json many = Json::array();
  for (size_t i = 0; i <= kMaxJwksKeys; ++i) many.push_back(Json{{"use", "other"}});
  auto too_many = Parse(Json{{"keys", many}});
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.error().code(), ErrorCode::kResourceExhausted);
  many.erase(many.begin());
  EXPECT_TRUE(Parse(Json{{"keys", many}}).ok());
}

TEST(TrustBundleTest, FromX509Pem) {
  std::string pem = Ca(1).root().ToPem() + Ca(2).root().ToPem();
  auto b = TrustBundle::FromX509Pem(Td("example.org"), pem);
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_EQ(b->x509_authorities().size(), 2u);
  EXPECT_TRUE(b->jwt_authorities().empty());
  EXPECT_EQ(b->X509AuthoritiesPem(), pem);
  auto der = ParseCertificatesDer(b->X509AuthoritiesDer());
  ASSERT_TRUE(der.ok());
  EXPECT_EQ(der->size(), 2u);

  EXPECT_FALSE(TrustBundle::FromX509Pem(Td("example.org"), "garbage").ok());
  auto leaf_key = PrivateKey::Generate(KeyType::kEcP256).value();
  X509SvidRequest request{
      SpiffeId::Parse("spiffe://example.org/w").value(), leaf_key.Public(), {}, Seconds(3600)};
  auto leaf = Ca(1).IssueX509Svid(request, kNow);
  ASSERT_TRUE(leaf.ok());
  auto not_ca = TrustBundle::FromX509Pem(Td("example.org"), leaf->leaf.ToPem());
  ASSERT_FALSE(not_ca.ok());
  EXPECT_NE(not_ca.error().message().find("not a CA"), std::string::npos);
}

TEST(TrustBundleTest, BundleSetKeepsTrustDomainsApart) {
  BundleSet set;
  auto a = std::make_shared<TrustBundle>(Td("a.org"));
  a->set_sequence(1);
  auto b = std::make_shared<TrustBundle>(Td("b.org"));
  set.Put(a);
  set.Put(b);
  set.Put(nullptr);
  EXPECT_EQ(set.all().size(), 2u);
  EXPECT_EQ(set.Find(Td("a.org")), a);
  EXPECT_EQ(set.Find(Td("b.org")), b);
  EXPECT_EQ(set.Find(Td("c.org")), nullptr);
  auto a2 = std::make_shared<TrustBundle>(Td("a.org"));
  a2->set_sequence(2);
  set.Put(a2);
  EXPECT_EQ(set.all().size(), 2u);
  EXPECT_EQ(set.Find(Td("a.org"))->sequence(), 2u);
}

}  // namespace
}  // namespace sigil::core
