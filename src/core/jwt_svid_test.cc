#include "core/jwt_svid.h"

#include <gtest/gtest.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include <string>
#include <vector>

#include "common/encoding.h"
#include "core/testing/jwt_fixture.h"

namespace sigil::core {
namespace {

using Json = nlohmann::json;
using jwt_testing::B64;
using jwt_testing::Bundles;
using jwt_testing::Claims;
using jwt_testing::ExpectFailure;
using jwt_testing::Header;
using jwt_testing::Key;
using jwt_testing::kNow;
using jwt_testing::kNowS;
using jwt_testing::kSvc;
using jwt_testing::MintParams;
using jwt_testing::Token;
using jwt_testing::Validate;
using jwt_testing::With;

TEST(JwtSvidTest, MintAndValidate) {
  auto token = MintJwtSvid(Key(KeyType::kEcP256), "p256", MintParams());
  ASSERT_TRUE(token.ok()) << token.error().ToString();
  auto svid = Validate(*token);
  ASSERT_TRUE(svid.ok()) << svid.error().ToString();
  EXPECT_EQ(svid->id.str(), "spiffe://example.org/workload");
  EXPECT_EQ(svid->audience, kSvc);
  EXPECT_EQ(svid->expiry, kNow + Seconds(300));
  EXPECT_EQ(svid->claims["iat"], kNowS);
  EXPECT_EQ(svid->claims["aud"], "svc");  // one audience is emitted as a string
  EXPECT_EQ(svid->token, *token);

  std::string header_b64 = token->substr(0, token->find('.'));
  Json header = Json::parse(AsChars(Base64UrlDecode(header_b64).value()));
  EXPECT_EQ(header, Header("ES256", "p256"));
}

TEST(JwtSvidTest, MintPicksAlgorithmForKey) {
  struct Case {
    KeyType type;
    const char* kid;
    const char* alg;
  };
  for (const Case& c :
       {Case{KeyType::kEcP384, "p384", "ES384"}, Case{KeyType::kEcP521, "p521", "ES512"},
        Case{KeyType::kRsa2048, "rsa", "RS256"}}) {
    SCOPED_TRACE(c.alg);
    auto token = MintJwtSvid(Key(c.type), c.kid, MintParams({"a", "b"}));
    ASSERT_TRUE(token.ok()) << token.error().ToString();
    auto parsed = ParseJwtSvidInsecure(*token);
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(parsed->claims["aud"], Json::array({"a", "b"}));
    Json header = Json::parse(AsChars(Base64UrlDecode(token->substr(0, token->find('.'))).value()));
    EXPECT_EQ(header["alg"], c.alg);
    std::vector<std::string> both = {"a", "b"};
    auto svid = Validate(*token, both);
    EXPECT_TRUE(svid.ok()) << svid.error().ToString();
  }
}

TEST(JwtSvidTest, MintRejectsBadInput) {
  EXPECT_FALSE(MintJwtSvid(Key(KeyType::kEd25519), "ed", MintParams()).ok());
  EXPECT_FALSE(MintJwtSvid(Key(KeyType::kEcP256), "", MintParams()).ok());
  EXPECT_FALSE(MintJwtSvid(Key(KeyType::kEcP256), "p256", MintParams({})).ok());
  EXPECT_FALSE(MintJwtSvid(Key(KeyType::kEcP256), "p256", MintParams({""})).ok());
  EXPECT_FALSE(MintJwtSvid(Key(KeyType::kEcP256), "p256", MintParams({"\xff"})).ok());
  JwtMintParams backwards = MintParams();
  backwards.expires_at = backwards.issued_at;
  EXPECT_FALSE(MintJwtSvid(Key(KeyType::kEcP256), "p256", backwards).ok());
  auto huge = MintJwtSvid(Key(KeyType::kEcP256), "p256", MintParams({std::string(20000, 'a')}));
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().message().find("16 KiB"), std::string::npos);
}

TEST(JwtSvidTest, EveryAllowedAlgorithmRoundTrips) {
  struct Case {
    const char* alg;
    KeyType key;
    const char* kid;
  };
  for (const Case& c :
       {Case{"RS256", KeyType::kRsa2048, "rsa"}, Case{"RS384", KeyType::kRsa2048, "rsa"},
        Case{"RS512", KeyType::kRsa2048, "rsa"}, Case{"PS256", KeyType::kRsa2048, "rsa"},
        Case{"PS384", KeyType::kRsa2048, "rsa"}, Case{"PS512", KeyType::kRsa2048, "rsa"},
        Case{"ES256", KeyType::kEcP256, "p256"}, Case{"ES384", KeyType::kEcP384, "p384"},
        Case{"ES512", KeyType::kEcP521, "p521"}}) {
    SCOPED_TRACE(c.alg);
    std::string token = Token(Key(c.key), Header(c.alg, c.kid), Claims());
    auto svid = Validate(token);
    ASSERT_TRUE(svid.ok()) << svid.error().ToString();
    EXPECT_EQ(svid->id.path(), "/workload");
    // Any change to the signing input breaks the signature.
    Json other = Claims();
    other["sub"] = "spiffe://example.org/other";
    std::string forged =
        B64(Header(c.alg, c.kid)) + "." + B64(other) + token.substr(token.rfind('.'));
    ExpectFailure(Validate(forged), ErrorCode::kUnauthenticated, "signature", forged);
  }
}

TEST(JwtSvidTest, PssSaltMustEqualDigestLength) {
  std::string token =
      Token(Key(KeyType::kRsa2048), Header("PS256", "rsa"), Claims(), RSA_PSS_SALTLEN_MAX);
  ExpectFailure(Validate(token), ErrorCode::kUnauthenticated, "signature", token);
}

TEST(JwtSvidTest, RejectsDisallowedAlgorithmsFirst) {
  std::string claims = B64(Claims());
  // `none`: no key, an empty signature, and even a bogus sub must not matter.
  std::string none = B64(Json{{"alg", "none"}}) + "." + claims + ".";
  ExpectFailure(Validate(none), ErrorCode::kInvalidArgument, "alg \"none\" is not allowed", none);
  ExpectFailure(ParseJwtSvidInsecure(none), ErrorCode::kInvalidArgument, "not allowed", none);
  std::string none_bad_claims = B64(Json{{"alg", "none"}}) + ".e30.";
  ExpectFailure(Validate(none_bad_claims), ErrorCode::kInvalidArgument, "not allowed",
                none_bad_claims);

  // HS256 keyed with the public key bytes: the classic confusion attack.
  std::string input = B64(Header("HS256", "rsa")) + "." + claims;
  std::string pem = Key(KeyType::kRsa2048).Public().ToPem();
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), pem.data(), static_cast<int>(pem.size()), AsBytes(input).data(), input.size(),
       mac, &mac_len);
  std::string hs = input + "." + Base64UrlEncode(std::span<const uint8_t>(mac, mac_len));
  ExpectFailure(Validate(hs), ErrorCode::kInvalidArgument, "alg \"HS256\" is not allowed", hs);

  for (const char* alg : {"EdDSA", "HS512", "es256", "RS1", ""}) {
    std::string t = B64(Header(alg, "p256")) + "." + claims + ".AAAA";
    ExpectFailure(Validate(t), ErrorCode::kInvalidArgument, "is not allowed", t);
  }
  std::string no_alg = B64(Json{{"kid", "p256"}}) + "." + claims + ".AAAA";
  ExpectFailure(Validate(no_alg), ErrorCode::kInvalidArgument, "alg is missing", no_alg);
  std::string num_alg = B64(Json{{"alg", 256}}) + "." + claims + ".AAAA";
  ExpectFailure(Validate(num_alg), ErrorCode::kInvalidArgument, "alg must be a string", num_alg);
  // A duplicated alg member is refused rather than resolved.
  std::string dup = Base64UrlEncode(std::string(R"({"alg":"none","alg":"ES256","kid":"p256"})")) +
                    "." + claims + ".AAAA";
  ExpectFailure(Validate(dup), ErrorCode::kInvalidArgument, "duplicate", dup);
}

