// CSRs from untrusted bytes (DER and PEM), through signature and key-policy verification.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/csr.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sigil::core;
  KeyPolicy policy;
  policy.allowed.insert(KeyType::kEd25519);
  if (auto csr = Csr::ParseDer(std::span<const uint8_t>(data, size)); csr.ok()) {
    (void)csr->Verify(policy);
  }
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto csr = Csr::ParsePem(text); csr.ok()) (void)csr->Verify(policy);
  return 0;
}
