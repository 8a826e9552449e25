// BodyReader: finds the end of an HTTP/1.1 message body in a byte stream without changing it.
// A chunked body is passed on as received (chunk-size lines, extensions, data, trailers), never
// re-chunked; it is only validated so the agent and the upstream agree on where the body ends.
//
// Strictness for chunked framing (RFC 9112 section 7.1): chunk-size is 1-16 hex digits; chunk
// extensions are `;name` or `;name=value` with a token name and a token or quoted-string value
// and no whitespace anywhere (the RFC's BWS is refused: servers disagree about it); every
// chunk-size line and every chunk's data is followed by exactly CRLF; trailer fields follow the
// same rules as header fields (HeadReader). Lines are forwarded only once complete and valid,
// so a malformed chunk-size line is never passed on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"
#include "dataplane/http/head_reader.h"

namespace sigil::dataplane::http {

enum class BodyKind {
  kNone,        // no body
  kLength,      // Content-Length bytes
  kChunked,     // chunked transfer coding, up to and including the trailer section
  kUntilClose,  // responses only: the body ends when the connection closes
};

struct BodyFraming {
  BodyKind kind = BodyKind::kNone;
  uint64_t length = 0;  // kLength only
  bool operator==(const BodyFraming&) const = default;
};

struct ChunkLimits {
  size_t max_chunk_line = 4096;  // one chunk-size line with its extensions and CRLF
  HeadLimits trailers;           // the trailer section (bytes and fields)
};

// Parses a chunk-size line without its CRLF; the chunk size.
Result<uint64_t> ParseChunkLine(std::string_view line);

class BodyReader {
 public:
  BodyReader(BodyFraming framing, ChunkLimits limits);

  // Consumes body bytes from the start of `in`, stopping at the end of the body, and returns
  // how many. Validated bytes are appended to *out (when not null): data bytes as they come (at
  // most `max_data` per call, which makes the caller's output buffer the bound), chunk-size
  // lines and the trailer section once each is complete. InvalidArgument for broken chunked
  // framing (an overlong chunk-size line included), ResourceExhausted for an oversized trailer
  // section.
  Result<size_t> Consume(std::string_view in, std::string* out, size_t max_data) {
    return Take(in, out, max_data, /*data_only=*/false);
  }
  // The same, but only the body's data bytes are appended (a chunked body decoded: no
  // chunk-size lines, CRLFs or trailers); the framing is validated exactly as by Consume.
  Result<size_t> ConsumeData(std::string_view in, std::string* data, size_t max_data) {
    return Take(in, data, max_data, /*data_only=*/true);
  }

  bool done() const { return state_ == State::kDone; }
  // A chunked body's trailer section held at least one field (known once done()).
  bool had_trailer_fields() const { return had_trailer_fields_; }
  const BodyFraming& framing() const { return framing_; }

 private:
  enum class State { kData, kSizeLine, kChunkData, kChunkCr, kChunkLf, kTrailers, kDone };

  Result<size_t> Take(std::string_view in, std::string* out, size_t max_data, bool data_only);
  Result<size_t> ConsumeSizeLine(std::string_view in, std::string* out);

  const BodyFraming framing_;
  const ChunkLimits limits_;
  State state_;
  uint64_t remaining_ = 0;  // data bytes left in the body (kLength) or in the chunk
  std::string line_;        // the chunk-size line so far
  HeadReader trailers_;
  bool had_trailer_fields_ = false;
};

}  // namespace sigil::dataplane::http
