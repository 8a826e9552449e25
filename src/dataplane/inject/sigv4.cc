#include "dataplane/inject/sigv4.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <utility>

#include "common/encoding.h"
#include "common/ossl.h"

namespace sigil::dataplane::inject {
namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
constexpr std::string_view kUnsignedPayload = "UNSIGNED-PAYLOAD";
constexpr size_t kSha256Bytes = 32;

using EvpMacCtxPtr = std::unique_ptr<EVP_MAC_CTX, OsslFree<EVP_MAC_CTX_free>>;

// Wipes a string that held secret material when it goes out of scope.
class WipeOnExit {
 public:
  explicit WipeOnExit(std::string& s) : s_(s) {}
  ~WipeOnExit() { OPENSSL_cleanse(s_.data(), s_.size()); }
  WipeOnExit(const WipeOnExit&) = delete;
  WipeOnExit& operator=(const WipeOnExit&) = delete;

 private:
  std::string& s_;
};

bool IsUnreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) {
      return InvalidArgument("sigv4: truncated percent-escape in query");
    }
    const int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
    if (hi < 0 || lo < 0) return InvalidArgument("sigv4: malformed percent-escape in query");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// RFC 3986 5.2.4 dot-segment removal as AWS (and botocore) apply it: empty segments are
// dropped too, so "//" collapses; a leading '/' is kept, a trailing one only if any segment
// is left.
std::string RemoveDotSegments(std::string_view path) {
  std::vector<std::string_view> out;
  std::string_view rest = path;
  while (true) {
    const size_t slash = rest.find('/');
    const std::string_view seg = rest.substr(0, slash);
    if (seg == "..") {
      if (!out.empty()) out.pop_back();
    } else if (!seg.empty() && seg != ".") {
      out.push_back(seg);
    }
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  std::string result = path.front() == '/' ? "/" : "";
  for (size_t i = 0; i < out.size(); ++i) {
    if (i > 0) result.push_back('/');
    result.append(out[i]);
  }
  if (path.back() == '/' && !out.empty()) result.push_back('/');
  return result;
}

Result<void> Hmac(std::span<const uint8_t> key, std::string_view message, uint8_t* out) {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr) return OsslError("sigv4: HMAC unavailable");
  EvpMacCtxPtr ctx(EVP_MAC_CTX_new(mac));
  if (!ctx) return OsslError("sigv4: EVP_MAC_CTX_new");
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
  SIGIL_TRY(OsslCheck(EVP_MAC_init(ctx.get(), key.data(), key.size(), params), "sigv4: HMAC init"));
  SIGIL_TRY(OsslCheck(EVP_MAC_update(ctx.get(), AsBytes(message).data(), message.size()),
                      "sigv4: HMAC update"));
  size_t len = 0;
  SIGIL_TRY(OsslCheck(EVP_MAC_final(ctx.get(), out, &len, kSha256Bytes), "sigv4: HMAC final"));
  if (len != kSha256Bytes) return Internal("sigv4: unexpected HMAC length");
  return Ok();
}

bool IsScopeComponent(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f && c != '/'; });
}

bool InList(const std::vector<std::string>& list, std::string_view lname) {
  return std::any_of(list.begin(), list.end(),
                     [&](const std::string& s) { return http::EqualsIgnoreCase(s, lname); });
}

bool IsReplaced(std::string_view lname) {
  return std::find(std::begin(SigV4Result::kReplaced), std::end(SigV4Result::kReplaced), lname) !=
         std::end(SigV4Result::kReplaced);
}

}  // namespace

UriMode DefaultUriMode(std::string_view service) {
  return service == "s3" || service.starts_with("s3-") ? UriMode::kS3
                                                       : UriMode::kNormalizeAndEncode;
}

std::string AmzDate(TimePoint time) {
  const auto t = static_cast<std::time_t>(ToUnixSeconds(time));
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return {buf, n};
}