TEST(JwtSvidTest, AlgMustMatchKeyType) {
  struct Case {
    const char* alg;
    KeyType signer;
    const char* kid;
  };
  // Each token is signed correctly for its alg, but the kid names a key of another type.
  for (const Case& c :
       {Case{"ES384", KeyType::kEcP384, "p256"}, Case{"ES256", KeyType::kEcP256, "p521"},
        Case{"RS256", KeyType::kRsa2048, "p256"}, Case{"ES256", KeyType::kEcP256, "rsa"},
        Case{"PS256", KeyType::kRsa2048, "p384"}}) {
    SCOPED_TRACE(std::string(c.alg) + " with kid " + c.kid);
    std::string t = Token(Key(c.signer), Header(c.alg, c.kid), Claims());
    ExpectFailure(Validate(t), ErrorCode::kUnauthenticated, "does not match the key type", t);
  }
}

TEST(JwtSvidTest, KidRules) {
  Json header = Header("ES256", "p256");
  header.erase("kid");
  std::string no_kid = Token(Key(KeyType::kEcP256), header, Claims());
  ExpectFailure(Validate(no_kid), ErrorCode::kInvalidArgument, "kid is missing", no_kid);
  EXPECT_TRUE(ParseJwtSvidInsecure(no_kid).ok());  // kid is optional in the JWT-SVID spec

  std::string unknown = Token(Key(KeyType::kEcP256), Header("ES256", "nope"), Claims());
  ExpectFailure(Validate(unknown), ErrorCode::kUnauthenticated, "is not a JWT authority", unknown);
  // The right kid with a key the bundle does not hold.
  auto stranger = PrivateKey::Generate(KeyType::kEcP256).value();
  std::string wrong_key = Token(stranger, Header("ES256", "p256"), Claims());
  ExpectFailure(Validate(wrong_key), ErrorCode::kUnauthenticated, "signature", wrong_key);

  for (const Json& bad : {Json(""), Json(5), Json(nullptr)}) {
    std::string t =
        Token(Key(KeyType::kEcP256), With(Header("ES256", "p256"), "kid", bad), Claims());
    ExpectFailure(Validate(t), ErrorCode::kInvalidArgument, "kid must be a non-empty string", t);
  }
}

