// Fuzzes SpiffeId::Parse and TrustDomain::Parse. Invariants: whatever parses re-serialises to
// the exact input and re-parses to an equal value through every entry point.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/spiffe_id.h"

using sigil::core::SpiffeId;
using sigil::core::TrustDomain;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto id = SpiffeId::Parse(text);
  if (id.ok()) {
    if (id->str() != text) std::abort();
    if (id->str().size() > sigil::core::kMaxSpiffeIdLength) std::abort();
    auto from_path = SpiffeId::FromPath(id->trust_domain(), id->path());
    if (!from_path.ok() || *from_path != *id) std::abort();
    auto td = TrustDomain::Parse(id->trust_domain().name());
    if (!td.ok() || *td != id->trust_domain()) std::abort();
    if (!sigil::core::ValidatePath(id->path()).ok()) std::abort();
  }

  auto td = TrustDomain::Parse(text);
  if (td.ok()) {
    auto again = TrustDomain::Parse(td->IdString());
    if (!again.ok() || *again != *td) std::abort();
    if (td->name().size() > sigil::core::kMaxTrustDomainLength) std::abort();
  }

  // FromPath must agree with Parse on the same ID (for inputs shaped like a path; anything
  // else would extend the trust domain name when concatenated).
  if (!text.empty() && text.front() != '/') return 0;
  auto example = TrustDomain::Parse("example.org");
  auto joined = SpiffeId::FromPath(*example, text);
  auto reparsed = SpiffeId::Parse("spiffe://example.org" + std::string(text));
  if (joined.ok() != reparsed.ok()) std::abort();
  if (joined.ok() && *joined != *reparsed) std::abort();
  return 0;
}
