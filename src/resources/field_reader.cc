#include "resources/field_reader.h"

#include <algorithm>
#include <unordered_map>

#include "resources/syntax.h"

namespace sigil::resources::internal {

std::string_view TypeName(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      return "a number";
    case nlohmann::json::value_t::array:
      return "a list";
    case nlohmann::json::value_t::object:
      return "a mapping";
    default:
      return "null";
  }
}

std::string JoinPath(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  std::string out(parent);
  out += '.';
  out += key;
  return out;
}

std::string IndexPath(std::string_view parent, size_t index) {
  return std::string(parent) + "[" + std::to_string(index) + "]";
}

ObjectReader::ObjectReader(const nlohmann::json& value, std::string path, Problems& problems)
    : value_(value.is_object() ? &value : nullptr), path_(std::move(path)), problems_(&problems) {
  if (!value.is_object()) {
    problems_->push_back({path_, "expected a mapping, got " + std::string(TypeName(value))});
  }
}

void ObjectReader::Report(std::string_view key, std::string message) {
  problems_->push_back({key.empty() ? path_ : PathOf(key), std::move(message)});
}

bool ObjectReader::Has(std::string_view key) const {
  if (value_ == nullptr) return false;
  auto it = value_->find(key);
  return it != value_->end() && !it->is_null();
}

void ObjectReader::Mark(std::string_view key) {
  if (std::find(known_.begin(), known_.end(), key) == known_.end()) known_.emplace_back(key);
}

const nlohmann::json* ObjectReader::Get(std::string_view key) {
  Mark(key);
  if (value_ == nullptr) return nullptr;
  auto it = value_->find(key);
  if (it == value_->end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<std::string> ObjectReader::String(std::string_view key, Need need,
                                                std::string_view expected) {
  const nlohmann::json* v = Get(key);
  if (v == nullptr) {
    if (need == Need::kRequired && value_ != nullptr) Report(key, "required");
    return std::nullopt;
  }
  if (!v->is_string()) {
    Report(key, "expected " + std::string(expected) + ", got " + std::string(TypeName(*v)));
    return std::nullopt;
  }
  return v->get<std::string>();
}

std::optional<bool> ObjectReader::Bool(std::string_view key) {
  const nlohmann::json* v = Get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) {
    Report(key, "expected true or false, got " + std::string(TypeName(*v)));
    return std::nullopt;
  }
  return v->get<bool>();
}

std::optional<int64_t> ObjectReader::Integer(std::string_view key, Need need, int64_t min,
                                             int64_t max) {
  const nlohmann::json* v = Get(key);
  if (v == nullptr) {
    if (need == Need::kRequired && value_ != nullptr) Report(key, "required");
    return std::nullopt;
  }
  if (!v->is_number_integer()) {
    Report(key, "expected a whole number, got " + std::string(TypeName(*v)));
    return std::nullopt;
  }
  // number_unsigned above int64 range reads as a huge value: treat as out of range.
  bool too_big = v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max);
  int64_t n = too_big ? max : v->get<int64_t>();
  if (too_big || n < min || n > max) {
    Report(key, v->dump() + " is out of range (" + std::to_string(min) + "-" + std::to_string(max) +
                    ")");
    return std::nullopt;
  }
  return n;
}

std::optional<ObjectReader> ObjectReader::Child(std::string_view key, Need need) {
  const nlohmann::json* v = Get(key);
  if (v == nullptr) {
    if (need == Need::kRequired && value_ != nullptr) Report(key, "required");
    return std::nullopt;
  }
  if (!v->is_object()) {
    Report(key, "expected a mapping, got " + std::string(TypeName(*v)));
    return std::nullopt;
  }
  return ObjectReader(*v, PathOf(key), *problems_);
}

std::optional<std::vector<std::string>> ObjectReader::StringList(std::string_view key,
                                                                 size_t min_items,
                                                                 std::string_view item) {
  const nlohmann::json* v = Get(key);
  if (v == nullptr) {
    if (min_items > 0 && value_ != nullptr) Report(key, "required");
    return std::nullopt;
  }
  if (!v->is_array()) {
    Report(key, "expected a list, got " + std::string(TypeName(*v)));
    return std::nullopt;
  }
  if (v->size() < min_items) {
    Report(key,
           "needs at least " + std::to_string(min_items) + " item" + (min_items == 1 ? "" : "s"));
    return std::nullopt;
  }
  std::vector<std::string> out;
  out.reserve(v->size());
  bool ok = true;
  for (size_t i = 0; i < v->size(); ++i) {
    const nlohmann::json& e = (*v)[i];
    if (!e.is_string()) {
      problems_->push_back({IndexPath(PathOf(key), i),
                            "expected " + std::string(item) + ", got " + std::string(TypeName(e))});
      ok = false;
      continue;
    }
    out.push_back(e.get<std::string>());
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::string> ObjectReader::Enum(std::string_view key, Need need,
                                              std::initializer_list<std::string_view> allowed) {
  std::string list;
  for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  auto s = String(key, need, "one of " + list);
  if (!s) return std::nullopt;
  if (std::find(allowed.begin(), allowed.end(), *s) == allowed.end()) {
    Report(key, Quote(*s) + " is not one of " + list);
    return std::nullopt;
  }
  return s;
}

void ObjectReader::Forbid(std::string_view key, std::string_view reason) {
  if (std::find(known_.begin(), known_.end(), key) != known_.end()) return;  // already read
  Mark(key);
  if (Has(key)) Report(key, "not allowed when " + std::string(reason));
}

void ObjectReader::RejectUnknown(std::initializer_list<std::string_view> also_allowed) {
  if (value_ == nullptr) return;
  for (std::string_view a : also_allowed) Mark(a);
  for (const auto& [k, v] : value_->items()) {
    if (std::find(known_.begin(), known_.end(), k) != known_.end()) continue;
    std::vector<std::string> sorted = known_;
    std::sort(sorted.begin(), sorted.end());
    std::string list;
    for (const auto& s : sorted) list += (list.empty() ? "" : ", ") + s;
    bool plain = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-';
    });
    std::string where = plain ? PathOf(k) : path_ + "[" + Quote(k) + "]";
    problems_->push_back({std::move(where), "unknown field (allowed: " + list + ")"});
  }
}

void ReportDuplicates(const std::vector<std::string>& list, std::string_view path,
                      Problems& problems) {
  std::unordered_map<std::string_view, size_t> first;
  for (size_t i = 0; i < list.size(); ++i) {
    auto [it, inserted] = first.emplace(list[i], i);
    if (!inserted) {
      problems.push_back({IndexPath(path, i),
                          Quote(list[i]) + " repeats item [" + std::to_string(it->second) + "]"});
    }
  }
}

}  // namespace sigil::resources::internal
