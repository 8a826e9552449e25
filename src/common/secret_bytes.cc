#include "common/secret_bytes.h"

#include <openssl/crypto.h>

#include <cstring>
#include <utility>

namespace sigil {

SecretBytes::SecretBytes(size_t size) : size_(size) {
  if (size_ == 0) return;
  data_ = static_cast<uint8_t*>(OPENSSL_secure_zalloc(size_));
  if (data_ == nullptr) std::abort();  // allocation failure of a secret: nothing sane to do
}

SecretBytes SecretBytes::Copy(std::span<const uint8_t> bytes) {
  SecretBytes out(bytes.size());
  if (!bytes.empty()) std::memcpy(out.data_, bytes.data(), bytes.size());
  return out;
}

SecretBytes SecretBytes::Copy(std::string_view bytes) {
  return Copy(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

SecretBytes::~SecretBytes() { Release(); }

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void SecretBytes::Truncate(size_t new_size) {
  if (new_size >= size_) return;
  OPENSSL_cleanse(data_ + new_size, size_ - new_size);
  size_ = new_size;
}

bool SecretBytes::Equals(const SecretBytes& other) const {
  if (size_ != other.size_) return false;
  if (size_ == 0) return true;
  return CRYPTO_memcmp(data_, other.data_, size_) == 0;
}

void SecretBytes::Release() {
  if (data_ != nullptr) {
    // OPENSSL_secure_clear_free cleanses before freeing, for both heaps. The allocation size
    // can exceed size_ after Truncate, so cleanse what we know of explicitly as well.
    OPENSSL_cleanse(data_, size_);
    OPENSSL_secure_clear_free(data_, size_);
  }
  data_ = nullptr;
  size_ = 0;
}

}  // namespace sigil
