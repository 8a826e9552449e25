// Type-checked, path-tracking access to one JSON object of a document under validation.
// Internal to sigil_resources. Every problem is appended to a shared list with its full field
// path ("spec.tls.sni"); accessors return nullopt after reporting, so validators carry on and
// report every problem in one pass.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace sigil::resources::internal {

struct Problem {
  std::string path;
  std::string message;
};
using Problems = std::vector<Problem>;

// "a string", "a number", "a boolean", "a list", "a mapping", "null".
std::string_view TypeName(const nlohmann::json& value);
// "spec" + "ttl" -> "spec.ttl"; "" + "kind" -> "kind".
std::string JoinPath(std::string_view parent, std::string_view key);
std::string IndexPath(std::string_view parent, size_t index);

enum class Need { kOptional, kRequired };

class ObjectReader {
 public:
  // `value` must outlive the reader. A non-object value is reported once ("expected a
  // mapping") and then reads as empty.
  ObjectReader(const nlohmann::json& value, std::string path, Problems& problems);

  const std::string& path() const { return path_; }
  Problems& problems() { return *problems_; }
  std::string PathOf(std::string_view key) const { return JoinPath(path_, key); }
  void Report(std::string_view key, std::string message);
  bool Has(std::string_view key) const;

  // The member, or nullptr when absent or null. Marks `key` as a known field.
  const nlohmann::json* Get(std::string_view key);
  // `expected` completes "expected ..., got a list" (default "a string").
  std::optional<std::string> String(std::string_view key, Need need,
                                    std::string_view expected = "a string");
  std::optional<bool> Bool(std::string_view key);
  std::optional<int64_t> Integer(std::string_view key, Need need, int64_t min, int64_t max);
  // A nested mapping; nullopt when absent (reported if required) or of the wrong type.
  std::optional<ObjectReader> Child(std::string_view key, Need need);
  // A list whose items are all strings; `min_items` > 0 makes it required and non-empty.
  std::optional<std::vector<std::string>> StringList(std::string_view key, size_t min_items,
                                                     std::string_view item = "a string");
  // The value of `key` must be one of `allowed`.
  std::optional<std::string> Enum(std::string_view key, Need need,
                                  std::initializer_list<std::string_view> allowed);
  // Reports `key` if present and not read by another accessor: "not allowed when <reason>".
  void Forbid(std::string_view key, std::string_view reason);
  // Reports every member no accessor asked for: "unknown field (allowed: a, b, c)".
  void RejectUnknown(std::initializer_list<std::string_view> also_allowed = {});

 private:
  void Mark(std::string_view key);
  const nlohmann::json* value_;  // null when the value was not an object
  std::string path_;
  Problems* problems_;
  std::vector<std::string> known_;
};

// Reports items of `list` (at `path`) that repeat an earlier item.
void ReportDuplicates(const std::vector<std::string>& list, std::string_view path,
                      Problems& problems);

}  // namespace sigil::resources::internal
