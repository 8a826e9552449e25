#include "core/jwk.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>

#include <map>
#include <string>

#include "common/encoding.h"

namespace sigil::core {
namespace {

using Json = nlohmann::json;

// RFC 7517 appendix A.1.
const Json kRfcEcKey = {{"kty", "EC"},
                        {"crv", "P-256"},
                        {"x", "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4"},
                        {"y", "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
                        {"use", "enc"},
                        {"kid", "1"}};
const Json kRfcRsaKey = {
    {"kty", "RSA"},
    {"n",
     "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
     "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
     "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
     "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"},
    {"e", "AQAB"},
    {"alg", "RS256"},
    {"kid", "2011-04-29"}};

const PrivateKey& Key(KeyType type) {
  static std::map<KeyType, PrivateKey> keys;
  auto it = keys.find(type);
  if (it == keys.end()) {
    auto key = PrivateKey::Generate(type);
    if (!key.ok()) std::abort();
    it = keys.emplace(type, std::move(key).value()).first;
  }
  return it->second;
}

void ExpectRejected(const Json& jwk, std::string_view needle) {
  auto key = PublicKeyFromJwk(jwk);
  ASSERT_FALSE(key.ok()) << jwk.dump();
  EXPECT_EQ(key.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(key.error().message().find(needle), std::string::npos)
      << key.error().message() << " should mention " << needle;
}

std::vector<uint8_t> Decode(const Json& member) {
  auto bytes = Base64UrlDecode(member.get<std::string>());
  if (!bytes.ok()) std::abort();
  return *bytes;
}

TEST(JwkTest, EcRoundTripOnEveryCurve) {
  struct Case {
    KeyType type;
    const char* crv;
    size_t coordinate_bytes;
  };
  for (const Case& c : {Case{KeyType::kEcP256, "P-256", 32}, Case{KeyType::kEcP384, "P-384", 48},
                        Case{KeyType::kEcP521, "P-521", 66}}) {
    SCOPED_TRACE(c.crv);
    PublicKey pub = Key(c.type).Public();
    auto jwk = PublicKeyToJwk(pub);
    ASSERT_TRUE(jwk.ok()) << jwk.error().ToString();
    EXPECT_EQ((*jwk)["kty"], "EC");
    EXPECT_EQ((*jwk)["crv"], c.crv);
    EXPECT_EQ(Decode((*jwk)["x"]).size(), c.coordinate_bytes);
    EXPECT_EQ(Decode((*jwk)["y"]).size(), c.coordinate_bytes);
    EXPECT_EQ(jwk->size(), 4u);
    auto back = PublicKeyFromJwk(*jwk);
    ASSERT_TRUE(back.ok()) << back.error().ToString();
    EXPECT_EQ(back->type(), c.type);
    EXPECT_TRUE(back->Equals(pub));
  }
}

TEST(JwkTest, RsaRoundTrip) {
  PublicKey pub = Key(KeyType::kRsa2048).Public();
  auto jwk = PublicKeyToJwk(pub);
  ASSERT_TRUE(jwk.ok()) << jwk.error().ToString();
  EXPECT_EQ((*jwk)["kty"], "RSA");
  EXPECT_EQ((*jwk)["e"], "AQAB");
  EXPECT_EQ(Decode((*jwk)["n"]).size(), 256u);
  auto back = PublicKeyFromJwk(*jwk);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(back->type(), KeyType::kRsa2048);
  EXPECT_TRUE(back->Equals(pub));
}

TEST(JwkTest, ParsesRfc7517Examples) {
  auto ec = PublicKeyFromJwk(kRfcEcKey);
  ASSERT_TRUE(ec.ok()) << ec.error().ToString();
  EXPECT_EQ(ec->type(), KeyType::kEcP256);
  auto ec_again = PublicKeyToJwk(*ec);
  ASSERT_TRUE(ec_again.ok());
  EXPECT_EQ((*ec_again)["x"], kRfcEcKey["x"]);
  EXPECT_EQ((*ec_again)["y"], kRfcEcKey["y"]);

  auto rsa = PublicKeyFromJwk(kRfcRsaKey);
  ASSERT_TRUE(rsa.ok()) << rsa.error().ToString();
  EXPECT_EQ(rsa->type(), KeyType::kRsa2048);
  auto rsa_again = PublicKeyToJwk(*rsa);
  ASSERT_TRUE(rsa_again.ok());
  EXPECT_EQ((*rsa_again)["n"], kRfcRsaKey["n"]);
}

TEST(JwkTest, Ed25519IsNotRepresentable) {
  auto jwk = PublicKeyToJwk(Key(KeyType::kEd25519).Public());
  ASSERT_FALSE(jwk.ok());
  EXPECT_EQ(jwk.error().code(), ErrorCode::kInvalidArgument);
}

TEST(JwkTest, RejectsMalformedStructure) {
  ExpectRejected(Json::array(), "object");
  ExpectRejected(Json("EC"), "object");
  Json no_kty = kRfcEcKey;
  no_kty.erase("kty");
  ExpectRejected(no_kty, "member \"kty\": missing");
  Json bad_kty = kRfcEcKey;
  bad_kty["kty"] = "oct";
  ExpectRejected(bad_kty, "member \"kty\"");
  bad_kty["kty"] = 1;
  ExpectRejected(bad_kty, "member \"kty\": must be a string");
  bad_kty["kty"] = "ec";  // case-sensitive
  ExpectRejected(bad_kty, "member \"kty\"");
  Json okp = {
      {"kty", "OKP"}, {"crv", "Ed25519"}, {"x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}};
  ExpectRejected(okp, "member \"kty\"");
}

TEST(JwkTest, RejectsPrivateKeyMaterial) {
  Json with_d = kRfcEcKey;
  with_d["d"] = "870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE";
  ExpectRejected(with_d, "member \"d\": private key material");
  Json with_p = kRfcRsaKey;
  with_p["p"] = "AQAB";
  ExpectRejected(with_p, "member \"p\"");
}

TEST(JwkTest, RejectsBadEcMembers) {
  Json j = kRfcEcKey;
  j["crv"] = "P-192";
  ExpectRejected(j, "member \"crv\"");
  j["crv"] = "secp256k1";
  ExpectRejected(j, "member \"crv\"");
  j = kRfcEcKey;
  j.erase("crv");
  ExpectRejected(j, "member \"crv\": missing");

  j = kRfcEcKey;
  j.erase("x");
  ExpectRejected(j, "member \"x\": missing");
  j = kRfcEcKey;
  j["y"] = 5;
  ExpectRejected(j, "member \"y\": must be a string");
  j = kRfcEcKey;
  j["x"] = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4=";  // padding is not base64url
  ExpectRejected(j, "member \"x\": base64");
  j = kRfcEcKey;
  j["x"] = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D+";  // standard alphabet
  ExpectRejected(j, "member \"x\": base64");
  j = kRfcEcKey;
  j["x"] = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D5";  // non-zero trailing bits
  ExpectRejected(j, "member \"x\": base64");
  j = kRfcEcKey;
  j["x"] = "";
  ExpectRejected(j, "member \"x\": empty");
}

TEST(JwkTest, RejectsWrongCoordinateLength) {
  std::vector<uint8_t> x = Decode(kRfcEcKey["x"]);
  Json j = kRfcEcKey;
  j["x"] = Base64UrlEncode(std::span<const uint8_t>(x).subspan(1));  // 31 bytes
  ExpectRejected(j, "member \"x\": must be 32 bytes");
  std::vector<uint8_t> padded = {0};
  padded.insert(padded.end(), x.begin(), x.end());
  j["x"] = Base64UrlEncode(padded);  // 33 bytes
  ExpectRejected(j, "member \"x\": must be 32 bytes");
  // A P-256 point claimed to be on P-384.
  j = kRfcEcKey;
  j["crv"] = "P-384";
  ExpectRejected(j, "must be 48 bytes");
}

TEST(JwkTest, RejectsPointNotOnCurve) {
  std::vector<uint8_t> y = Decode(kRfcEcKey["y"]);
  y.back() ^= 1;
  Json j = kRfcEcKey;
  j["y"] = Base64UrlEncode(y);
  ExpectRejected(j, "not a point on P-256");
  j["x"] = Base64UrlEncode(std::vector<uint8_t>(32, 0));
  j["y"] = Base64UrlEncode(std::vector<uint8_t>(32, 0));
  ExpectRejected(j, "not a point on P-256");
}

TEST(JwkTest, RejectsCoordinateNotReducedModP) {
  // P-521 coordinates are 66 bytes, so x + p still fits and names the same point after the
  // reduction OpenSSL performs on import; the JWK must still be refused.
  auto jwk = PublicKeyToJwk(Key(KeyType::kEcP521).Public());
  ASSERT_TRUE(jwk.ok());
  std::vector<uint8_t> x = Decode((*jwk)["x"]);
  BignumPtr bx(BN_bin2bn(x.data(), static_cast<int>(x.size()), nullptr));
  BignumPtr p(BN_new());
  ASSERT_TRUE(BN_set_bit(p.get(), 521) && BN_sub_word(p.get(), 1));  // 2^521 - 1
  ASSERT_TRUE(BN_add(bx.get(), bx.get(), p.get()));
  std::vector<uint8_t> big(66);
  ASSERT_GT(BN_bn2binpad(bx.get(), big.data(), 66), 0);
  Json j = *jwk;
  j["x"] = Base64UrlEncode(big);
  auto key = PublicKeyFromJwk(j);
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.error().message().find("member \"x\""), std::string::npos);
}

TEST(JwkTest, RejectsBadRsaMembers) {
  std::vector<uint8_t> n = Decode(kRfcRsaKey["n"]);
  Json j = kRfcRsaKey;
  std::vector<uint8_t> leading_zero = {0};
  leading_zero.insert(leading_zero.end(), n.begin(), n.end());
  j["n"] = Base64UrlEncode(leading_zero);
  ExpectRejected(j, "member \"n\": has a leading zero");

  j = kRfcRsaKey;
  j["n"] = Base64UrlEncode(std::span<const uint8_t>(n).subspan(0, 128));  // 1024 bits
  ExpectRejected(j, "member \"n\": modulus of 1024 bits");
  std::vector<uint8_t> huge(1025, 0xff);  // 8200 bits
  j["n"] = Base64UrlEncode(huge);
  ExpectRejected(j, "outside 2048..8192");
  std::vector<uint8_t> even = n;
  even.back() &= 0xfe;
  j["n"] = Base64UrlEncode(even);
  ExpectRejected(j, "member \"n\": modulus must be odd");
  j = kRfcRsaKey;
  j.erase("n");
  ExpectRejected(j, "member \"n\": missing");

  j = kRfcRsaKey;
  j["e"] = "AQ";  // 1
  ExpectRejected(j, "member \"e\": exponent must be greater than 1");
  j["e"] = "AQAA";  // 65536
  ExpectRejected(j, "member \"e\": exponent must be odd");
  j["e"] = "AAEAAQ";  // leading zero
  ExpectRejected(j, "member \"e\": has a leading zero");
  j["e"] = Base64UrlEncode(std::vector<uint8_t>(9, 0x01));
  ExpectRejected(j, "member \"e\": exponent larger than 64 bits");
  j["e"] = "";
  ExpectRejected(j, "member \"e\": empty");
}

TEST(JwkTest, AcceptsSmallOddExponent) {
  Json j = kRfcRsaKey;
  j["e"] = "Aw";  // 3
  auto key = PublicKeyFromJwk(j);
  ASSERT_TRUE(key.ok()) << key.error().ToString();
  auto back = PublicKeyToJwk(*key);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)["e"], "Aw");
}

TEST(JwkTest, ParseUntrustedJsonRejectsDuplicatesAndDepth) {
  EXPECT_TRUE(ParseUntrustedJson(R"({"a":1,"b":{"a":2}})", "t").ok());
  auto dup = ParseUntrustedJson(R"({"a":1,"a":2})", "t");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().message(), "t: duplicate member name");
  EXPECT_FALSE(ParseUntrustedJson(R"({"x":[{"k":1,"k":1}]})", "t").ok());
  // The same name in sibling objects is fine.
  EXPECT_TRUE(ParseUntrustedJson(R"([{"k":1},{"k":2}])", "t").ok());

  std::string deep =
      std::string(kMaxUntrustedJsonDepth, '[') + std::string(kMaxUntrustedJsonDepth, ']');
  EXPECT_TRUE(ParseUntrustedJson(deep, "t").ok());
  std::string deeper = "[" + deep + "]";
  auto too_deep = ParseUntrustedJson(deeper, "t");
  ASSERT_FALSE(too_deep.ok());
  EXPECT_NE(too_deep.error().message().find("nested deeper"), std::string::npos);
  // Brackets inside strings do not count.
  EXPECT_TRUE(ParseUntrustedJson("[\"" + std::string(100, '[') + "\\\"\"]", "t").ok());

  EXPECT_FALSE(ParseUntrustedJson("", "t").ok());
  EXPECT_FALSE(ParseUntrustedJson("{", "t").ok());
  EXPECT_FALSE(ParseUntrustedJson("{} x", "t").ok());
  EXPECT_FALSE(ParseUntrustedJson("{\"a\":\"\xff\"}", "t").ok());  // invalid UTF-8
  EXPECT_FALSE(ParseUntrustedJson("{/*c*/}", "t").ok());           // no comments
}

}  // namespace
}  // namespace sigil::core
