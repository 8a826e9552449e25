#include "dataplane/proxy/xfcc_filter.h"

namespace sigil::dataplane {

namespace {
constexpr std::string_view kXfcc = "x-forwarded-client-cert";
}

std::string XfccValue(const std::string& by, const std::string& leaf_sha256_hex,
                      const std::string& uri) {
  std::string v = "By=" + by;
  if (!leaf_sha256_hex.empty()) v += ";Hash=" + leaf_sha256_hex;
  return v + ";URI=" + uri;
}

XfccFilter::XfccFilter(std::string value)
    : value_(std::move(value)),
      rewriter_([this](http::RequestHead& head, const http::RequestInfo&) {
        head.Remove(kXfcc);
        head.Add(std::string(kXfcc), value_);
        return http::HeadVerdict::Forward();
      }) {
  rewriter_.set_on_forwarded([this](const http::RequestHead& head, const http::RequestInfo&) {
    if (framer_failed_) return;
    if (!framer_.ExpectResponse(head.method).ok()) framer_failed_ = true;
  });
}

size_t XfccFilter::ToLocal(std::string_view in, mux::ByteQueue& out) {
  if (!failure_.empty()) return 0;
  using State = http::RequestStreamRewriter::State;
  size_t taken = rewriter_.Feed(in);
  if (rewriter_.state() == State::kPaused && !framer_failed_ && framer_.outstanding() == 0) {
    // The answer to the upgrade came before the request's body was through.
    rewriter_.Resume(framer_.switched());
    taken += rewriter_.Feed(in.substr(taken));
  }
  std::string_view ready = rewriter_.output();
  out.Append(ready);
  rewriter_.Drain(ready.size());
  if (rewriter_.state() == State::kRejected) {
    failure_ = "request " + std::to_string(rewriter_.requests_forwarded() + 1) + ": " +
               std::to_string(rewriter_.error_status()) + " " + rewriter_.error_reason();
  } else if (rewriter_.state() == State::kPaused && framer_failed_) {
    failure_ = "cannot follow the application's responses to decide an upgrade";
  }
  return taken;
}

bool XfccFilter::FromLocal(std::string_view bytes) {
  if (framer_failed_ || framer_.switched()) return false;
  if (!framer_.Feed(bytes).ok()) {
    framer_failed_ = true;
    // Nothing to decide unless an upgrade waits; otherwise HTTP parsing of requests goes on.
    return rewriter_.state() == http::RequestStreamRewriter::State::kPaused;
  }
  if (rewriter_.state() == http::RequestStreamRewriter::State::kPaused &&
      framer_.outstanding() == 0) {
    rewriter_.Resume(framer_.switched());
    return true;
  }
  return false;
}

}  // namespace sigil::dataplane
