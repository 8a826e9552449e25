// Small helpers shared by the static programs that run inside the QEMU guest (tests/vm): a
// deterministic byte stream and SHA-256 over what was sent or received.
#pragma once

#include <openssl/evp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>

#include "common/ossl.h"

namespace sigil::vmtest {

// Deterministic pseudo-random stream (xorshift64*).
class Generator {
 public:
  explicit Generator(uint64_t seed) : state_(seed | 1) {}
  void Fill(std::span<uint8_t> out) {
    for (size_t i = 0; i < out.size(); i += 8) {
      state_ ^= state_ >> 12;
      state_ ^= state_ << 25;
      state_ ^= state_ >> 27;
      uint64_t v = state_ * 0x2545F4914F6CDD1DULL;
      size_t n = std::min<size_t>(8, out.size() - i);
      std::memcpy(out.data() + i, &v, n);
    }
  }

 private:
  uint64_t state_;
};

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
  void Update(std::span<const uint8_t> data) {
    EVP_DigestUpdate(ctx_.get(), data.data(), data.size());
  }
  void Update(std::span<const char> data) {
    EVP_DigestUpdate(ctx_.get(), data.data(), data.size());
  }
  std::string HexDigest() {
    unsigned char md[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_.get(), md, &len);
    std::string out;
    char buf[3];
    for (unsigned int i = 0; i < len; ++i) {
      std::snprintf(buf, sizeof(buf), "%02x", md[i]);
      out += buf;
    }
    return out;
  }

 private:
  EvpMdCtxPtr ctx_;
};

}  // namespace sigil::vmtest
