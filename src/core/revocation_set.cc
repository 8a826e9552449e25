#include "core/revocation_set.h"

#include <nlohmann/json.hpp>

#include "common/duration.h"
#include "common/json_util.h"

namespace sigil::core {
namespace {

const RevocationSet::Entry* Lookup(const std::unordered_map<std::string, size_t>& index,
                                   const std::vector<RevocationSet::Entry>& entries,
                                   std::string_view key) {
  if (index.empty() || key.empty()) return nullptr;
  auto it = index.find(std::string(key));
  return it == index.end() ? nullptr : &entries[it->second];
}

}  // namespace

RevocationSet RevocationSet::FromResources(
    const std::vector<std::pair<std::string, std::string>>& items,
    std::vector<std::string>* errors) {
  RevocationSet set;
  for (const auto& [name, spec_text] : items) {
    auto spec = nlohmann::json::parse(spec_text, nullptr, /*allow_exceptions=*/false);
    if (!spec.is_object() || !spec.contains("kind") || !spec["kind"].is_string() ||
        !spec.contains("target") || !spec["target"].is_string()) {
      if (errors) errors->push_back("revocation " + name + ": spec lacks kind/target");
      continue;
    }
    Entry e;
    e.kind = spec["kind"].get<std::string>();
    e.target = spec["target"].get<std::string>();
    if (auto r = spec.find("reason"); r != spec.end() && r->is_string()) e.reason = *r;
    if (auto t = spec.find("revokedAt"); t != spec.end() && t->is_number_integer()) {
      e.revoked_at = FromUnixSeconds(t->get<int64_t>());
    }
    if (e.kind != "node" && e.kind != "identity" && e.kind != "svid" && e.kind != "binding") {
      if (errors) errors->push_back("revocation " + name + ": unknown kind \"" + e.kind + "\"");
      continue;
    }
    const size_t index = set.entries_.size();
    set.entries_.push_back(std::move(e));
    const Entry& stored = set.entries_.back();
    for (auto& serial : JsonStringList(spec, "serials")) set.serials_.emplace(serial, index);
    for (auto& id : JsonStringList(spec, "identities")) set.identities_.emplace(id, index);
    if (stored.kind == "svid") set.serials_.emplace(stored.target, index);
    if (stored.kind == "identity") set.identities_.emplace(stored.target, index);
    if (stored.kind == "binding") set.bindings_.emplace(stored.target, index);
    if (stored.kind == "node") set.nodes_.emplace(stored.target, index);
  }
  return set;
}

const RevocationSet::Entry* RevocationSet::FindSerial(std::string_view serial) const {
  return Lookup(serials_, entries_, serial);
}
const RevocationSet::Entry* RevocationSet::FindIdentity(std::string_view spiffe_id) const {
  return Lookup(identities_, entries_, spiffe_id);
}
const RevocationSet::Entry* RevocationSet::FindBinding(std::string_view binding) const {
  return Lookup(bindings_, entries_, binding);
}
const RevocationSet::Entry* RevocationSet::FindNode(std::string_view node) const {
  return Lookup(nodes_, entries_, node);
}

const RevocationSet::Entry* RevocationSet::FindCertificate(std::string_view serial,
                                                           std::string_view spiffe_id) const {
  if (const Entry* e = FindSerial(serial)) return e;
  return FindIdentity(spiffe_id);
}

const RevocationSet::Entry* RevocationSet::FindCertificate(const Certificate& leaf) const {
  if (entries_.empty()) return nullptr;
  if (const Entry* e = FindSerial(leaf.SerialHex())) return e;
  for (const auto& uri : leaf.UriSans()) {
    if (const Entry* e = FindIdentity(uri)) return e;
  }
  return nullptr;
}

std::string RevocationSet::Describe(const Entry& e) {
  std::string out = e.kind + "/" + e.target + " revoked";
  if (e.revoked_at != TimePoint{}) out += " at " + FormatRfc3339(e.revoked_at);
  if (!e.reason.empty()) out += ": " + e.reason;
  return out;
}

}  // namespace sigil::core