TEST(JwtSvidTest, HeaderMembersAndTyp) {
  for (const char* extra : {"jku", "jwk", "x5c", "crit", "cty", "b64", "zip"}) {
    Json header = Header("ES256", "p256");
    header[extra] = "x";
    std::string t = Token(Key(KeyType::kEcP256), header, Claims());
    ExpectFailure(Validate(t), ErrorCode::kInvalidArgument,
                  "member \"" + std::string(extra) + "\" is not allowed", t);
  }
  for (const Json& typ : {Json("jwt"), Json("at+jwt"), Json("JWS"), Json(1)}) {
    std::string t =
        Token(Key(KeyType::kEcP256), With(Header("ES256", "p256"), "typ", typ), Claims());
    ExpectFailure(Validate(t), ErrorCode::kInvalidArgument, "typ must be", t);
  }
  std::string jose =
      Token(Key(KeyType::kEcP256), With(Header("ES256", "p256"), "typ", "JOSE"), Claims());
  EXPECT_TRUE(Validate(jose).ok());
  Json no_typ = Header("ES256", "p256");
  no_typ.erase("typ");
  EXPECT_TRUE(Validate(Token(Key(KeyType::kEcP256), no_typ, Claims())).ok());

  std::string claims = B64(Claims());
  std::string array_header = Base64UrlEncode(std::string("[]")) + "." + claims + ".AAAA";
  ExpectFailure(Validate(array_header), ErrorCode::kInvalidArgument, "must be a JSON object",
                array_header);
}

TEST(JwtSvidTest, StructuralRules) {
  std::string good = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), Claims());
  ASSERT_TRUE(Validate(good).ok());
  std::string four = good + ".AAAA";
  ExpectFailure(Validate(four), ErrorCode::kInvalidArgument, "three", four);
  std::string two = good.substr(0, good.rfind('.'));
  ExpectFailure(Validate(two), ErrorCode::kInvalidArgument, "three", two);
  std::string jwe = good + ".a.b";
  ExpectFailure(Validate(jwe), ErrorCode::kInvalidArgument, "three", jwe);
  ExpectFailure(Validate(""), ErrorCode::kInvalidArgument, "three", "");
  std::string json_serialization = Json{{"payload", "x"}, {"signatures", Json::array()}}.dump();
  EXPECT_FALSE(Validate(json_serialization).ok());
  std::string padded = good + "=";
  ExpectFailure(Validate(padded), ErrorCode::kInvalidArgument, "signature", padded);
  std::string with_newline = good + "\n";
  EXPECT_FALSE(Validate(with_newline).ok());

  // ES signatures are raw r||s; the DER form OpenSSL produces is refused.
  std::string input = good.substr(0, good.rfind('.'));
  auto der = Key(KeyType::kEcP256).Sign(AsBytes(input), EVP_sha256());
  ASSERT_TRUE(der.ok());
  std::string der_token = input + "." + Base64UrlEncode(*der);
  ExpectFailure(Validate(der_token), ErrorCode::kInvalidArgument, "must be 64 bytes", der_token);
  std::string empty_sig = input + ".";
  ExpectFailure(Validate(empty_sig), ErrorCode::kInvalidArgument, "signature: empty", empty_sig);
  std::string zero_sig = input + "." + Base64UrlEncode(std::vector<uint8_t>(64, 0));
  ExpectFailure(Validate(zero_sig), ErrorCode::kUnauthenticated, "signature", zero_sig);

  Json big_claims = Claims();
  big_claims["pad"] = std::string(kMaxJwtBytes, 'x');
  std::string oversized = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), big_claims);
  ExpectFailure(Validate(oversized), ErrorCode::kInvalidArgument, "larger than 16 KiB", oversized);
  ExpectFailure(ParseJwtSvidInsecure(oversized), ErrorCode::kInvalidArgument, "16 KiB", oversized);
}

