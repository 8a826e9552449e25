#include "dataplane/http/request_stream_rewriter.h"

#include <algorithm>
#include <cstdint>

#include "dataplane/http/error_response.h"

namespace sigil::dataplane::http {

RequestStreamRewriter::RequestStreamRewriter(HeadCallback on_head, RewriterLimits limits)
    : on_head_(std::move(on_head)),
      limits_(limits),
      head_(HeadReader::Kind::kMessageHead, limits.head, [](std::string_view line) -> Result<void> {
        SIGIL_TRY(ParseRequestLine(line));
        return Ok();
      }) {}

size_t RequestStreamRewriter::Room() const {
  const size_t pending = out_.size() - out_pos_;
  return pending < limits_.max_output ? limits_.max_output - pending : 0;
}

void RequestStreamRewriter::Drain(size_t n) {
  out_pos_ += std::min(n, out_.size() - out_pos_);
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
  } else if (out_pos_ >= 4096 && out_pos_ * 2 >= out_.size()) {
    out_.erase(0, out_pos_);  // keep the buffer from growing by its drained prefix
    out_pos_ = 0;
  }
}

size_t RequestStreamRewriter::Feed(std::string_view in) {
  size_t used = 0;
  while (used < in.size()) {
    const std::string_view rest = in.substr(used);
    switch (state_) {
      case State::kRejected:
      case State::kPaused:
        return used;
      case State::kClosed:
        dropped_ += rest.size();
        return in.size();
      case State::kOpaque: {
        const size_t take = std::min(rest.size(), Room());
        if (take == 0) return used;
        out_.append(rest.substr(0, take));
        used += take;
        break;
      }
      case State::kHttp: {
        if (Room() == 0) return used;
        if (in_body_ && buffering_) {
          // One byte past the limit is how a chunked body that is too large shows itself.
          const size_t room = limits_.max_buffered_body - body_buf_.size() + 1;
          auto n = body_->ConsumeData(rest, &body_buf_, room);
          if (!n.ok()) {
            Reject(StatusForError(n.error()), n.error().message());
            return used;
          }
          used += *n;
          if (body_buf_.size() > limits_.max_buffered_body) {
            Reject(413, "request body larger than " + std::to_string(limits_.max_buffered_body) +
                            " bytes, the most the agent buffers");
            return used;
          }
          if (body_->done()) {
            OnBufferedBody();
          } else if (*n == 0) {
            return used;
          }
          break;
        }
        if (in_body_) {
          auto n = body_->Consume(rest, &out_, Room());
          if (!n.ok()) {
            Reject(StatusForError(n.error()), n.error().message());
            return used;
          }
          used += *n;
          if (body_->done()) {
            EndRequest();
          } else if (*n == 0) {
            return used;
          }
          break;
        }
        auto n = head_.Consume(rest);
        if (!n.ok()) {
          Reject(StatusForError(n.error()), n.error().message());
          return used;
        }
        used += *n;
        if (head_.complete()) OnHeadComplete();
        break;
      }
    }
  }
  return used;
}

