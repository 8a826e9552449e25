// RecordCipher: TLS 1.3 record sealing and opening with one keyed EVP_CIPHER_CTX per direction.
#include "dataplane/relay/record_layer.h"

#include <openssl/crypto.h>
#include <openssl/err.h>

#include <algorithm>
#include <string>
#include <utility>

namespace sigil::dataplane {

namespace {

// Fetched once per process and never freed: freeing from a static destructor could run after
// OpenSSL's own atexit cleanup. Explicit fetching also avoids the implicit fetch (a global
// method-store lookup) that EVP_CipherInit_ex does with the legacy EVP_aes_*() objects.
const EVP_CIPHER* FetchCipher(ktls::KtlsCipher cipher) {
  static EVP_CIPHER* const aes128 = EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr);
  static EVP_CIPHER* const aes256 = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  static EVP_CIPHER* const chacha = EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr);
  switch (cipher) {
    case ktls::KtlsCipher::kAes128Gcm:
      return aes128;
    case ktls::KtlsCipher::kAes256Gcm:
      return aes256;
    case ktls::KtlsCipher::kChacha20Poly1305:
      return chacha;
  }
  return nullptr;
}

size_t KeyLength(ktls::KtlsCipher cipher) {
  return cipher == ktls::KtlsCipher::kAes128Gcm ? 16 : 32;
}

void PutHeader(uint8_t* out, size_t body_len) {
  out[0] = kTlsContentApplicationData;
  out[1] = 0x03;
  out[2] = 0x03;
  out[3] = static_cast<uint8_t>(body_len >> 8);
  out[4] = static_cast<uint8_t>(body_len & 0xff);
}

}  // namespace

Result<size_t> ParseRecordHeader(std::span<const uint8_t, kTlsRecordHeaderLen> header) {
  if (header[0] != kTlsContentApplicationData) {
    return InvalidArgument("tls record: unexpected outer content type " +
                           std::to_string(header[0]) + " after the handshake");
  }
  if (header[1] != 0x03 || header[2] != 0x03) {
    return InvalidArgument("tls record: bad legacy_record_version");
  }
  size_t len = (size_t{header[3]} << 8) | size_t{header[4]};
  if (len > kTlsMaxCiphertext) {
    return InvalidArgument("tls record: record overflow (" + std::to_string(len) + " bytes > " +
                           std::to_string(kTlsMaxCiphertext) + ")");
  }
  if (len < kTlsAeadTagLen + 1) {
    return InvalidArgument("tls record: record too short (" + std::to_string(len) + " bytes)");
  }
  return len;
}

RecordCipher::~RecordCipher() { OPENSSL_cleanse(iv_.data(), iv_.size()); }

Result<void> RecordCipher::Init(ktls::KtlsCipher cipher, const ktls::DirectionKeys& keys,
                                Mode mode) {
  if (ctx_) return FailedPrecondition("tls record: cipher already initialised");
  const EVP_CIPHER* evp = FetchCipher(cipher);
  if (evp == nullptr) return OsslError("tls record: EVP_CIPHER_fetch");
  if (keys.key.size() != KeyLength(cipher) || keys.iv.size() != iv_.size()) {
    return InvalidArgument("tls record: key or iv length does not match the cipher suite");
  }
  if (keys.seq == UINT64_MAX) return InvalidArgument("tls record: sequence number exhausted");
  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OsslError("tls record: EVP_CIPHER_CTX_new");
  int enc = mode == Mode::kSeal ? 1 : 0;
  // Both AEADs default to a 12-byte nonce; the nonce itself is set per record.
  SIGIL_TRY(OsslCheck(EVP_CipherInit_ex2(ctx.get(), evp, keys.key.data(), nullptr, enc, nullptr),
                      "tls record: EVP_CipherInit_ex2"));
  if (EVP_CIPHER_CTX_get_iv_length(ctx.get()) != static_cast<int>(iv_.size())) {
    return Internal("tls record: unexpected AEAD nonce length");
  }
  std::copy(keys.iv.data(), keys.iv.data() + iv_.size(), iv_.begin());
  seq_ = keys.seq;
  mode_ = mode;
  ctx_ = std::move(ctx);
  return Ok();
}

Result<void> RecordCipher::SetNonce() {
  if (seq_ == UINT64_MAX) {
    return ResourceExhausted("tls record: sequence number exhausted (would wrap)");
  }
  std::array<uint8_t, 12> nonce = iv_;
  uint64_t s = seq_;
  for (size_t i = 0; i < 8; ++i) {
    nonce[nonce.size() - 1 - i] ^= static_cast<uint8_t>(s & 0xff);
    s >>= 8;
  }
  int rc = EVP_CipherInit_ex2(ctx_.get(), nullptr, nullptr, nonce.data(),
                              mode_ == Mode::kSeal ? 1 : 0, nullptr);
  OPENSSL_cleanse(nonce.data(), nonce.size());
  return OsslCheck(rc, "tls record: setting the nonce");
}

