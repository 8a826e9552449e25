// sigil/2 frames: many workload streams over one agent-to-agent TLS 1.3 connection (ALPN
// "sigil/2"). See docs/dataplane.md, "Pooled connections (sigil/2)".
//
//   header (8 bytes, network order):  type u8 | flags u8 (0) | length u16 | stream u32
//   OPEN    client -> server  payload: destination text "10.0.0.2:8080" / "[::1]:8080"
//   REPLY   server -> client  payload: code u16 | reason (printable ASCII, <= 200 bytes)
//   DATA    both              payload: 1..kMaxDataPayload bytes of the stream
//   FIN     both              empty: the sender will send no more DATA on the stream
//   RST     both              empty: the stream is aborted in both directions
//   WINDOW  both              payload: increment u32 (> 0) of the receiver's window
//
// Right after the handshake the server sends kServerPreface, before any frame. The client reads
// it before moving the connection off OpenSSL, so OpenSSL has by then also processed the
// server's NewSessionTicket (sent ahead of any application data) and the next connection can
// resume the session.
//
// Stream ids are never 0. The client opens odd ids in increasing order and never reuses one;
// the server never opens streams. Pure functions on hostile input: every field is checked,
// nothing is allocated by the parser; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"
#include "dataplane/protocol/preamble.h"

namespace sigil::dataplane::mux {

inline constexpr std::string_view kAlpn2 = "sigil/2";
inline constexpr std::string_view kServerPreface = "SIGIL/2 READY\r\n";
inline constexpr size_t kHeaderBytes = 8;
inline constexpr size_t kMaxDataPayload = 16 * 1024;
inline constexpr size_t kMaxReasonBytes = 200;
// Every stream starts with this receive window in both directions.
inline constexpr uint32_t kInitialWindow = 2048 * 1024;

enum class FrameType : uint8_t {
  kOpen = 1,
  kReply = 2,
  kData = 3,
  kFin = 4,
  kRst = 5,
  kWindow = 6,
};
const char* FrameTypeName(FrameType type);

struct Frame {
  FrameType type = FrameType::kData;
  uint32_t stream = 0;
  std::string_view payload;  // points into the parsed buffer
  // Decoded payloads (valid for the matching type only).
  Destination open_dst;
  uint16_t reply_code = 0;
  std::string_view reply_reason;
  uint32_t window_increment = 0;
};

// Parses the frame at the start of `buffered`: its total length when complete, 0 when more
// bytes are needed, InvalidArgument (naming the field) when malformed.
Result<size_t> ParseFrame(std::string_view buffered, Frame* frame);

// Writes the 8-byte header for a frame with `length` payload bytes at `out`.
void EncodeHeader(char* out, FrameType type, uint32_t stream, size_t length);
// Whole frames. Reply: control characters in `reason` become '?', cut to kMaxReasonBytes.
std::string EncodeOpen(uint32_t stream, const Destination& dst);
std::string EncodeReply(uint32_t stream, int code, std::string_view reason);
std::string EncodeEmpty(FrameType type, uint32_t stream);  // FIN, RST
std::string EncodeWindow(uint32_t stream, uint32_t increment);

}  // namespace sigil::dataplane::mux
