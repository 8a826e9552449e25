#include "dataplane/proxy/inject_audit.h"

#include "common/encoding.h"

namespace sigil::dataplane {

bool InjectAuditBatch::Add(int64_t time_unix_ms, std::string_view method, std::string_view host,
                           std::string_view path) {
  if (count_ > 0) json_.push_back(',');
  json_ += "{\"time_unix_ms\":";
  json_ += std::to_string(time_unix_ms);
  json_ += ",\"method\":";
  AppendPrintableAsciiJson(json_, method, kMaxField);
  json_ += ",\"host\":";
  AppendPrintableAsciiJson(json_, host, kMaxField);
  json_ += ",\"path\":";
  AppendPrintableAsciiJson(json_, path, kMaxPath);
  if (path.size() > kMaxPath) json_ += ",\"path_truncated\":true";
  json_.push_back('}');
  ++count_;
  return count_ >= kMaxRequests || json_.size() >= kMaxBytes;
}

std::string InjectAuditBatch::Take() {
  std::string out;
  out.reserve(json_.size() + 2);
  out.push_back('[');
  out += json_;
  out.push_back(']');
  json_.clear();  // keeps its capacity for the next batch
  count_ = 0;
  return out;
}

}  // namespace sigil::dataplane
