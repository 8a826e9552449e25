// Test-only helpers for JWT-SVID tests: a JWS signer written independently of jwt_svid.cc,
// canonical header/claims, a bundle holding one key of every JWT-SVID type, and an error
// matcher that also checks the token is never echoed.
#pragma once

#include <gtest/gtest.h>
#include <openssl/rsa.h>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/encoding.h"
#include "core/jwt_svid.h"

namespace sigil::core::jwt_testing {

inline constexpr int64_t kNowS = 1'700'000'000;
inline const TimePoint kNow = FromUnixSeconds(kNowS);
inline const std::vector<std::string> kSvc = {"svc"};

inline const PrivateKey& Key(KeyType type) {
  static std::map<KeyType, PrivateKey> keys;
  auto it = keys.find(type);
  if (it == keys.end()) it = keys.emplace(type, PrivateKey::Generate(type).value()).first;
  return it->second;
}

inline const EVP_MD* DigestOf(std::string_view alg) {
  if (alg.ends_with("384")) return EVP_sha384();
  if (alg.ends_with("512")) return EVP_sha512();
  return EVP_sha256();
}

// A JWS signer written independently of jwt_svid.cc (raw EVP calls, own r||s conversion) so
// the tests catch encoding mistakes instead of repeating them.
inline std::vector<uint8_t> SignJws(const PrivateKey& key, std::string_view input,
                                    std::string_view alg, int pss_salt = RSA_PSS_SALTLEN_DIGEST) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  EXPECT_EQ(EVP_DigestSignInit(ctx.get(), &pctx, DigestOf(alg), nullptr, key.get()), 1);
  if (alg.starts_with("PS")) {
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, pss_salt), 1);
  }
  size_t len = 0;
  EXPECT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, AsBytes(input).data(), input.size()), 1);
  std::vector<uint8_t> sig(len);
  EXPECT_EQ(EVP_DigestSign(ctx.get(), sig.data(), &len, AsBytes(input).data(), input.size()), 1);
  sig.resize(len);
  if (!alg.starts_with("ES")) return sig;
  const size_t half = alg == "ES256" ? 32 : alg == "ES384" ? 48 : 66;
  const unsigned char* p = sig.data();
  EcdsaSigPtr ecdsa(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size())));
  std::vector<uint8_t> raw(2 * half);
  BN_bn2binpad(ECDSA_SIG_get0_r(ecdsa.get()), raw.data(), static_cast<int>(half));
  BN_bn2binpad(ECDSA_SIG_get0_s(ecdsa.get()), raw.data() + half, static_cast<int>(half));
  return raw;
}

inline std::string B64(const nlohmann::json& j) { return Base64UrlEncode(j.dump()); }

inline std::string Token(const PrivateKey& key, const nlohmann::json& header,
                         const nlohmann::json& claims, int pss_salt = RSA_PSS_SALTLEN_DIGEST) {
  std::string input = B64(header) + "." + B64(claims);
  std::string alg = header.value("alg", "ES256");
  return input + "." + Base64UrlEncode(SignJws(key, input, alg, pss_salt));
}

inline nlohmann::json Header(std::string_view alg, std::string_view kid) {
  return {{"alg", alg}, {"kid", kid}, {"typ", "JWT"}};
}

inline nlohmann::json With(nlohmann::json base, const std::string& member, nlohmann::json value) {
  base[member] = std::move(value);
  return base;
}

inline nlohmann::json Claims() {
  return {{"sub", "spiffe://example.org/workload"},
          {"aud", "svc"},
          {"exp", kNowS + 300},
          {"iat", kNowS}};
}

inline BundleSet Bundles() {
  auto bundle = std::make_shared<TrustBundle>(TrustDomain::Parse("example.org").value());
  EXPECT_TRUE(bundle->AddJwtAuthority("p256", Key(KeyType::kEcP256).Public()).ok());
  EXPECT_TRUE(bundle->AddJwtAuthority("p384", Key(KeyType::kEcP384).Public()).ok());
  EXPECT_TRUE(bundle->AddJwtAuthority("p521", Key(KeyType::kEcP521).Public()).ok());
  EXPECT_TRUE(bundle->AddJwtAuthority("rsa", Key(KeyType::kRsa2048).Public()).ok());
  BundleSet set;
  set.Put(bundle);
  return set;
}

inline Result<JwtSvid> Validate(std::string_view token, std::span<const std::string> aud = kSvc,
                                TimePoint now = kNow, Seconds leeway = kDefaultJwtLeeway) {
  return ValidateJwtSvid(token, Bundles(), aud, now, JwtValidationOptions{leeway});
}

// Every error must carry its code and reason, and no part of the token.
inline void ExpectFailure(const Result<JwtSvid>& r, ErrorCode code, std::string_view needle,
                          std::string_view token) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), code) << r.error().ToString();
  EXPECT_NE(r.error().message().find(needle), std::string::npos)
      << r.error().message() << " should mention " << needle;
  for (size_t pos = 0; pos + 16 <= token.size(); pos += 16) {
    EXPECT_EQ(r.error().message().find(token.substr(pos, 16)), std::string::npos)
        << "error message echoes the token";
  }
}

inline JwtMintParams MintParams(std::vector<std::string> aud = kSvc) {
  return JwtMintParams{SpiffeId::Parse("spiffe://example.org/workload").value(), std::move(aud),
                       kNow, kNow + Seconds(300)};
}

}  // namespace sigil::core::jwt_testing
