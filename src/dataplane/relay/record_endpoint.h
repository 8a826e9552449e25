// RecordLayer: the user-space TLS 1.3 record layer behind Endpoint::Records(). After the
// handshake, OpenSSL's traffic keys are exported (ktls::ExportTrafficKeys) and the SSL object
// (~25-32 KiB for an idle connection) is freed; this class then protects and unprotects the
// records itself, the way kernel TLS would, with the same non-blocking contract as the OpenSSL
// endpoint.
//
// Memory: two keyed EVP_CIPHER_CTX (one per direction), the IVs and sequence numbers and a few
// counters. The ciphertext buffers exist only while needed:
//   - receive: one buffer of at most one record (2^14 + 256 + 5 bytes) from the first byte of a
//     record until its plaintext has been handed out; released when no byte is pending;
//   - send: records are sealed into a stack buffer and sent from there; only when the socket
//     takes part of a record (or none of it) is the rest copied to a heap buffer, released once
//     flushed.
//
// What the receive side accepts after the switch (inner content types, RFC 8446 5.4):
//   application_data  returned to the caller (empty records skipped)
//   alert             close_notify -> kEof (clean, not truncated); any other alert -> kReset
//   handshake         NewSessionTicket -> skipped (counted in tickets_skipped()); KeyUpdate ->
//                     kError "KeyUpdate not supported after the record-layer switch" (Sigil
//                     peers never send one: OpenSSL sends KeyUpdate only when the application
//                     calls SSL_key_update, and there is no generation-1 key to move to here);
//                     anything else -> kError. A record must hold whole handshake messages; a
//                     message that continues in the next record is rejected (kError) rather than
//                     reassembled (OpenSSL never fragments its ~200-byte tickets).
//   other             kError.
// A record that fails authentication is kError ("bad record MAC") and never yields data; the
// connection is then unusable (every later Read fails). More than kMaxEmptyRecords records in a
// row without application data (tickets, empty records) is also an error, so a peer cannot keep
// the loop busy forever. TCP EOF without close_notify is kEof with `truncated` set.
//
// We never send KeyUpdate, NewSessionTicket or alerts other than close_notify.
// Not thread-safe; used from the owning loop's thread like every Endpoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/result.h"
#include "dataplane/ktls/ktls.h"
#include "dataplane/relay/endpoint.h"
#include "dataplane/relay/record_layer.h"

namespace sigil::dataplane {

class RecordLayer {
 public:
  static constexpr uint32_t kMaxEmptyRecords = 256;

  // Keys both directions; the key bytes in `keys` are wiped when it is destroyed.
  static Result<std::unique_ptr<RecordLayer>> Create(ktls::TrafficKeys keys);
  ~RecordLayer();
  RecordLayer(const RecordLayer&) = delete;
  RecordLayer& operator=(const RecordLayer&) = delete;

  // Same semantics as Endpoint::Read/Write on the non-blocking socket `fd`. A Write that
  // returned kWantWrite has sealed (and partly sent) a record of up to 2^14 of the caller's
  // bytes; the retry must pass at least as many bytes (their content is not looked at again)
  // and returns that record's byte count once it is out.
  IoResult Read(int fd, std::span<char> out);
  IoResult Write(int fd, std::span<const char> in);
  // Sends the encrypted close_notify alert (flushing a pending record first). kWantWrite:
  // call again when writable. Does not shut the socket down; Endpoint does.
  IoResult SendCloseNotify(int fd);
  // Frees both buffers (on Abort/Close).
  void ReleaseBuffers();

  ktls::KtlsCipher cipher() const { return cipher_; }
  uint64_t tx_seq() const { return tx_.seq(); }
  uint64_t rx_seq() const { return rx_.seq(); }
  uint64_t tickets_skipped() const { return tickets_skipped_; }
  // Heap bytes of ciphertext buffers held right now (0 when idle).
  size_t buffered_bytes() const { return (in_ ? kTlsMaxRecord : 0) + out_cap_; }

 private:
  RecordLayer() = default;
  // Interprets a non-application-data record. kOk (bytes 0): skip it and go on.
  IoResult HandleControl(const OpenedRecord& rec);
  IoResult Flush(int fd);
  void DropRecord();  // the record at in_start_ is consumed
  void DropInput();   // wipes and frees the receive buffer (EOF, errors)
  IoResult ReadFailure(IoStatus status, std::string error);
  IoResult WriteFailure(IoResult r);

  RecordCipher tx_, rx_;
  // Receive buffer: bytes [in_start_, in_len_) are unprocessed; when `opened_` the record at
  // in_start_ is decrypted and its content [plain_off_, plain_end_) is being handed out.
  std::unique_ptr<uint8_t[]> in_;
  uint32_t in_start_ = 0, in_len_ = 0;
  uint32_t rec_end_ = 0, plain_off_ = 0, plain_end_ = 0;
  // Send buffer: the unsent tail [0, out_len_) of one sealed record, out_off_ already sent.
  std::unique_ptr<uint8_t[]> out_;
  uint32_t out_cap_ = 0, out_off_ = 0, out_len_ = 0;
  uint32_t out_plain_ = 0;  // caller bytes in the pending record (0: close_notify)
  uint32_t empty_run_ = 0;
  uint64_t tickets_skipped_ = 0;
  ktls::KtlsCipher cipher_ = ktls::KtlsCipher::kAes128Gcm;
  bool opened_ = false;
  bool read_eof_ = false;     // close_notify or TCP EOF seen
  bool read_failed_ = false;  // an error ended the read side for good
  bool write_failed_ = false;
  bool close_notify_sealed_ = false;
};

}  // namespace sigil::dataplane
