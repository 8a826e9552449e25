#include "dataplane/protocol/mux_frame.h"

namespace sigil::dataplane::mux {
namespace {

uint16_t Get16(const char* p) {
  return static_cast<uint16_t>((static_cast<uint8_t>(p[0]) << 8) | static_cast<uint8_t>(p[1]));
}
uint32_t Get32(const char* p) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(p[0])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(p[3]));
}
void Put16(char* p, uint16_t v) {
  p[0] = static_cast<char>(v >> 8);
  p[1] = static_cast<char>(v & 0xff);
}
void Put32(char* p, uint32_t v) {
  p[0] = static_cast<char>(v >> 24);
  p[1] = static_cast<char>((v >> 16) & 0xff);
  p[2] = static_cast<char>((v >> 8) & 0xff);
  p[3] = static_cast<char>(v & 0xff);
}

// The largest payload each type may carry (the destination text is at most
// "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535", 54 bytes).
size_t MaxPayload(FrameType type) {
  switch (type) {
    case FrameType::kOpen:
      return 64;
    case FrameType::kReply:
      return 2 + kMaxReasonBytes;
    case FrameType::kData:
      return kMaxDataPayload;
    case FrameType::kFin:
    case FrameType::kRst:
      return 0;
    case FrameType::kWindow:
      return 4;
  }
  return 0;
}

}  // namespace

const char* FrameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kOpen:
      return "OPEN";
    case FrameType::kReply:
      return "REPLY";
    case FrameType::kData:
      return "DATA";
    case FrameType::kFin:
      return "FIN";
    case FrameType::kRst:
      return "RST";
    case FrameType::kWindow:
      return "WINDOW";
  }
  return "?";
}

Result<size_t> ParseFrame(std::string_view buffered, Frame* frame) {
  if (buffered.size() < kHeaderBytes) return size_t{0};
  const auto raw_type = static_cast<uint8_t>(buffered[0]);
  if (raw_type < 1 || raw_type > 6) {
    return InvalidArgument("sigil/2 frame: unknown type " + std::to_string(raw_type));
  }
  const auto type = static_cast<FrameType>(raw_type);
  if (buffered[1] != 0) {
    return InvalidArgument(std::string("sigil/2 ") + FrameTypeName(type) + ": flags must be 0");
  }
  const size_t length = Get16(buffered.data() + 2);
  const uint32_t stream = Get32(buffered.data() + 4);
  if (stream == 0) {
    return InvalidArgument(std::string("sigil/2 ") + FrameTypeName(type) + ": stream id 0");
  }
  if (length > MaxPayload(type)) {
    return InvalidArgument(std::string("sigil/2 ") + FrameTypeName(type) + ": length " +
                           std::to_string(length) + " exceeds " + std::to_string(MaxPayload(type)));
  }
  if (buffered.size() < kHeaderBytes + length) return size_t{0};
  Frame f;
  f.type = type;
  f.stream = stream;
  f.payload = buffered.substr(kHeaderBytes, length);
  switch (type) {
    case FrameType::kOpen: {
      auto dst = Destination::Parse(f.payload);
      if (!dst.ok()) return InvalidArgument("sigil/2 OPEN: " + dst.error().message());
      f.open_dst = *dst;
      break;
    }
    case FrameType::kReply: {
      if (length < 2) return InvalidArgument("sigil/2 REPLY: shorter than its code");
      f.reply_code = Get16(f.payload.data());
      if (f.reply_code < 100 || f.reply_code > 599) {
        return InvalidArgument("sigil/2 REPLY: code " + std::to_string(f.reply_code));
      }
      f.reply_reason = f.payload.substr(2);
      for (char c : f.reply_reason) {
        if (c < 0x20 || c > 0x7e) return InvalidArgument("sigil/2 REPLY: reason not printable");
      }
      break;
    }
    case FrameType::kData:
      if (length == 0) return InvalidArgument("sigil/2 DATA: empty");
      break;
    case FrameType::kFin:
    case FrameType::kRst:
      break;
    case FrameType::kWindow:
      if (length != 4) return InvalidArgument("sigil/2 WINDOW: payload must be 4 bytes");
      f.window_increment = Get32(f.payload.data());
      if (f.window_increment == 0) return InvalidArgument("sigil/2 WINDOW: zero increment");
      break;
  }
  *frame = f;
  return kHeaderBytes + length;
}

void EncodeHeader(char* out, FrameType type, uint32_t stream, size_t length) {
  out[0] = static_cast<char>(type);
  out[1] = 0;
  Put16(out + 2, static_cast<uint16_t>(length));
  Put32(out + 4, stream);
}

namespace {
std::string WithPayload(FrameType type, uint32_t stream, std::string_view payload) {
  std::string out(kHeaderBytes + payload.size(), '\0');
  EncodeHeader(out.data(), type, stream, payload.size());
  out.replace(kHeaderBytes, payload.size(), payload);
  return out;
}
}  // namespace

std::string EncodeOpen(uint32_t stream, const Destination& dst) {
  return WithPayload(FrameType::kOpen, stream, dst.str());
}

std::string EncodeReply(uint32_t stream, int code, std::string_view reason) {
  std::string payload(2, '\0');
  Put16(payload.data(), static_cast<uint16_t>(code));
  for (char c : reason.substr(0, kMaxReasonBytes))
    payload.push_back(c < 0x20 || c > 0x7e ? '?' : c);
  return WithPayload(FrameType::kReply, stream, payload);
}

std::string EncodeEmpty(FrameType type, uint32_t stream) { return WithPayload(type, stream, {}); }

std::string EncodeWindow(uint32_t stream, uint32_t increment) {
  char payload[4];
  Put32(payload, increment);
  return WithPayload(FrameType::kWindow, stream, std::string_view(payload, 4));
}

}  // namespace sigil::dataplane::mux
