#include "resources/document_reader.h"

#include <algorithm>
#include <charconv>
#include <spanstream>
#include <unordered_map>
#include <vector>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

namespace sigil::resources::internal {
namespace {

using nlohmann::json;

// Thrown by the builder from inside yaml-cpp callbacks; caught in ReadYaml.
struct BuildError {
  YAML::Mark mark;
  std::string message;
  bool exhausted = false;
};

std::string Where(const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return "";
  return "line " + std::to_string(mark.line + 1) + ", column " + std::to_string(mark.column + 1) +
         ": ";
}

bool IsDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// [0-9]*(\.[0-9]*)?([eE][-+]?[0-9]+)? with at least one mantissa digit (sign already removed).
bool IsYamlFloat(std::string_view s) {
  size_t i = 0;
  size_t digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    size_t exp_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  return i == s.size();
}

// YAML 1.2 core schema resolution of a plain scalar (hex/octal/.inf/.nan stay strings).
json ResolvePlain(const std::string& v) {
  if (v.empty() || v == "~" || v == "null" || v == "Null" || v == "NULL") return nullptr;
  if (v == "true" || v == "True" || v == "TRUE") return true;
  if (v == "false" || v == "False" || v == "FALSE") return false;
  std::string_view s = v;
  bool neg = false;
  if (s.front() == '-' || s.front() == '+') {
    neg = s.front() == '-';
    s.remove_prefix(1);
  }
  if (IsDigits(s) && s.size() <= 18) {
    int64_t n = 0;
    for (char c : s) n = n * 10 + (c - '0');
    return neg ? -n : n;
  }
  if (IsYamlFloat(s)) {
    double d = 0;
    std::string_view body = v.front() == '+' ? std::string_view(v).substr(1) : v;
    auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), d);
    if (ec == std::errc() && ptr == body.data() + body.size()) return d;
  }
  return v;
}

bool IsStringTag(const std::string& tag) { return tag == "!" || tag == "tag:yaml.org,2002:str"; }

class JsonBuilder final : public YAML::EventHandler {
 public:
  explicit JsonBuilder(const ReadLimits& limits) : limits_(limits) {}

  size_t document_index() const { return index_; }
  json TakeDocument() { return std::move(root_); }

  void OnDocumentStart(const YAML::Mark& mark) override {
    ++index_;
    if (index_ > limits_.max_documents) {
      throw BuildError{mark, "more than " + std::to_string(limits_.max_documents) + " documents",
                       true};
    }
    stack_.clear();
    anchors_.clear();
    root_ = nullptr;
    nodes_ = 0;
  }
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Add(mark, nullptr, nullptr, anchor, 1);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) throw BuildError{mark, "alias refers to an unfinished anchor"};
    Add(mark, json(it->second.first), nullptr, 0, it->second.second);
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    json v;
    if (tag == "?") {
      v = ResolvePlain(value);
    } else if (IsStringTag(tag)) {
      v = value;
    } else {
      throw BuildError{mark, "unsupported tag \"" + tag + "\""};
    }
    Add(mark, std::move(v), &value, anchor, 1);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value /*style*/) override {
    Push(mark, tag, "tag:yaml.org,2002:seq", json::array(), anchor);
  }
  void OnSequenceEnd() override { Pop(); }
  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value /*style*/) override {
    Push(mark, tag, "tag:yaml.org,2002:map", json::object(), anchor);
  }
  void OnMapEnd() override { Pop(); }

 private:
  struct Frame {
    json value;
    YAML::anchor_t anchor;
    YAML::Mark mark;
    size_t nodes_at_start;
    bool has_key = false;
    std::string key;
    YAML::Mark key_mark;
  };

  void Count(const YAML::Mark& mark, size_t n) {
    nodes_ += n;
    if (nodes_ > limits_.max_nodes) {
      throw BuildError{mark,
                       "document has more than " + std::to_string(limits_.max_nodes) +
                           " nodes (after expanding aliases)",
                       true};
    }
  }

  void Push(const YAML::Mark& mark, const std::string& tag, std::string_view own_tag, json value,
            YAML::anchor_t anchor) {
    if (tag != "?" && tag != "!" && tag != own_tag) {
      throw BuildError{mark, "unsupported tag \"" + tag + "\""};
    }
    if (!stack_.empty() && stack_.back().value.is_object() && !stack_.back().has_key) {
      throw BuildError{mark, "a mapping key must be a string, not a list or mapping"};
    }
    if (stack_.size() >= limits_.max_depth) {
      throw BuildError{mark, "nested deeper than " + std::to_string(limits_.max_depth) + " levels",
                       true};
    }
    Count(mark, 1);
    stack_.push_back(Frame{std::move(value), anchor, mark, nodes_, false, {}, {}});
  }

  void Pop() {
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    Add(f.mark, std::move(f.value), nullptr, f.anchor, nodes_ - f.nodes_at_start + 1, false);
  }

  // Attaches a finished node to its parent. `raw` is the scalar's text (for keys).
  void Add(const YAML::Mark& mark, json value, const std::string* raw, YAML::anchor_t anchor,
           size_t nodes, bool count = true) {
    if (count) Count(mark, nodes);
    if (anchor != 0) anchors_[anchor] = {value, nodes};
    if (stack_.empty()) {
      root_ = std::move(value);
      return;
    }
    Frame& parent = stack_.back();
    if (parent.value.is_array()) {
      parent.value.push_back(std::move(value));
      return;
    }
    if (!parent.has_key) {
      if (raw == nullptr || value.is_null()) {
        throw BuildError{mark, "a mapping key must be a non-empty string"};
      }
      parent.key = *raw;
      parent.key_mark = mark;
      parent.has_key = true;
      return;
    }
    parent.has_key = false;
    if (parent.value.contains(parent.key)) {
      throw BuildError{parent.key_mark, "duplicate key \"" + parent.key + "\""};
    }
    parent.value[parent.key] = std::move(value);
  }

  const ReadLimits& limits_;
  size_t index_ = 0;
  size_t nodes_ = 0;
  std::vector<Frame> stack_;
  std::unordered_map<YAML::anchor_t, std::pair<json, size_t>> anchors_;
  json root_;
};

