// Structured log lines (server and agent): "TIME LEVEL event k=v ..." (text) or one JSON object per
// line. Callers pass only non-secret fields; nothing here inspects values. Thread-safe.
#pragma once

#include <mutex>
#include <ostream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sigil {

enum class LogFormat { kText, kJson };

class Logger {
 public:
  Logger(std::ostream& out, LogFormat format) : out_(out), format_(format) {}
  void Info(std::string_view event, const nlohmann::json& fields = nlohmann::json::object()) {
    Write("info", event, fields);
  }
  void Warn(std::string_view event, const nlohmann::json& fields = nlohmann::json::object()) {
    Write("warn", event, fields);
  }
  void Error(std::string_view event, const nlohmann::json& fields = nlohmann::json::object()) {
    Write("error", event, fields);
  }
  void Write(std::string_view level, std::string_view event, const nlohmann::json& fields);

 private:
  std::mutex mu_;
  std::ostream& out_;
  const LogFormat format_;
};

}  // namespace sigil
