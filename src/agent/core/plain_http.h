// PlainHttpServer: a deliberately small HTTP/1.1 responder for the agent's operator endpoint
// (/healthz, /metrics). One thread, one request per connection (Connection: close), GET and
// HEAD only, request head bounded (8 KiB) and read with a deadline (2 s), so a slow or hostile
// client cannot hold it. The agent uses this instead of a general HTTP library to keep its
// resident set small (see docs/benchmarks.md, "agent memory").
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sigil::agent {

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Parses the request line of `head` (bytes up to the blank line): method and path, or an
// error text. Exposed for tests and fuzzing.
Result<std::pair<std::string, std::string>> ParseRequestLine(std::string_view head);

class PlainHttpServer {
 public:
  // Called on the server thread for GET/HEAD with the path (query string removed).
  using Handler = std::function<HttpReply(std::string_view path)>;

  // Binds host:port (port 0: any free port) and starts serving.
  static Result<std::unique_ptr<PlainHttpServer>> Start(const std::string& host, int port,
                                                        Handler handler);
  ~PlainHttpServer();
  PlainHttpServer(const PlainHttpServer&) = delete;
  PlainHttpServer& operator=(const PlainHttpServer&) = delete;

  int port() const;
  void Stop();

  struct Impl;

 private:
  explicit PlainHttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sigil::agent
