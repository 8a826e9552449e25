// Parsing and validation of resource documents: multi-document YAML or JSON (one object or a
// list of objects) in, canonical Resources out.
//
// Every document is validated before anything is returned; on failure the caller gets every
// problem found (up to ParseOptions::max_errors), each naming the document and field:
//
//   document 2 (Service/api): spec.addresses[1]: "10.0.0.1" needs a port
//
// Documents are numbered from 1 in input order (empty YAML documents count but are skipped);
// list indices in field paths are 0-based. Messages never contain secret values.
// Untrusted input always yields an Error (never an exception, assert or crash).
// Thread-safe: no shared state.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "resources/resource.h"

namespace sigil::resources {

struct ParseOptions {
  // A batch of 10,000 ordinary WorkloadIdentity documents is about 2 MB of YAML.
  size_t max_input_bytes = size_t{8} * 1024 * 1024;
  size_t max_documents = 20'000;
  size_t max_errors = 50;
  // Nesting depth and node count (after alias expansion) of one document.
  size_t max_depth = 32;
  size_t max_nodes_per_document = 10'000;
};

struct Diagnostic {
  size_t document = 0;  // 1-based; 0 for problems with the input as a whole
  std::string kind;     // "" when not (yet) known
  std::string name;     // "" when not (yet) known or invalid
  std::string path;     // "spec.addresses[1]"; "" for document-level problems
  std::string message;  // "\"10.0.0.1\" needs a port"

  // "document 2 (Service/api): spec.addresses[1]: \"10.0.0.1\" needs a port"
  std::string ToString() const;
};

struct ParseReport {
  std::vector<Resource> resources;  // valid only when diagnostics is empty
  std::vector<Diagnostic> diagnostics;
  bool truncated = false;       // max_errors was hit; later documents were not examined
  bool limit_exceeded = false;  // a size, count, depth or node limit was hit
};

// Structured form, for the admin API's 4xx bodies.
ParseReport ParseDocumentsDetailed(std::string_view text, const ParseOptions& options = {});

// The resources, or an InvalidArgument (ResourceExhausted for size/count limits) error whose
// message holds one Diagnostic::ToString() per line. Rejects a batch that names the same
// (kind, name) twice and an input with no documents.
Result<std::vector<Resource>> ParseDocuments(std::string_view text,
                                             const ParseOptions& options = {});

// Validates one already-decoded document (an admin API request body).
Result<Resource> ParseResource(const nlohmann::json& document);

}  // namespace sigil::resources
