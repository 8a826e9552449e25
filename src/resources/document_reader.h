// Turns input text into one JSON value per document. Internal to sigil_resources.
//
// JSON (an object, or a list of objects) goes through nlohmann::json; anything else, and any
// JSON nlohmann rejects or that repeats a key, goes through yaml-cpp's event parser, whose
// errors carry line and column. YAML scalars resolve with the YAML 1.2 core schema (plain
// true/false/null/numbers; quoted scalars are always strings). Duplicate keys, non-scalar keys,
// unknown tags, nesting beyond max_depth and alias expansion beyond max_nodes are errors.
// yaml-cpp exceptions never leave this file.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sigil::resources::internal {

struct ReadLimits {
  size_t max_documents = 0;
  size_t max_depth = 0;
  size_t max_nodes = 0;  // per document, after alias expansion
};

struct ReadError {
  size_t document = 0;     // 1-based; 0 when not tied to one document
  std::string message;     // "line 3, column 7: ..."
  bool exhausted = false;  // a limit was hit (ResourceExhausted rather than InvalidArgument)
};

// Whether a plain (unquoted) YAML scalar with this text reads back as this string, i.e. is not
// null, a boolean or a number. The YAML writer quotes every string for which this is false.
bool PlainScalarIsString(const std::string& text);

// Called once per non-empty document, in order; `index` is 1-based and counts empty YAML
// documents too. Return false to stop reading.
using DocumentSink = std::function<bool(size_t index, nlohmann::json&& document)>;

// Reads every document; returns the error that stopped reading, if any. Documents before
// the error have already been passed to `sink`.
std::optional<ReadError> ReadDocuments(std::string_view text, const ReadLimits& limits,
                                       const DocumentSink& sink);

}  // namespace sigil::resources::internal
