// Fuzzes the TLS 1.3 record layer the agents use after the handshake
// (src/dataplane/relay/record_layer.h): record headers and records from a hostile peer must
// never crash or return data without a valid tag, and whatever is sealed must open to the same
// content and type.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dataplane/relay/record_layer.h"

namespace {

using sigil::dataplane::RecordCipher;

sigil::dataplane::ktls::DirectionKeys Keys() {
  sigil::dataplane::ktls::DirectionKeys k;
  k.key = sigil::SecretBytes(16);
  k.iv = sigil::SecretBytes(12);
  std::memset(k.key.data(), 0x11, k.key.size());
  std::memset(k.iv.data(), 0x22, k.iv.size());
  return k;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using sigil::dataplane::kTlsMaxPlaintext;
  using sigil::dataplane::kTlsRecordHeaderLen;
  // 1. The input as a record from the wire.
  if (size >= kTlsRecordHeaderLen) {
    std::span<const uint8_t, kTlsRecordHeaderLen> header(data, kTlsRecordHeaderLen);
    auto len = sigil::dataplane::ParseRecordHeader(header);
    if (len.ok() && kTlsRecordHeaderLen + *len <= size) {
      std::vector<uint8_t> record(data, data + kTlsRecordHeaderLen + *len);
      RecordCipher opener;
      if (!opener
               .Init(sigil::dataplane::ktls::KtlsCipher::kAes128Gcm, Keys(),
                     RecordCipher::Mode::kOpen)
               .ok()) {
        std::abort();
      }
      auto opened = opener.Open(record);
      if (opened.ok()) std::abort();  // a random record cannot carry a valid tag
    }
  }
  // 2. The input as content: seal, then open; the same bytes and type must come back.
  if (size >= 1) {
    const uint8_t type = data[0] == 0 ? 23 : data[0];
    const size_t n = std::min(size - 1, kTlsMaxPlaintext);
    std::vector<uint8_t> sealed(sigil::dataplane::SealedRecordSize(n));
    RecordCipher sealer, opener;
    if (!sealer
             .Init(sigil::dataplane::ktls::KtlsCipher::kAes128Gcm, Keys(),
                   RecordCipher::Mode::kSeal)
             .ok() ||
        !opener
             .Init(sigil::dataplane::ktls::KtlsCipher::kAes128Gcm, Keys(),
                   RecordCipher::Mode::kOpen)
             .ok()) {
      std::abort();
    }
    auto written = sealer.Seal(type, std::span<const uint8_t>(data + 1, n), sealed);
    if (!written.ok()) std::abort();
    sealed.resize(*written);
    auto opened = opener.Open(sealed);
    if (!opened.ok() || opened->type != type || opened->content.size() != n ||
        (n > 0 && std::memcmp(opened->content.data(), data + 1, n) != 0)) {
      std::abort();
    }
  }
  return 0;
}
