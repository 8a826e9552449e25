// SecretBytes: the only type that may hold private key bytes, tokens and other secrets.
//
// - Move-only; the buffer is wiped (OPENSSL_cleanse) when freed and when moved from.
// - Allocated from OpenSSL's secure heap when the process initialised one
//   (CRYPTO_secure_malloc_init: mlocked, excluded from core dumps), else from the normal heap.
// - Has no stream operator; ToString-style formatting yields "[redacted]".
// - Compare with Equals(), which is constant-time.
// Thread-compatible (like std::vector).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace sigil {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size);  // zero-filled
  static SecretBytes Copy(std::span<const uint8_t> bytes);
  static SecretBytes Copy(std::string_view bytes);
  ~SecretBytes();

  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  std::span<uint8_t> mutable_span() { return {data_, size_}; }
  // Borrowed view as characters (PEM text, tokens). Never log it.
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }

  // Shrinks the logical size (for buffers filled by a callee); wipes the tail.
  void Truncate(size_t new_size);

  // Constant-time equality (length is not secret).
  bool Equals(const SecretBytes& other) const;

  static constexpr std::string_view kRedacted = "[redacted]";

 private:
  void Release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace sigil
