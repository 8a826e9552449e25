// An HTTP/1.1 request head as the rewriter sees it, and the checks that decide how the request
// is framed (RFC 9112 sections 3 and 6, RFC 9110 sections 7.2, 8.6, 10.1.1, 7.6.1, 7.8).
//
// AnalyzeRequest refuses, with InvalidArgument (answered 400):
//   - a method that is not a token; a request-target with a control character, space, '#' or
//     a byte >= 0x80, or whose form does not suit the method ('*' only for OPTIONS,
//     authority-form exactly for CONNECT);
//   - HTTP/1.1 without exactly one Host field, HTTP/1.0 with more than one, a Host value with
//     characters no authority has;
//   - Content-Length together with Transfer-Encoding; Content-Length values that are not
//     digits or that differ from each other (equal repeats are accepted and forwarded as one
//     field); Transfer-Encoding whose final coding is not chunked, or which names chunked
//     twice, or which has coding parameters; Transfer-Encoding in an HTTP/1.0 request;
//   - a body on CONNECT.
// Versions other than HTTP/1.0 and HTTP/1.1 get Unimplemented (answered 505).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "dataplane/http/body_reader.h"
#include "dataplane/http/head_reader.h"
#include "dataplane/http/syntax.h"

namespace sigil::dataplane::http {

struct RequestHead {
  std::string method;                // case-sensitive token, as received
  std::string target;                // request-target, as received
  int minor_version = 1;             // HTTP/1.<minor_version>: 0 or 1
  std::vector<HeaderField> headers;  // in the order received

  // First field named `name` (case-insensitive), or null.
  const HeaderField* Find(std::string_view name) const;
  size_t Count(std::string_view name) const;
  // Removes every field named `name`; how many were removed.
  size_t Remove(std::string_view name);
  void Add(std::string name, std::string value);
  // "METHOD target HTTP/1.x\r\n" + "Name: value\r\n"... + "\r\n"
  std::string Serialize() const;
};

enum class TargetForm { kOrigin, kAbsolute, kAuthority, kAsterisk };

// What the head means for the stream, derived by AnalyzeRequest.
struct RequestInfo {
  TargetForm form = TargetForm::kOrigin;
  BodyFraming body;
  bool keep_alive = true;        // the connection stays open after this request
  bool expect_continue = false;  // HTTP/1.1 with Expect: 100-continue
  bool upgrade = false;          // HTTP/1.1, Connection: upgrade and an Upgrade field
  bool connect = false;          // CONNECT method
};

// "GET /x HTTP/1.1": method, target and version; headers left empty.
Result<RequestHead> ParseRequestLine(std::string_view line);

// Validates the whole head (also what a callback changed) and derives its framing.
Result<RequestInfo> AnalyzeRequest(const RequestHead& head, const HeadLimits& limits);

// Replaces equal repeated Content-Length values ("Content-Length: 5" twice, or "5, 5") by one
// field at the position of the first, so the upstream sees a single unambiguous length. Call
// only after AnalyzeRequest accepted the head.
void CollapseContentLength(RequestHead& head, const RequestInfo& info);

}  // namespace sigil::dataplane::http
