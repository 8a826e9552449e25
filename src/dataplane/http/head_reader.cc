#include "dataplane/http/head_reader.h"

#include <algorithm>

namespace sigil::dataplane::http {

void HeadReader::Reset() {
  line_.clear();
  start_line_.clear();
  fields_.clear();
  raw_.clear();
  bytes_ = 0;
  have_start_line_ = false;
  complete_ = false;
}

Result<size_t> HeadReader::Consume(std::string_view in) {
  size_t used = 0;
  while (!complete_ && used < in.size()) {
    const size_t budget = limits_.max_bytes - bytes_;
    if (budget == 0) {
      return ResourceExhausted(kind_ == Kind::kTrailerSection ? "trailer section too large"
                                                              : "head too large");
    }
    const std::string_view rest = in.substr(used, std::min(in.size() - used, budget));
    const size_t lf = rest.find('\n');
    const size_t take = lf == std::string_view::npos ? rest.size() : lf + 1;
    if (kind_ == Kind::kTrailerSection) raw_.append(rest.substr(0, take));
    bytes_ += take;
    used += take;
    if (lf == std::string_view::npos) {
      line_.append(rest);
      continue;  // the budget check at the top reports an overflow on the next byte
    }
    line_.append(rest.substr(0, lf));
    std::string line = std::move(line_);
    line_.clear();
    SIGIL_TRY(TakeLine(line));
  }
  return used;
}

Result<void> HeadReader::TakeLine(std::string_view line) {
  if (line.empty() || line.back() != '\r') return InvalidArgument("bare LF line ending");
  line.remove_suffix(1);
  if (line.find('\r') != std::string_view::npos) return InvalidArgument("bare CR in line");
  if (kind_ == Kind::kMessageHead && !have_start_line_) {
    if (line.empty()) return Ok();  // empty line before the start line: skipped
    if (check_) SIGIL_TRY(check_(line));
    start_line_ = std::string(line);
    have_start_line_ = true;
    return Ok();
  }
  if (line.empty()) {
    complete_ = true;
    return Ok();
  }
  if (fields_.size() >= limits_.max_fields) {
    return ResourceExhausted(kind_ == Kind::kTrailerSection ? "too many trailer fields"
                                                            : "too many header fields");
  }
  SIGIL_ASSIGN_OR_RETURN(HeaderField field, ParseFieldLine(line));
  fields_.push_back(std::move(field));
  return Ok();
}

}  // namespace sigil::dataplane::http
