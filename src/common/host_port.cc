#include "common/host_port.h"

namespace sigil {

Result<std::pair<std::string, int>> SplitHostPort(std::string_view what, std::string_view text) {
  const std::string quoted = std::string(what) + ": \"" + std::string(text) + "\"";
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return InvalidArgument(quoted + " is not HOST:PORT");
  }
  int port = 0;
  for (char c : text.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) return InvalidArgument(quoted + " has a bad port");
    port = port * 10 + (c - '0');
  }
  if (port > 65535) return InvalidArgument(quoted + " has a bad port");
  std::string host(text.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(std::move(host), port);
}

}  // namespace sigil
