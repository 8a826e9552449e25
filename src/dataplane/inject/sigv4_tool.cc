// sigil_sigv4_tool: signs requests described as JSON with SignV4, for the botocore equality
// test (tests/inject/test_sigv4_botocore.py). Test-only; never installed.
//
// stdin: a JSON array of cases
//   {"method", "path", "query", "headers": [[name, value], ...], "body_hex": "..." | null,
//    "access_key", "secret", "token" (may be ""), "region", "service", "time": unix seconds,
//    "uri_mode": "s3" | "normalize" (default: by service),
//    "content_sha256": bool (X-Amz-Content-SHA256 for a signed payload too; default false)}
// stdout: a JSON array, one object per case:
//   {"headers": [[name, value], ...], "signed_headers", "canonical_request", "string_to_sign"}
//   or {"error": "..."}.
#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "common/encoding.h"
#include "dataplane/inject/sigv4.h"

namespace {

using nlohmann::json;
using namespace sigil::dataplane::inject;

json SignCase(const json& c) {
  AwsCredentials creds;
  creds.access_key_id = c.at("access_key").get<std::string>();
  creds.secret_access_key = sigil::SecretBytes::Copy(c.at("secret").get<std::string>());
  creds.session_token = sigil::SecretBytes::Copy(c.value("token", std::string()));
  SigV4Params params;
  params.region = c.at("region").get<std::string>();
  params.service = c.at("service").get<std::string>();
  params.time = sigil::FromUnixSeconds(c.at("time").get<int64_t>());
  const std::string mode = c.value("uri_mode", std::string());
  params.uri_mode = mode.empty()   ? DefaultUriMode(params.service)
                    : mode == "s3" ? UriMode::kS3
                                   : UriMode::kNormalizeAndEncode;
  params.content_sha256_header = c.value("content_sha256", false);
  const std::string method = c.at("method").get<std::string>();
  const std::string path = c.at("path").get<std::string>();
  const std::string query = c.value("query", std::string());
  std::string body;
  SigV4Request request{method, path, query, {}, std::nullopt};
  for (const auto& h : c.at("headers")) {
    request.headers.push_back({h.at(0).get<std::string>(), h.at(1).get<std::string>()});
  }
  if (c.contains("body_hex") && !c.at("body_hex").is_null()) {
    auto bytes = sigil::HexDecode(c.at("body_hex").get<std::string>());
    if (!bytes.ok()) return json{{"error", bytes.error().ToString()}};
    body.assign(bytes->begin(), bytes->end());
    request.body = body;
  }
  SigV4Debug debug;
  auto signed_ = SignV4ForTest(request, creds, params, &debug);
  if (!signed_.ok()) return json{{"error", signed_.error().ToString()}};
  json headers = json::array();
  for (const auto& f : signed_->set) headers.push_back({f.name, f.value});
  return json{{"headers", headers},
              {"signed_headers", signed_->signed_headers},
              {"canonical_request", debug.canonical_request},
              {"string_to_sign", debug.string_to_sign}};
}

}  // namespace

int main() {
  std::string input;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), stdin)) > 0;) input.append(buf, n);
  const json cases = json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (!cases.is_array()) {
    std::cerr << "sigil_sigv4_tool: stdin is not a JSON array\n";
    return 2;
  }
  json out = json::array();
  for (const auto& c : cases) {
    try {
      out.push_back(SignCase(c));
    } catch (const json::exception& e) {  // a malformed case: report it, keep going
      out.push_back(json{{"error", std::string("bad case: ") + e.what()}});
    }
  }
  std::cout << out.dump() << "\n";
  return 0;
}