std::string UriEncode(std::string_view bytes, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(bytes.size() * 3);
  for (char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (IsUnreserved(c) || (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::string CanonicalUri(std::string_view path, UriMode mode) {
  if (path.empty()) return "/";
  if (mode == UriMode::kS3) return std::string(path);
  return UriEncode(RemoveDotSegments(path), /*keep_slash=*/true);
}

Result<std::string> CanonicalQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> pairs;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view part = query.substr(0, amp);
    if (!part.empty()) {
      const size_t eq = part.find('=');
      SIGIL_ASSIGN_OR_RETURN(std::string name, PercentDecode(part.substr(0, eq)));
      std::string value;
      if (eq != std::string_view::npos) {
        SIGIL_ASSIGN_OR_RETURN(value, PercentDecode(part.substr(eq + 1)));
      }
      pairs.emplace_back(UriEncode(name, false), UriEncode(value, false));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  std::sort(pairs.begin(), pairs.end());
  std::string out;
  for (const auto& [name, value] : pairs) {
    if (!out.empty()) out.push_back('&');
    out.append(name).append("=").append(value);
  }
  return out;
}

std::string CanonicalHeaderValue(std::string_view value) {
  std::string out;
  bool space = false;
  for (char c : value) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

Result<SecretBytes> DeriveSigningKey(const SecretBytes& secret, std::string_view date,
                                     std::string_view region, std::string_view service) {
  SecretBytes seed(4 + secret.size());
  std::memcpy(seed.data(), "AWS4", 4);
  if (!secret.empty()) std::memcpy(seed.data() + 4, secret.data(), secret.size());
  SecretBytes k_date(kSha256Bytes), k_region(kSha256Bytes), k_service(kSha256Bytes),
      k_signing(kSha256Bytes);
  SIGIL_TRY(Hmac(seed.span(), date, k_date.data()));
  SIGIL_TRY(Hmac(k_date.span(), region, k_region.data()));
  SIGIL_TRY(Hmac(k_region.span(), service, k_service.data()));
  SIGIL_TRY(Hmac(k_service.span(), "aws4_request", k_signing.data()));
  return k_signing;  // the others are wiped by SecretBytes' destructor (OPENSSL_cleanse)
}

Result<SigV4Result> SignV4ForTest(const SigV4Request& request, const AwsCredentials& credentials,
                                  const SigV4Params& params, SigV4Debug* debug) {
  if (!http::IsToken(request.method)) return InvalidArgument("sigv4: method is not a token");
  if (!IsScopeComponent(credentials.access_key_id)) {
    return InvalidArgument("sigv4: malformed access key id");
  }
  if (!IsScopeComponent(params.region) || !IsScopeComponent(params.service)) {
    return InvalidArgument("sigv4: malformed region or service");
  }
  if (!request.path.empty() && request.path.front() != '/') {
    return InvalidArgument("sigv4: path must start with '/'");
  }
  for (char c : request.path) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '?' || c == '#') {
      return InvalidArgument("sigv4: invalid character in path");
    }
  }
  const std::string_view token = credentials.session_token.view();
  if (!http::IsValidFieldValue(token) || token.find_first_of(" \t") != std::string_view::npos) {
    return InvalidArgument("sigv4: session token is not a valid header value");
  }

  const std::string amz_date = AmzDate(params.time);
  const std::string date = amz_date.substr(0, 8);
  const bool unsigned_payload = !request.body.has_value();
  const std::string payload_hash =
      unsigned_payload ? std::string(kUnsignedPayload) : Sha256Hex(AsBytes(*request.body));
  const bool content_header =
      params.content_sha256_header || unsigned_payload || params.uri_mode == UriMode::kS3;

  SigV4Result result;
  result.set.push_back({"X-Amz-Date", amz_date});
  if (!token.empty()) result.set.push_back({"X-Amz-Security-Token", std::string(token)});
  if (content_header) result.set.push_back({"X-Amz-Content-SHA256", payload_hash});

  // name -> values joined with ',' in the order received; std::map sorts by bytes.
  std::map<std::string, std::string> signed_values;
  bool have_host = false;
  for (const HeaderField& f : request.headers) {
    if (!http::IsToken(f.name)) return InvalidArgument("sigv4: header name is not a token");
    if (!http::IsValidFieldValue(f.value)) {
      return InvalidArgument("sigv4: invalid value of header \"" + f.name + "\"");
    }
    const std::string lname = http::AsciiLower(f.name);
    if (IsReplaced(lname) || InList(params.unsigned_headers, lname)) continue;
    have_host = have_host || lname == "host";
    auto [it, fresh] = signed_values.try_emplace(lname);
    if (!fresh) it->second.push_back(',');
    it->second.append(CanonicalHeaderValue(f.value));
  }
  if (!have_host) return InvalidArgument("sigv4: request has no Host header");
  for (const HeaderField& f : result.set) {
    signed_values[http::AsciiLower(f.name)] = f.value;
  }

  SIGIL_ASSIGN_OR_RETURN(std::string query, CanonicalQuery(request.query));
  std::string canonical;
  WipeOnExit wipe_canonical(canonical);  // holds the session token
  canonical.append(request.method).push_back('\n');
  canonical.append(CanonicalUri(request.path, params.uri_mode)).push_back('\n');
  canonical.append(query).push_back('\n');
  for (const auto& [name, value] : signed_values) {
    canonical.append(name).append(":").append(value).push_back('\n');
    if (!result.signed_headers.empty()) result.signed_headers.push_back(';');
    result.signed_headers.append(name);
  }
  canonical.push_back('\n');
  canonical.append(result.signed_headers).push_back('\n');
  canonical.append(payload_hash);

  const std::string scope = date + "/" + params.region + "/" + params.service + "/aws4_request";
  std::string string_to_sign = std::string(kAlgorithm) + "\n" + amz_date + "\n" + scope + "\n" +
                               Sha256Hex(AsBytes(canonical));
  SIGIL_ASSIGN_OR_RETURN(SecretBytes key, DeriveSigningKey(credentials.secret_access_key, date,
                                                           params.region, params.service));
  uint8_t signature[kSha256Bytes];
  SIGIL_TRY(Hmac(key.span(), string_to_sign, signature));
  result.set.push_back({"Authorization", std::string(kAlgorithm) +
                                             " Credential=" + credentials.access_key_id + "/" +
                                             scope + ", SignedHeaders=" + result.signed_headers +
                                             ", Signature=" + HexEncode(signature)});
  if (debug != nullptr) {
    debug->canonical_request = canonical;
    debug->string_to_sign = std::move(string_to_sign);
  }
  return result;
}

Result<SigV4Result> SignV4(const SigV4Request& request, const AwsCredentials& credentials,
                           const SigV4Params& params) {
  return SignV4ForTest(request, credentials, params, nullptr);
}

}  // namespace sigil::dataplane::inject