Result<size_t> RecordCipher::Seal(uint8_t type, std::span<const uint8_t> content,
                                  std::span<uint8_t> out) {
  if (!ctx_ || mode_ != Mode::kSeal) return FailedPrecondition("tls record: not a sealing cipher");
  if (content.size() > kTlsMaxPlaintext) return InvalidArgument("tls record: content too large");
  const size_t total = SealedRecordSize(content.size());
  if (out.size() < total) return InvalidArgument("tls record: output buffer too small");
  SIGIL_TRY(SetNonce());
  uint8_t* p = out.data();
  PutHeader(p, total - kTlsRecordHeaderLen);
  int outl = 0;
  if (EVP_CipherUpdate(ctx_.get(), nullptr, &outl, p, static_cast<int>(kTlsRecordHeaderLen)) != 1) {
    return OsslError("tls record: seal aad");
  }
  size_t off = kTlsRecordHeaderLen;
  if (!content.empty()) {
    if (EVP_CipherUpdate(ctx_.get(), p + off, &outl, content.data(),
                         static_cast<int>(content.size())) != 1) {
      return OsslError("tls record: seal");
    }
    off += static_cast<size_t>(outl);
  }
  if (EVP_CipherUpdate(ctx_.get(), p + off, &outl, &type, 1) != 1) {
    return OsslError("tls record: seal type");
  }
  off += static_cast<size_t>(outl);
  if (EVP_CipherFinal_ex(ctx_.get(), p + off, &outl) != 1) {
    return OsslError("tls record: seal final");
  }
  off += static_cast<size_t>(outl);
  if (off != total - kTlsAeadTagLen) return Internal("tls record: unexpected AEAD output length");
  if (EVP_CIPHER_CTX_ctrl(ctx_.get(), EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kTlsAeadTagLen),
                          p + off) != 1) {
    return OsslError("tls record: get tag");
  }
  ++seq_;
  return total;
}

Result<OpenedRecord> RecordCipher::Open(std::span<uint8_t> record) {
  if (!ctx_ || mode_ != Mode::kOpen) return FailedPrecondition("tls record: not an opening cipher");
  if (record.size() < kTlsRecordHeaderLen) return InvalidArgument("tls record: no header");
  SIGIL_ASSIGN_OR_RETURN(size_t body_len, ParseRecordHeader(record.first<kTlsRecordHeaderLen>()));
  if (record.size() != kTlsRecordHeaderLen + body_len) {
    return InvalidArgument("tls record: length does not match the header");
  }
  SIGIL_TRY(SetNonce());
  uint8_t* p = record.data();
  uint8_t* body = p + kTlsRecordHeaderLen;
  const size_t ct_len = body_len - kTlsAeadTagLen;
  if (EVP_CIPHER_CTX_ctrl(ctx_.get(), EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kTlsAeadTagLen),
                          body + ct_len) != 1) {
    return OsslError("tls record: set tag");
  }
  int outl = 0;
  if (EVP_CipherUpdate(ctx_.get(), nullptr, &outl, p, static_cast<int>(kTlsRecordHeaderLen)) != 1) {
    return OsslError("tls record: open aad");
  }
  if (EVP_CipherUpdate(ctx_.get(), body, &outl, body, static_cast<int>(ct_len)) != 1) {
    ERR_clear_error();
    return Unauthenticated("tls record: decryption failed");
  }
  size_t off = static_cast<size_t>(outl);
  int final_len = 0;
  if (EVP_CipherFinal_ex(ctx_.get(), body + off, &final_len) != 1) {
    ERR_clear_error();
    OPENSSL_cleanse(body, ct_len);  // unauthenticated plaintext: never let it out
    return Unauthenticated("tls record: bad record MAC (authentication failed, seq " +
                           std::to_string(seq_) + ")");
  }
  off += static_cast<size_t>(final_len);
  if (off != ct_len) return Internal("tls record: unexpected AEAD output length");
  ++seq_;
  // Strip the zero padding; the last non-zero byte is the inner content type.
  size_t n = ct_len;
  while (n > 0 && body[n - 1] == 0) --n;
  if (n == 0) return InvalidArgument("tls record: no inner content type (all padding)");
  OpenedRecord out;
  out.type = body[n - 1];
  out.content = std::span<uint8_t>(body, n - 1);
  if (out.content.size() > kTlsMaxPlaintext) {
    return InvalidArgument("tls record: inner plaintext overflow");
  }
  return out;
}

}  // namespace sigil::dataplane
