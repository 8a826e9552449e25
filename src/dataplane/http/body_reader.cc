#include "dataplane/http/body_reader.h"

#include <algorithm>

namespace sigil::dataplane::http {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// quoted-string at the start of `s` (RFC 9110 section 5.6.4); its length, 0 when malformed.
size_t QuotedStringLength(std::string_view s) {
  if (s.empty() || s[0] != '"') return 0;
  for (size_t i = 1; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') return i + 1;
    if (c == '\\') {
      if (++i == s.size()) return 0;
      const auto q = static_cast<unsigned char>(s[i]);
      if (q != '\t' && (q < 0x20 || q == 0x7f)) return 0;
      continue;
    }
    if (c != '\t' && (c < 0x20 || c == 0x7f)) return 0;
  }
  return 0;
}

size_t TokenLength(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && IsTchar(static_cast<unsigned char>(s[n]))) ++n;
  return n;
}

}  // namespace

Result<uint64_t> ParseChunkLine(std::string_view line) {
  size_t digits = 0;
  uint64_t size = 0;
  while (digits < line.size() && HexValue(line[digits]) >= 0) {
    if (digits == 16) return InvalidArgument("chunk size longer than 16 hex digits");
    size = (size << 4) | static_cast<uint64_t>(HexValue(line[digits]));
    ++digits;
  }
  if (digits == 0) return InvalidArgument("chunk-size line does not start with a hex digit");
  std::string_view ext = line.substr(digits);
  while (!ext.empty()) {
    if (ext[0] != ';') return InvalidArgument("unexpected character after chunk size");
    ext.remove_prefix(1);
    const size_t name = TokenLength(ext);
    if (name == 0) return InvalidArgument("chunk extension without a token name");
    ext.remove_prefix(name);
    if (ext.empty() || ext[0] != '=') continue;
    ext.remove_prefix(1);
    size_t value = ext.empty() || ext[0] != '"' ? TokenLength(ext) : QuotedStringLength(ext);
    if (value == 0) return InvalidArgument("malformed chunk extension value");
    ext.remove_prefix(value);
  }
  return size;
}

BodyReader::BodyReader(BodyFraming framing, ChunkLimits limits)
    : framing_(framing),
      limits_(limits),
      trailers_(HeadReader::Kind::kTrailerSection, limits.trailers) {
  switch (framing.kind) {
    case BodyKind::kNone:
      state_ = State::kDone;
      break;
    case BodyKind::kLength:
      remaining_ = framing.length;
      state_ = remaining_ == 0 ? State::kDone : State::kData;
      break;
    case BodyKind::kChunked:
      state_ = State::kSizeLine;
      break;
    case BodyKind::kUntilClose:
      state_ = State::kData;
      break;
  }
}

Result<size_t> BodyReader::ConsumeSizeLine(std::string_view in, std::string* out) {
  const size_t budget = limits_.max_chunk_line - line_.size();
  if (budget == 0) return InvalidArgument("chunk-size line too long");
  const std::string_view rest = in.substr(0, std::min(in.size(), budget));
  const size_t lf = rest.find('\n');
  if (lf == std::string_view::npos) {
    line_.append(rest);
    return rest.size();
  }
  line_.append(rest.substr(0, lf + 1));
  std::string_view line(line_);
  line.remove_suffix(1);  // LF
  if (line.empty() || line.back() != '\r') return InvalidArgument("bare LF after chunk size");
  line.remove_suffix(1);
  SIGIL_ASSIGN_OR_RETURN(uint64_t size, ParseChunkLine(line));
  if (out != nullptr) out->append(line_);
  line_.clear();
  remaining_ = size;
  state_ = size == 0 ? State::kTrailers : State::kChunkData;
  return lf + 1;
}

Result<size_t> BodyReader::Take(std::string_view in, std::string* out, size_t max_data,
                                bool data_only) {
  std::string* framing_out = data_only ? nullptr : out;
  size_t used = 0;
  while (state_ != State::kDone && used < in.size()) {
    const std::string_view rest = in.substr(used);
    switch (state_) {
      case State::kData:
      case State::kChunkData: {
        uint64_t take = std::min<uint64_t>(rest.size(), max_data);
        if (framing_.kind != BodyKind::kUntilClose) take = std::min(take, remaining_);
        if (take == 0) return used;  // out of output budget
        if (out != nullptr) out->append(rest.substr(0, take));
        used += take;
        max_data -= take;
        if (framing_.kind == BodyKind::kUntilClose) break;
        remaining_ -= take;
        if (remaining_ == 0) {
          state_ = framing_.kind == BodyKind::kLength ? State::kDone : State::kChunkCr;
        }
        break;
      }
      case State::kSizeLine: {
        SIGIL_ASSIGN_OR_RETURN(size_t n, ConsumeSizeLine(rest, framing_out));
        used += n;
        break;
      }
      case State::kChunkCr:
      case State::kChunkLf: {
        const char want = state_ == State::kChunkCr ? '\r' : '\n';
        if (rest[0] != want) return InvalidArgument("chunk data not followed by CRLF");
        if (framing_out != nullptr) framing_out->push_back(want);
        ++used;
        state_ = state_ == State::kChunkCr ? State::kChunkLf : State::kSizeLine;
        break;
      }
      case State::kTrailers: {
        SIGIL_ASSIGN_OR_RETURN(size_t n, trailers_.Consume(rest));
        used += n;
        if (trailers_.complete()) {
          had_trailer_fields_ = !trailers_.fields().empty();
          if (framing_out != nullptr) framing_out->append(trailers_.raw());
          trailers_.Reset();
          state_ = State::kDone;
        }
        break;
      }
      case State::kDone:
        break;
    }
  }
  return used;
}

}  // namespace sigil::dataplane::http