TEST(JwtSvidTest, ClaimRules) {
  struct Case {
    const char* name;
    Json claims;
    const char* needle;
  };
  std::vector<Case> cases = {
      {"no sub", With(Claims(), "sub", nullptr), "\"sub\": must be a string"},
      {"bad sub", With(Claims(), "sub", "https://example.org/w"), "\"sub\""},
      {"sub td uppercase", With(Claims(), "sub", "spiffe://EXAMPLE.org/w"), "\"sub\""},
      {"no exp", With(Claims(), "exp", "soon"), "\"exp\": must be a number"},
      {"negative exp", With(Claims(), "exp", -1), "\"exp\": out of range"},
      {"huge exp", With(Claims(), "exp", 1e20), "\"exp\": out of range"},
      {"huge int exp", With(Claims(), "exp", 18446744073709551615u), "out of range"},
      {"aud empty array", With(Claims(), "aud", Json::array()), "\"aud\""},
      {"aud number", With(Claims(), "aud", 7), "\"aud\""},
      {"aud mixed", With(Claims(), "aud", {"svc", 1}), "\"aud\": entries"},
      {"aud empty string", With(Claims(), "aud", ""), "\"aud\": empty"},
      {"nbf string", With(Claims(), "nbf", "x"), "\"nbf\""},
      {"iat string", With(Claims(), "iat", "x"), "\"iat\""},
  };
  Json missing_sub = Claims();
  missing_sub.erase("sub");
  cases.push_back({"missing sub", missing_sub, "\"sub\": missing"});
  Json missing_exp = Claims();
  missing_exp.erase("exp");
  cases.push_back({"missing exp", missing_exp, "\"exp\": missing"});
  Json missing_aud = Claims();
  missing_aud.erase("aud");
  cases.push_back({"missing aud", missing_aud, "\"aud\": missing"});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::string t = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), c.claims);
    ExpectFailure(Validate(t), ErrorCode::kInvalidArgument, c.needle, t);
    ExpectFailure(ParseJwtSvidInsecure(t), ErrorCode::kInvalidArgument, c.needle, t);
  }
  std::string array_claims =
      B64(Header("ES256", "p256")) + "." + Base64UrlEncode(std::string("[1]")) + ".AAAA";
  EXPECT_FALSE(Validate(array_claims).ok());

  // Other claims pass through; a fractional exp is accepted.
  Json extra = Claims();
  extra["jti"] = "abc";
  extra["exp"] = static_cast<double>(kNowS) + 300.5;
  auto svid = Validate(Token(Key(KeyType::kEcP256), Header("ES256", "p256"), extra));
  ASSERT_TRUE(svid.ok()) << svid.error().ToString();
  EXPECT_EQ(svid->claims["jti"], "abc");
  EXPECT_EQ(svid->expiry, kNow + Seconds(300));
}

TEST(JwtSvidTest, ExpiryAndLeeway) {
  Json claims = Claims();
  claims["exp"] = kNowS;
  std::string t = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), claims);
  EXPECT_TRUE(Validate(t, kSvc, kNow).ok());
  EXPECT_TRUE(Validate(t, kSvc, kNow + Seconds(30), Seconds(30)).ok());  // edge: exp + leeway
  ExpectFailure(Validate(t, kSvc, kNow + Seconds(31), Seconds(30)), ErrorCode::kUnauthenticated,
                "expired", t);
  EXPECT_TRUE(Validate(t, kSvc, kNow, Seconds(0)).ok());
  ExpectFailure(Validate(t, kSvc, kNow + Seconds(1), Seconds(0)), ErrorCode::kUnauthenticated,
                "expired", t);
  ExpectFailure(Validate(t, kSvc, kNow + Seconds(3600)), ErrorCode::kUnauthenticated, "expired", t);
  // Default leeway.
  EXPECT_TRUE(Validate(t, kSvc, kNow + kDefaultJwtLeeway).ok());
  EXPECT_FALSE(Validate(t, kSvc, kNow + kDefaultJwtLeeway + Seconds(1)).ok());
  ExpectFailure(Validate(t, kSvc, kNow, Seconds(-1)), ErrorCode::kInvalidArgument, "leeway", t);
  // ParseJwtSvidInsecure does not look at the clock.
  EXPECT_TRUE(ParseJwtSvidInsecure(t).ok());
}