void RequestStreamRewriter::OnHeadComplete() {
  auto parsed = ParseRequestLine(head_.start_line());
  if (!parsed.ok()) return Reject(StatusForError(parsed.error()), parsed.error().message());
  RequestHead head = std::move(parsed).value();
  head.headers = std::move(head_.mutable_fields());
  auto info = AnalyzeRequest(head, limits_.head);
  if (!info.ok()) return Reject(StatusForError(info.error()), info.error().message());
  CollapseContentLength(head, *info);

  HeadVerdict verdict = on_head_ ? on_head_(head, *info) : HeadVerdict::Forward();
  if (verdict.action == HeadVerdict::Action::kReject) {
    return Reject(verdict.status, std::move(verdict.reason));
  }
  // The callback's edits are checked like client input: an injected value with CR/LF or a
  // change of framing must never reach the upstream. The field count limit is for the client;
  // what the callback adds is bounded by the callback.
  auto edited = AnalyzeRequest(head, HeadLimits{limits_.head.max_bytes, SIZE_MAX});
  if (!edited.ok()) return Reject(500, "request head invalid after rewriting");
  if (!(edited->body == info->body)) return Reject(500, "rewriting changed the body framing");

  if (verdict.action == HeadVerdict::Action::kBufferBody) {
    if (!on_body_) return Reject(500, "no body callback for a buffered request");
    if (edited->body.kind == BodyKind::kLength && edited->body.length > limits_.max_buffered_body) {
      return Reject(413, "request body of " + std::to_string(edited->body.length) +
                             " bytes is larger than " + std::to_string(limits_.max_buffered_body) +
                             " bytes, the most the agent buffers");
    }
    held_head_ = std::move(head);
    held_info_ = *edited;
    current_ = *edited;
    buffering_ = true;
    continue_wanted_ = edited->expect_continue && edited->body.kind != BodyKind::kNone &&
                       !(edited->body.kind == BodyKind::kLength && edited->body.length == 0);
    body_buf_.clear();
    body_.emplace(current_.body, limits_.chunks);
    in_body_ = true;
    if (body_->done()) OnBufferedBody();
    return;
  }

  out_.append(head.Serialize());
  ++requests_forwarded_;
  if (on_forwarded_) on_forwarded_(head, *edited);
  current_ = *edited;
  opaque_after_ = verdict.action == HeadVerdict::Action::kOpaque;
  body_.emplace(current_.body, limits_.chunks);
  in_body_ = true;
  if (body_->done()) EndRequest();
}

void RequestStreamRewriter::OnBufferedBody() {
  const bool trailers = body_->had_trailer_fields();
  buffering_ = false;
  continue_wanted_ = false;
  in_body_ = false;  // nothing of this request was forwarded: a rejection taints nothing
  RequestHead head = std::move(held_head_);
  held_head_ = RequestHead();
  auto release = [this] { std::string().swap(body_buf_); };
  if (trailers) {
    release();
    return Reject(501, "trailer fields in a request whose body the agent buffers");
  }
  // The body goes out whole: re-framed with Content-Length, and nothing left to wait for.
  if (held_info_.body.kind == BodyKind::kChunked) {
    head.Remove("transfer-encoding");
    head.Add("Content-Length", std::to_string(body_buf_.size()));
  }
  if (held_info_.expect_continue) head.Remove("expect");
  auto info = AnalyzeRequest(head, HeadLimits{limits_.head.max_bytes, SIZE_MAX});
  if (!info.ok()) {
    release();
    return Reject(500, "request head invalid after buffering the body");
  }
  HeadVerdict verdict = on_body_(head, *info, body_buf_);
  if (verdict.action == HeadVerdict::Action::kReject) {
    release();
    return Reject(verdict.status, std::move(verdict.reason));
  }
  auto edited = AnalyzeRequest(head, HeadLimits{limits_.head.max_bytes, SIZE_MAX});
  if (verdict.action == HeadVerdict::Action::kBufferBody || !edited.ok() ||
      !(edited->body == info->body)) {
    release();
    return Reject(500, "request head invalid after rewriting");
  }
  out_.append(head.Serialize());
  out_.append(body_buf_);
  release();
  ++requests_forwarded_;
  if (on_forwarded_) on_forwarded_(head, *edited);
  current_ = *edited;
  opaque_after_ = verdict.action == HeadVerdict::Action::kOpaque;
  EndRequest();
}

void RequestStreamRewriter::EndRequest() {
  in_body_ = false;
  body_.reset();
  head_.Reset();
  if (opaque_after_) {
    state_ = State::kOpaque;
  } else if (current_.upgrade || current_.connect) {
    state_ = State::kPaused;
  } else if (!current_.keep_alive) {
    state_ = State::kClosed;
  }
}

void RequestStreamRewriter::Resume(bool switched) {
  if (state_ != State::kPaused) return;
  if (switched) {
    state_ = State::kOpaque;
  } else {
    state_ = current_.keep_alive ? State::kHttp : State::kClosed;
  }
}

void RequestStreamRewriter::Reject(int status, std::string reason) {
  if (status < 400 || status > 599) status = 500;
  state_ = State::kRejected;
  tainted_ = in_body_ && !buffering_;  // a buffered request has sent nothing yet
  buffering_ = false;
  continue_wanted_ = false;
  std::string().swap(body_buf_);
  error_status_ = status;
  error_reason_ = std::move(reason);
  error_response_ = BuildErrorResponse(status, error_reason_);
}

}  // namespace sigil::dataplane::http
