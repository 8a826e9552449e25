#include "dataplane/proxy/inject_audit.h"

#include "common/encoding.h"

namespace sigil::dataplane {

bool InjectAuditBatch::Add(int64_t time_unix_ms, std::string_view method, std::string_view host,
                           std::string_view path) {
  Request r;
  r.time_unix_ms = time_unix_ms;
  r.method = PrintableAscii(method, kMaxField);
  r.host = PrintableAscii(host, kMaxField);
  r.path = PrintableAscii(path, kMaxPath);
  r.path_truncated = path.size() > kMaxPath;
  // Field names, quotes and the time: about 60 bytes of JSON per request besides the strings.
  bytes_ += r.method.size() + r.host.size() + r.path.size() + 64;
  requests_.push_back(std::move(r));
  return requests_.size() >= kMaxRequests || bytes_ >= kMaxBytes;
}

nlohmann::json InjectAuditBatch::Take() {
  nlohmann::json out = nlohmann::json::array();
  for (auto& r : requests_) {
    nlohmann::json j = {{"time_unix_ms", r.time_unix_ms},
                        {"method", std::move(r.method)},
                        {"host", std::move(r.host)},
                        {"path", std::move(r.path)}};
    if (r.path_truncated) j["path_truncated"] = true;
    out.push_back(std::move(j));
  }
  requests_.clear();
  bytes_ = 0;
  return out;
}

}  // namespace sigil::dataplane
