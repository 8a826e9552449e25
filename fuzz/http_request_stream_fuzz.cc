// Fuzzes the HTTP/1.1 request-stream rewriter (hostile bytes from any managed workload talking
// to an `inject` or `xfcc` service) and the response framer. Invariants checked on every input:
//   - the result never depends on how the bytes are split: whole, in pseudo-random pieces
//     (seeded from the input) and byte by byte give the same output, heads and error response;
//   - buffering stays bounded: undrained output never exceeds max_output plus one head (plus
//     one buffered body for requests held with BufferBody(), whose bodies stay below the
//     limit or are refused);
//   - the output is valid HTTP by our own rules: re-parsing it with a pass-through callback
//     forwards the same requests and reproduces it byte for byte (normalisation is idempotent),
//     and the rejected request's head never appears in it;
//   - the same holds for the response framer's counters.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/http/request_stream_rewriter.h"
#include "dataplane/http/response_framer.h"

namespace {

using sigil::dataplane::http::HeadVerdict;
using sigil::dataplane::http::RequestHead;
using sigil::dataplane::http::RequestInfo;
using sigil::dataplane::http::RequestStreamRewriter;
using sigil::dataplane::http::ResponseFramer;
using sigil::dataplane::http::RewriterLimits;

constexpr size_t kMaxOutput = 512;
constexpr size_t kMaxBufferedBody = 300;

// The re-parse pass allows what injection and serialisation add: one field, and a space after
// each colon.
RewriterLimits Limits(bool reparse) {
  RewriterLimits limits;
  limits.head.max_bytes = reparse ? 2048 : 1024;
  limits.head.max_fields = reparse ? 17 : 16;
  limits.chunks.max_chunk_line = 64;
  limits.chunks.trailers.max_bytes = 256;
  limits.chunks.trailers.max_fields = 4;
  limits.max_output = kMaxOutput;
  limits.max_buffered_body = kMaxBufferedBody;
  return limits;
}

struct Outcome {
  std::string output;
  std::string heads;
  int state = 0;
  std::string error;
  bool tainted = false;
  uint64_t forwarded = 0;
  bool operator==(const Outcome&) const = default;
};

// Rejects targets containing "deny", switches to opaque after a body-less request whose target
// contains "opaque", holds requests whose target contains "sign" until their body is in; with
// `inject` also replaces the Authorization field, or (held requests) adds one naming the body's
// size (the re-parse pass runs without either).
Outcome Run(std::string_view in, const std::vector<size_t>& pieces, bool inject) {
  Outcome o;
  RequestStreamRewriter rw(
      [&](RequestHead& head, const RequestInfo& info) {
        o.heads += head.Serialize();
        if (head.target.find("deny") != std::string::npos) return HeadVerdict::Reject(403, "deny");
        if (head.target.find("sign") != std::string::npos) return HeadVerdict::BufferBody();
        if (inject) {
          head.Remove("authorization");
          head.Add("Authorization", "Bearer fuzz");
        }
        if (info.body.kind == sigil::dataplane::http::BodyKind::kNone &&
            head.target.find("opaque") != std::string::npos) {
          return HeadVerdict::Opaque();
        }
        return HeadVerdict::Forward();
      },
      Limits(!inject));
  rw.set_on_body([&](RequestHead& head, const RequestInfo&, std::string_view body) {
    o.heads += "[body " + std::to_string(body.size()) + "]";
    if (inject) head.Add("X-Signed", std::to_string(body.size()));
    return HeadVerdict::Forward();
  });
  const size_t max_serialized_head = 1024 + 16 * 4 + 64;
  std::string carry;
  size_t pos = 0, piece = 0;
  while (pos < in.size() || !carry.empty()) {
    size_t n = pieces.empty() ? in.size() - pos : pieces[piece++ % pieces.size()];
    n = std::min(n, in.size() - pos);
    carry.append(in.substr(pos, n));
    pos += n;
    const size_t taken = rw.Feed(carry);
    carry.erase(0, taken);
    if (rw.output().size() > kMaxOutput + max_serialized_head + kMaxBufferedBody) std::abort();
    o.output.append(rw.output());
    rw.Drain(rw.output().size());
    if (rw.state() == RequestStreamRewriter::State::kPaused) {
      // Deterministic answer from the "server": every other upgrade switches.
      rw.Resume(rw.requests_forwarded() % 2 == 0);
    } else if (taken == 0 && pos == in.size()) {
      break;  // rejected, or waiting for bytes that never come
    }
  }
  o.state = static_cast<int>(rw.state());
  o.error = rw.error_response();
  o.tainted = rw.upstream_tainted();
  o.forwarded = rw.requests_forwarded();
  return o;
}

struct Framed {
  uint64_t completed = 0;
  size_t outstanding = 0;
  bool switched = false;
  bool failed = false;
  bool operator==(const Framed&) const = default;
};

Framed Frame(std::string_view in, size_t step) {
  ResponseFramer framer;
  for (const char* m : {"GET", "HEAD", "PUT", "CONNECT", "GET", "GET", "HEAD", "GET"}) {
    if (!framer.ExpectResponse(m).ok()) std::abort();
  }
  Framed f;
  for (size_t pos = 0; pos < in.size() && !f.failed; pos += step) {
    f.failed = !framer.Feed(in.substr(pos, step)).ok();
  }
  f.completed = framer.completed();
  f.outstanding = framer.outstanding();
  f.switched = framer.switched();
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 8192) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const Outcome whole = Run(in, {}, true);

  uint32_t seed = 2166136261u;
  for (size_t i = 0; i < size; ++i) seed = (seed ^ data[i]) * 16777619u;
  std::vector<size_t> pieces;
  for (int i = 0; i < 16; ++i) {
    seed = seed * 1103515245u + 12345u;
    pieces.push_back(1 + (seed >> 16) % 97);
  }
  if (!(Run(in, pieces, true) == whole)) std::abort();
  if (size <= 2048 && !(Run(in, {1}, true) == whole)) std::abort();

  // The forwarded stream re-parses to itself.
  const Outcome again = Run(whole.output, {}, false);
  if (again.output != whole.output || again.forwarded != whole.forwarded) std::abort();
  if (again.state == static_cast<int>(RequestStreamRewriter::State::kRejected)) std::abort();

  const Framed framed = Frame(in, in.size() + 1);
  if (!(Frame(in, 1) == framed) || !(Frame(in, 7) == framed)) std::abort();
  return 0;
}
