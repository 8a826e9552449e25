// HeadReader: incremental, bounded reader of an HTTP/1.1 message head (start line and field
// lines up to the blank line) or of a chunked body's trailer section (field lines only).
//
// Strictness (RFC 9112 section 2.2 allows the lenient alternatives; we refuse them because the
// bytes are parsed again by an upstream server and any disagreement is a smuggling vector):
// every line ends in CRLF (a bare LF or a CR not followed by LF is an error), obsolete line
// folding is an error, whitespace before a field's colon is an error. Empty lines (CRLF) before
// a request line are skipped (RFC 9112 section 2.2 asks servers to do so; some clients send an
// extra CRLF after a body); they count towards the byte limit.
//
// The result never depends on how the input is split: bytes are processed in order, a line is
// judged when its LF arrives, and the size limit is judged at the first byte past it.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "dataplane/http/syntax.h"

namespace sigil::dataplane::http {

struct HeadLimits {
  size_t max_bytes = size_t{16} * 1024;  // the whole head: start line, field lines, CRLFs
  size_t max_fields = 100;               // field lines (a repeated name counts each time)
};

class HeadReader {
 public:
  enum class Kind { kMessageHead, kTrailerSection };

  // Checks a start line as soon as it is complete (so a garbage first line is refused before
  // later lines are looked at, whatever the split).
  using StartLineCheck = std::function<Result<void>(std::string_view line)>;

  HeadReader(Kind kind, HeadLimits limits, StartLineCheck check = nullptr)
      : kind_(kind), limits_(limits), check_(std::move(check)) {}

  // Consumes bytes of `in` up to and including the blank line that ends the head; returns how
  // many. InvalidArgument for malformed lines, ResourceExhausted when a limit is exceeded.
  // Must not be called again after an error or once complete() (until Reset()).
  Result<size_t> Consume(std::string_view in);

  bool complete() const { return complete_; }
  // kMessageHead only: the start line without CRLF.
  const std::string& start_line() const { return start_line_; }
  const std::vector<HeaderField>& fields() const { return fields_; }
  std::vector<HeaderField>& mutable_fields() { return fields_; }
  // kTrailerSection only: the section's bytes as received (forwarded verbatim once valid).
  const std::string& raw() const { return raw_; }
  // Bytes consumed so far for this head (leading empty lines included).
  size_t bytes() const { return bytes_; }

  void Reset();

 private:
  Result<void> TakeLine(std::string_view line);

  const Kind kind_;
  const HeadLimits limits_;
  const StartLineCheck check_;
  std::string line_;  // the current line so far (without the LF)
  std::string start_line_;
  std::vector<HeaderField> fields_;
  std::string raw_;
  size_t bytes_ = 0;
  bool have_start_line_ = false;
  bool complete_ = false;
};

}  // namespace sigil::dataplane::http
