// sigil/2 frames arrive from any peer that completed a TLS handshake with a valid SVID: parse
// arbitrary bytes as a stream of frames and check the parser's promises (length within the
// input, payload inside the frame, re-encoding of decoded control frames is identical).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "dataplane/protocol/mux_frame.h"

using namespace sigil::dataplane;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (int i = 0; i < 1000 && !in.empty(); ++i) {
    mux::Frame f;
    auto n = mux::ParseFrame(in, &f);
    if (!n.ok() || *n == 0) break;
    if (*n > in.size() || *n < mux::kHeaderBytes) std::abort();
    if (f.payload.size() != *n - mux::kHeaderBytes) std::abort();
    if (f.stream == 0) std::abort();
    std::string again;
    switch (f.type) {
      case mux::FrameType::kWindow:
        again = mux::EncodeWindow(f.stream, f.window_increment);
        break;
      case mux::FrameType::kReply:
        again = mux::EncodeReply(f.stream, f.reply_code, f.reply_reason);
        break;
      case mux::FrameType::kFin:
      case mux::FrameType::kRst:
        again = mux::EncodeEmpty(f.type, f.stream);
        break;
      default:
        again = std::string(in.substr(0, *n));
        break;
    }
    if (f.type != mux::FrameType::kOpen && again != in.substr(0, *n)) std::abort();
    in.remove_prefix(*n);
  }
  return 0;
}