std::optional<ReadError> ReadYaml(std::string_view text, const ReadLimits& limits,
                                  const DocumentSink& sink) {
  std::ispanstream in(std::span<const char>(text.data(), text.size()));
  JsonBuilder builder(limits);
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(builder)) {
      json doc = builder.TakeDocument();
      if (doc.is_null()) continue;  // empty document ("---" with nothing after it)
      if (!sink(builder.document_index(), std::move(doc))) break;
    }
  } catch (const BuildError& e) {
    return ReadError{builder.document_index(), Where(e.mark) + e.message, e.exhausted};
  } catch (const YAML::Exception& e) {
    return ReadError{builder.document_index(), Where(e.mark) + e.msg, false};
  } catch (const std::exception& e) {
    return ReadError{builder.document_index(), std::string("YAML parser: ") + e.what(), false};
  }
  return std::nullopt;
}

// Valid UTF-8 and no C0 control characters other than tab, LF and CR (YAML forbids them;
// JSON allows none outside strings). Returns "line L, column C: ..." on failure.
std::optional<std::string> CheckText(std::string_view text) {
  size_t line = 1;
  size_t col = 1;
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    auto where = [&] {
      return "line " + std::to_string(line) + ", column " + std::to_string(col) + ": ";
    };
    if (c < 0x80) {
      if (c == '\n') {
        ++line;
        col = 1;
      } else {
        if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) {
          return where() + "control character 0x" + "0123456789abcdef"[c >> 4] +
                 "0123456789abcdef"[c & 0xf] + " is not allowed";
        }
        ++col;
      }
      ++i;
      continue;
    }
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (len == 0 || c > 0xf4 || i + len > text.size()) return where() + "invalid UTF-8";
    uint32_t cp = c & (0x7f >> len);
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xc0) != 0x80) return where() + "invalid UTF-8";
      cp = (cp << 6) | (cc & 0x3f);
    }
    bool overlong = (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return where() + "invalid UTF-8";
    }
    i += len;
    ++col;
  }
  return std::nullopt;
}

// Strict JSON with no repeated keys and bounded depth, or nullopt (then YAML takes over and
// produces a positioned error for whatever JSON did not like).
std::optional<json> ParseStrictJson(std::string_view text, size_t max_depth) {
  std::vector<std::vector<std::string>> keys;
  bool bad = false;
  auto cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (bad) return true;
    if (static_cast<size_t>(depth) > max_depth + 1) bad = true;
    switch (event) {
      case json::parse_event_t::object_start:
        keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key: {
        auto& seen = keys.back();
        const auto& k = parsed.get_ref<const std::string&>();
        if (std::find(seen.begin(), seen.end(), k) != seen.end()) bad = true;
        seen.push_back(k);
        break;
      }
      default:
        break;
    }
    return true;
  };
  json value = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
  if (bad || value.is_discarded()) return std::nullopt;
  return value;
}

}  // namespace

bool PlainScalarIsString(const std::string& text) { return ResolvePlain(text).is_string(); }

std::optional<ReadError> ReadDocuments(std::string_view text, const ReadLimits& limits,
                                       const DocumentSink& sink) {
  if (auto bad = CheckText(text)) return ReadError{0, *bad, false};
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && (text[first] == '{' || text[first] == '[')) {
    if (auto value = ParseStrictJson(text, limits.max_depth)) {
      if (!value->is_array()) {
        sink(1, std::move(*value));
        return std::nullopt;
      }
      if (value->size() > limits.max_documents) {
        return ReadError{0, "more than " + std::to_string(limits.max_documents) + " documents",
                         true};
      }
      for (size_t i = 0; i < value->size(); ++i) {
        if (!sink(i + 1, std::move((*value)[i]))) break;
      }
      return std::nullopt;
    }
  }
  return ReadYaml(text, limits, sink);
}

}  // namespace sigil::resources::internal
