// RecordCipher: one direction of TLS 1.3 record protection (RFC 8446 section 5.2), the piece of
// the record layer that OpenSSL would otherwise keep alive in a ~25-32 KiB SSL object.
//
// A record on the wire is
//   header (5 bytes: opaque_type = application_data (23), legacy_record_version = 0x0303,
//           length of the rest, big-endian)
//   AEAD-Encrypt(key, nonce = iv XOR seq (left-padded to 12 bytes), aad = header,
//                plaintext = content || inner content type || zero padding)   incl. 16-byte tag
// with at most 2^14 content bytes and at most 2^14 + 256 bytes after the header.
//
// Supported suites: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
// TLS_CHACHA20_POLY1305_SHA256. The EVP_CIPHER_CTX is keyed once (Init); each record only sets
// its nonce. The key bytes are not kept (OpenSSL's context holds the expanded key and wipes it on
// free); the 12-byte IV is wiped in the destructor.
//
// Sequence numbers: each Seal/Open consumes one. A direction whose counter reached 2^64 - 1 fails
// instead of wrapping (RFC 8446 5.3). The AEAD usage limits of 5.5 (2^24.5 full records for
// AES-GCM) are far beyond what one proxied connection carries and are not enforced.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "common/ossl.h"
#include "common/result.h"
#include "dataplane/ktls/ktls.h"

namespace sigil::dataplane {

inline constexpr size_t kTlsRecordHeaderLen = 5;
inline constexpr size_t kTlsMaxPlaintext = size_t{1} << 14;          // content bytes
inline constexpr size_t kTlsMaxCiphertext = kTlsMaxPlaintext + 256;  // after the header
inline constexpr size_t kTlsMaxRecord = kTlsRecordHeaderLen + kTlsMaxCiphertext;
inline constexpr size_t kTlsAeadTagLen = 16;

inline constexpr uint8_t kTlsContentAlert = 21;
inline constexpr uint8_t kTlsContentHandshake = 22;
inline constexpr uint8_t kTlsContentApplicationData = 23;

// The size of the record Seal produces for `n` content bytes (no padding).
constexpr size_t SealedRecordSize(size_t n) { return kTlsRecordHeaderLen + n + 1 + kTlsAeadTagLen; }

// Parses a record header: the length of the rest of the record. InvalidArgument if the outer
// type is not application_data, the version is not 0x0303, or the length is out of range
// (< 17, the smallest possible protected record, or > 2^14 + 256).
Result<size_t> ParseRecordHeader(std::span<const uint8_t, kTlsRecordHeaderLen> header);

struct OpenedRecord {
  uint8_t type = 0;            // inner content type
  std::span<uint8_t> content;  // inside the record passed to Open, padding removed
};

class RecordCipher {
 public:
  enum class Mode { kSeal, kOpen };

  RecordCipher() = default;
  ~RecordCipher();
  RecordCipher(const RecordCipher&) = delete;
  RecordCipher& operator=(const RecordCipher&) = delete;

  // Keys the context for `mode` with `keys` (key, 12-byte iv, first sequence number).
  Result<void> Init(ktls::KtlsCipher cipher, const ktls::DirectionKeys& keys, Mode mode);
  bool initialized() const { return ctx_ != nullptr; }

  // Seals `content` (at most 2^14 bytes) as one record of inner type `type` into
  // out[0, SealedRecordSize(content.size())). `content` and `out` must not overlap.
  Result<size_t> Seal(uint8_t type, std::span<const uint8_t> content, std::span<uint8_t> out);

  // Opens the complete record `record` (header included, length as ParseRecordHeader says) in
  // place. Unauthenticated when the tag does not verify (the buffer then holds garbage that must
  // be discarded); InvalidArgument when the inner plaintext is malformed (all padding, or more
  // than 2^14 content bytes).
  Result<OpenedRecord> Open(std::span<uint8_t> record);

  // Sequence number of the next record.
  uint64_t seq() const { return seq_; }

 private:
  Result<void> SetNonce();

  EvpCipherCtxPtr ctx_;
  std::array<uint8_t, 12> iv_{};
  uint64_t seq_ = 0;
  Mode mode_ = Mode::kSeal;
};

}  // namespace sigil::dataplane