TEST(JwtSvidTest, NotBeforeAndIssuedAt) {
  Json claims = Claims();
  claims["nbf"] = kNowS + 30;
  std::string t = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), claims);
  EXPECT_TRUE(Validate(t, kSvc, kNow, Seconds(30)).ok());
  ExpectFailure(Validate(t, kSvc, kNow - Seconds(1), Seconds(30)), ErrorCode::kUnauthenticated,
                "nbf", t);
  claims.erase("nbf");
  claims["iat"] = kNowS + 120;
  t = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), claims);
  ExpectFailure(Validate(t), ErrorCode::kUnauthenticated, "iat", t);
  EXPECT_TRUE(Validate(t, kSvc, kNow + Seconds(100)).ok());
}

TEST(JwtSvidTest, Audience) {
  Json claims = Claims();
  claims["aud"] = {"a", "b", "c"};
  std::string t = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), claims);
  std::vector<std::string> ab = {"a", "b"};
  EXPECT_TRUE(Validate(t, ab).ok());
  std::vector<std::string> c_only = {"c"};
  EXPECT_TRUE(Validate(t, c_only).ok());
  std::vector<std::string> missing = {"svc"};
  ExpectFailure(Validate(t, missing), ErrorCode::kUnauthenticated,
                "audience does not include \"svc\"", t);
  std::vector<std::string> one_missing = {"a", "d"};
  ExpectFailure(Validate(t, one_missing), ErrorCode::kUnauthenticated, "\"d\"", t);

  claims["aud"] = "a";
  t = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), claims);
  ExpectFailure(Validate(t, ab), ErrorCode::kUnauthenticated, "\"b\"", t);
  std::vector<std::string> case_differs = {"A"};
  EXPECT_FALSE(Validate(t, case_differs).ok());

  std::vector<std::string> none;
  ExpectFailure(Validate(t, none), ErrorCode::kInvalidArgument, "expected audience", t);
  std::vector<std::string> blank = {""};
  ExpectFailure(Validate(t, blank), ErrorCode::kInvalidArgument, "expected audience", t);
}

TEST(JwtSvidTest, BundleOfSubjectsTrustDomainOnly) {
  // Signed by a key that example.org trusts, but the subject is in other.org.
  Json claims = Claims();
  claims["sub"] = "spiffe://other.org/workload";
  std::string t = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), claims);
  ExpectFailure(Validate(t), ErrorCode::kUnauthenticated,
                "no bundle for trust domain \"other.org\"", t);

  // other.org has a bundle, holding a different key under the same kid.
  BundleSet set = Bundles();
  auto other = std::make_shared<TrustBundle>(TrustDomain::Parse("other.org").value());
  ASSERT_TRUE(
      other->AddJwtAuthority("p256", PrivateKey::Generate(KeyType::kEcP256)->Public()).ok());
  set.Put(other);
  auto r = ValidateJwtSvid(t, set, kSvc, kNow);
  ExpectFailure(r, ErrorCode::kUnauthenticated, "signature", t);

  // A bundle with no JWT authorities: nothing from that domain is trusted.
  BundleSet x509_only;
  x509_only.Put(std::make_shared<TrustBundle>(TrustDomain::Parse("example.org").value()));
  std::string good = Token(Key(KeyType::kEcP256), Header("ES256", "p256"), Claims());
  ExpectFailure(ValidateJwtSvid(good, x509_only, kSvc, kNow), ErrorCode::kUnauthenticated,
                "not a JWT authority", good);
}

TEST(JwtSvidTest, ParseInsecureSkipsVerification) {
  auto stranger = PrivateKey::Generate(KeyType::kEcP256).value();
  std::string t = Token(stranger, Header("ES256", "whatever"), Claims());
  auto parsed = ParseJwtSvidInsecure(t);
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(parsed->id.str(), "spiffe://example.org/workload");
  EXPECT_EQ(parsed->expiry, kNow + Seconds(300));
  EXPECT_FALSE(Validate(t).ok());
}

}  // namespace
}  // namespace sigil::core
