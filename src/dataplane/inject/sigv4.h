// AWS Signature Version 4, header-based signing, for requests the agent forwards to an
// `inject` Service with a `sigv4` CredentialBinding (issue 6). The workload sends an unsigned
// request; the agent adds X-Amz-Date, X-Amz-Security-Token (temporary credentials),
// X-Amz-Content-SHA256 (S3, or an unsigned payload) and Authorization.
//
// Canonical form, as AWS defines it and as botocore computes it (tests/inject compares every
// byte with botocore's SigV4Auth / S3SigV4Auth):
//   - URI: for every service but S3 the wire path (already percent-encoded once) has empty and
//     "." segments removed and ".." applied (RFC 3986 5.2.4, plus collapsing "//"), then every
//     byte except unreserved characters and '/' is percent-encoded again ("%20" -> "%2520": the
//     double encoding AWS specifies). For S3 the wire path is used as sent: no normalisation,
//     no second encoding (UriMode::kS3).
//   - Query: split at '&' (empty parts ignored), each part at its first '=' (missing value =
//     empty), names and values percent-decoded ('+' is a literal plus, a malformed escape is an
//     error) and re-encoded with only unreserved characters left as they are, sorted by name
//     then value (bytewise).
//   - Headers: names lowercased, values trimmed and inner runs of spaces/tabs collapsed to one
//     space, repeated names joined with ',' in the order received, sorted by name. Every header
//     is signed except Authorization, the ones the signer sets (it ignores client copies),
//     and `unsigned_headers` (botocore's defaults: expect, user-agent, x-amzn-trace-id, which
//     proxies and SDKs may change). Host is required.
//   - Payload: "UNSIGNED-PAYLOAD" or the hex SHA-256 of the whole (buffered) body.
// A Date header is signed as sent (botocore would rewrite it; the agent never does).
//
// Secrets: the "AWS4"+secret buffer, every derived key and the canonical request (it may carry
// the session token) are wiped with OPENSSL_cleanse. Nothing here logs.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "common/secret_bytes.h"
#include "dataplane/http/syntax.h"

namespace sigil::dataplane::inject {

using http::HeaderField;

struct AwsCredentials {
  std::string access_key_id;
  SecretBytes secret_access_key;
  SecretBytes session_token;  // empty: long-term credentials
};

enum class UriMode {
  kNormalizeAndEncode,  // every service except S3
  kS3,                  // the path as sent
};

// kS3 for "s3" (and S3 variants such as "s3-object-lambda", "s3-outposts"), otherwise
// kNormalizeAndEncode.
UriMode DefaultUriMode(std::string_view service);

struct SigV4Request {
  std::string_view method;
  std::string_view path;             // as on the wire, before any '?'; "" means "/"
  std::string_view query;            // as on the wire, after the '?' (without it); may be empty
  std::vector<HeaderField> headers;  // as the upstream will receive them; must include Host
  // The whole body for a signed payload; nullopt for UNSIGNED-PAYLOAD.
  std::optional<std::string_view> body;
};

struct SigV4Params {
  std::string region;   // "eu-west-1"
  std::string service;  // "s3", "sts", "execute-api", ...
  TimePoint time;       // signing time (second precision, UTC)
  UriMode uri_mode = UriMode::kNormalizeAndEncode;
  // Adds X-Amz-Content-SHA256 even when not required (it always is for kS3 and for an
  // unsigned payload).
  bool content_sha256_header = false;
  std::vector<std::string> unsigned_headers = {"expect", "user-agent", "x-amzn-trace-id"};
};

struct SigV4Result {
  // Fields the caller must remove from the request (any case) before adding `set`.
  static constexpr std::string_view kReplaced[] = {"authorization", "x-amz-date",
                                                   "x-amz-security-token", "x-amz-content-sha256"};
  // X-Amz-Date, [X-Amz-Security-Token], [X-Amz-Content-SHA256], Authorization, in this order.
  std::vector<HeaderField> set;
  std::string signed_headers;  // "host;x-amz-date"
};

Result<SigV4Result> SignV4(const SigV4Request& request, const AwsCredentials& credentials,
                           const SigV4Params& params);

// The pieces, exposed for tests.
std::string AmzDate(TimePoint time);                             // 20150830T123600Z
std::string UriEncode(std::string_view bytes, bool keep_slash);  // unreserved kept, %XX upper
std::string CanonicalUri(std::string_view path, UriMode mode);
Result<std::string> CanonicalQuery(std::string_view query);
std::string CanonicalHeaderValue(std::string_view value);  // trimmed, runs collapsed
// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
Result<SecretBytes> DeriveSigningKey(const SecretBytes& secret, std::string_view date,
                                     std::string_view region, std::string_view service);
// Everything SignV4 computes, for tests and debugging. canonical_request may contain the
// session token: never log it.
struct SigV4Debug {
  std::string canonical_request;
  std::string string_to_sign;
};
Result<SigV4Result> SignV4ForTest(const SigV4Request& request, const AwsCredentials& credentials,
                                  const SigV4Params& params, SigV4Debug* debug);

}  // namespace sigil::dataplane::inject
