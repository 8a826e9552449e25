#include "dataplane/http/response_framer.h"

#include <limits>

#include "dataplane/http/syntax.h"

namespace sigil::dataplane::http {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// "HTTP/1.1 200 OK" (the reason phrase may be empty, and its SP missing).
Result<int> ParseStatusLine(std::string_view line) {
  if (line.size() < 12 || !(line.starts_with("HTTP/1.1 ") || line.starts_with("HTTP/1.0 "))) {
    return InvalidArgument("malformed status line");
  }
  const std::string_view code = line.substr(9, 3);
  if (!IsDigit(code[0]) || !IsDigit(code[1]) || !IsDigit(code[2]) || code[0] == '0') {
    return InvalidArgument("malformed status code");
  }
  if (line.size() > 12 && line[12] != ' ') return InvalidArgument("malformed status line");
  for (char c : line.substr(12)) {
    const auto u = static_cast<unsigned char>(c);
    if (u != '\t' && (u < 0x20 || u == 0x7f)) return InvalidArgument("control character in reason");
  }
  return (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
}

Result<BodyFraming> ResponseBodyFraming(const std::vector<HeaderField>& fields) {
  bool have_te = false, chunked_last = false;
  bool have_length = false;
  uint64_t length = 0;
  for (const HeaderField& f : fields) {
    if (EqualsIgnoreCase(f.name, "transfer-encoding")) {
      have_te = true;
      const auto codings = SplitList(f.value);
      // Only the last field's last coding decides (codings apply in order).
      chunked_last = !codings.empty() && EqualsIgnoreCase(codings.back(), "chunked");
    } else if (EqualsIgnoreCase(f.name, "content-length")) {
      for (std::string_view e : SplitList(f.value)) {
        uint64_t v = 0;
        if (e.empty() || e.size() > 18) return InvalidArgument("invalid Content-Length");
        for (char c : e) {
          if (!IsDigit(c)) return InvalidArgument("invalid Content-Length");
          v = v * 10 + static_cast<uint64_t>(c - '0');
        }
        if (have_length && v != length) return InvalidArgument("conflicting Content-Length values");
        have_length = true;
        length = v;
      }
    }
  }
  if (have_te) return BodyFraming{chunked_last ? BodyKind::kChunked : BodyKind::kUntilClose, 0};
  if (have_length) return BodyFraming{BodyKind::kLength, length};
  return BodyFraming{BodyKind::kUntilClose, 0};
}

}  // namespace

ResponseFramer::ResponseFramer(ResponseLimits limits)
    : limits_(limits),
      head_(HeadReader::Kind::kMessageHead, limits.head, [](std::string_view line) -> Result<void> {
        SIGIL_TRY(ParseStatusLine(line));
        return Ok();
      }) {}

Result<void> ResponseFramer::ExpectResponse(std::string_view method) {
  if (expected_.size() >= limits_.max_outstanding) {
    return ResourceExhausted("too many requests waiting for a response");
  }
  expected_.push_back(method == "HEAD"      ? Pending::kHead
                      : method == "CONNECT" ? Pending::kConnect
                                            : Pending::kPlain);
  return Ok();
}

Result<void> ResponseFramer::Feed(std::string_view in) {
  while (!in.empty() && !switched_) {
    if (body_.has_value()) {
      SIGIL_ASSIGN_OR_RETURN(size_t n,
                             body_->Consume(in, nullptr, std::numeric_limits<size_t>::max()));
      in.remove_prefix(n);
      if (body_->done()) {
        body_.reset();
        expected_.pop_front();
        ++completed_;
      }
      continue;
    }
    if (expected_.empty()) return InvalidArgument("response without a request");
    SIGIL_ASSIGN_OR_RETURN(size_t n, head_.Consume(in));
    in.remove_prefix(n);
    if (head_.complete()) SIGIL_TRY(OnHead());
  }
  return Ok();
}

Result<void> ResponseFramer::OnHead() {
  SIGIL_ASSIGN_OR_RETURN(int status, ParseStatusLine(head_.start_line()));
  last_status_ = status;
  const Pending request = expected_.front();
  const std::vector<HeaderField> fields = std::move(head_.mutable_fields());
  head_.Reset();
  if (status == 101 || (request == Pending::kConnect && status / 100 == 2)) {
    switched_ = true;  // everything after this head belongs to the new protocol
    expected_.pop_front();
    ++completed_;
    return Ok();
  }
  if (status / 100 == 1) return Ok();  // interim: the final response is still to come
  BodyFraming framing;
  if (request != Pending::kHead && status != 204 && status != 304) {
    SIGIL_ASSIGN_OR_RETURN(framing, ResponseBodyFraming(fields));
  }
  body_.emplace(framing, limits_.chunks);
  if (body_->done()) {
    body_.reset();
    expected_.pop_front();
    ++completed_;
  }
  return Ok();
}

}  // namespace sigil::dataplane::http
