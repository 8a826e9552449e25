// Small readers for already-parsed JSON documents.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sigil {

// The string members of the array `obj[key]`; empty when the key is absent or not an array.
// Members that are not strings are skipped (the caller validated the document, or tolerates it).
inline std::vector<std::string> JsonStringList(const nlohmann::json& obj, const char* key) {
  std::vector<std::string> out;
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_array()) return out;
  for (const auto& v : *it) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace sigil
