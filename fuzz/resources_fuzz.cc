// Operator documents (`sigil apply` input) from untrusted bytes: YAML or JSON, any number of
// documents, through parsing, validation and canonical re-encoding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "resources/parse.h"
#include "resources/resource.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sigil::resources;
  ParseOptions options;
  options.max_input_bytes = 64 * 1024;
  options.max_documents = 64;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  ParseReport report = ParseDocumentsDetailed(text, options);
  for (const auto& r : report.resources) {
    // What validated must re-encode and load back from its stored form.
    std::string spec = CanonicalSpecJson(r);
    auto back = ResourceFromStored(KindName(r.kind), r.name, spec, 1);
    if (!back.ok()) __builtin_trap();
    (void)ToYaml(r);
  }
  return 0;
}
