#include "common/log.h"

#include "common/clock.h"
#include "common/duration.h"

namespace sigil {

void Logger::Write(std::string_view level, std::string_view event, const nlohmann::json& fields) {
  std::string time = FormatRfc3339(Clock::System().Now());
  std::string line;
  if (format_ == LogFormat::kJson) {
    nlohmann::json j = {{"time", time}, {"level", level}, {"event", event}};
    if (fields.is_object()) {
      for (const auto& [k, v] : fields.items()) j[k] = v;
    }
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = time + " " + std::string(level) + " " + std::string(event);
    if (fields.is_object()) {
      for (const auto& [k, v] : fields.items()) {
        line += " " + k + "=" +
                (v.is_string() ? nlohmann::json(v.get<std::string>())
                                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                               : v.dump());
      }
    }
  }
  std::lock_guard lock(mu_);
  out_ << line << "\n" << std::flush;
}

}  // namespace sigil
