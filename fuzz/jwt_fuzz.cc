// Fuzzes the JWT-SVID parser and validator: ParseJwtSvidInsecure, then ValidateJwtSvid against
// a fixed bundle whose keys signed the valid seeds in corpus/jwt (generated with MintJwtSvid and
// with Python `cryptography`; exp 2100-01-01, aud "fuzz"). Invariants: validation implies
// parsing; a validated token is for example.org, carries the expected audience and is unexpired;
// error messages never contain the token.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/jwt_svid.h"

namespace {

using sigil::core::BundleSet;
using sigil::core::TrustBundle;
using sigil::core::TrustDomain;

// kid "fuzz-ec" (P-256) and "fuzz-rsa" (RSA-2048); TrustBundle::ToJwtJwks output.
constexpr std::string_view kBundleJwks =
    R"({"keys":[{"crv":"P-256","kid":"fuzz-ec","kty":"EC","use":"jwt-svid","x":"qntPRns96UuRc3U)"
    R"(-SejEol3zMDdJTOhshZs8RE6rWdw","y":"lQXGBjTD5iTEO-y9RjYtnBivEFHliBY9GHRSRD-hTbs"},{"e":"A)"
    R"(QAB","kid":"fuzz-rsa","kty":"RSA","n":"kNHYXhTJejFvXBLFSWPBf8KUZlVW_vOUXF1q7Ss86wLFxzk6W)"
    R"(yksr1AQNLqEYeu717Au7TKcVi03yuGj_x62zJQtq6s-6pt5gd4YTQnyOqIe3rZocH5BQ98NQWYNA2PJw2lwvHjGe)"
    R"(bLgfOQLXkPVTOwYCS0-uTw5qr01pm0sbm4HGD5W9hJQR8f78_VNm1FjtBtszVNEGWfoZmZuskdUywfOBBDlb1yTO)"
    R"(upfdJHujahtgweIhyBAr0nNGi7s5YC4oEG5jiniYhV2azGny4Lb9SRpnXrCvgUaLnHnXD4ZAxG4a40gJU8wFZwGR)"
    R"(zf9FvFWCLc85pCIEZCi8IuIR9Sjew","use":"jwt-svid"}]})";

constexpr int64_t kNow = 1'700'000'000;

const BundleSet& Bundles() {
  static const BundleSet set = [] {
    auto td = TrustDomain::Parse("example.org");
    auto bundle = TrustBundle::ParseJwks(*td, kBundleJwks);
    if (!bundle.ok() || bundle->jwt_authorities().size() != 2) std::abort();
    BundleSet s;
    s.Put(std::make_shared<const TrustBundle>(std::move(bundle).value()));
    return s;
  }();
  return set;
}

void CheckMessage(const sigil::Error& error, std::string_view token) {
  if (token.size() >= 24 && error.message().find(token) != std::string::npos) {
    (void)std::fprintf(stderr, "error echoes the token: %s\n", error.ToString().c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view token(reinterpret_cast<const char*>(data), size);
  static const std::vector<std::string> audience = {"fuzz"};

  auto parsed = sigil::core::ParseJwtSvidInsecure(token);
  if (parsed.ok()) {
    if (parsed->audience.empty() || parsed->token != token) std::abort();
    (void)parsed->claims.dump();  // parsed JSON must always be serialisable
  } else {
    CheckMessage(parsed.error(), token);
  }

  const auto now = sigil::FromUnixSeconds(kNow);
  auto validated = sigil::core::ValidateJwtSvid(token, Bundles(), audience, now);
  if (!validated.ok()) {
    CheckMessage(validated.error(), token);
    return 0;
  }
  if (!parsed.ok()) std::abort();
  if (validated->id.trust_domain().name() != "example.org") std::abort();
  bool has_audience = false;
  for (const std::string& a : validated->audience) has_audience = has_audience || a == "fuzz";
  if (!has_audience) std::abort();
  if (validated->expiry + sigil::core::kDefaultJwtLeeway < now) std::abort();
  return 0;
}
