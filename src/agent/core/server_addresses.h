// ServerAddresses: the agent API addresses of the server replicas an agent may use
// (`sigil agent --server HOST:PORT,HOST:PORT,...`; docs/agent.md, "Several server replicas").
//
// The agent talks to one address at a time (sticky). Each selection carries an epoch; when a
// call on the connection of epoch E fails because the server cannot be reached, Advance(E) moves
// to the next address, but only while E is still current, so concurrent failures of the same
// connection advance once. The number of moves since the last success tells the Sync loop when
// every address was tried and its backoff applies again. Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sigil::agent {

inline constexpr size_t kMaxServerAddresses = 32;

// Parses "HOST:PORT[,HOST:PORT...]" (spaces around entries are ignored). Each entry must be
// HOST:PORT with a port in 1-65535; empty entries and duplicates are refused. Errors name `what`
// (the flag or file) and the bad entry.
Result<std::vector<std::string>> ParseServerAddresses(std::string_view what, std::string_view text);
// Checks a list read from elsewhere (node.json) by the same rules.
Result<void> ValidateServerAddresses(std::string_view what,
                                     const std::vector<std::string>& addresses);
// "a,b,c".
std::string JoinServerAddresses(const std::vector<std::string>& addresses);

class ServerAddresses {
 public:
  struct Selection {
    std::string address;
    uint64_t epoch = 0;
  };
  struct Move {
    std::string from, to;
    uint64_t epoch = 0;  // the new epoch
  };

  // `addresses` must be valid and non-empty; `start` (taken modulo the size) is current first.
  explicit ServerAddresses(std::vector<std::string> addresses, size_t start = 0);

  Selection Current() const;
  uint64_t epoch() const;
  size_t size() const { return addresses_.size(); }
  const std::vector<std::string>& all() const { return addresses_; }

  // Moves to the next address if `failed_epoch` is still current and there is another address.
  // nullopt: another caller moved already, or there is only one address.
  std::optional<Move> Advance(uint64_t failed_epoch);
  // The current address answered: the next failure starts a new round.
  void Succeeded();
  // True once every address was tried since the last success (the caller backs off).
  bool RoundComplete() const;
  uint64_t failovers() const;  // moves since start, for /metrics

 private:
  const std::vector<std::string> addresses_;
  mutable std::mutex mu_;
  size_t index_ = 0;                // guarded by mu_
  uint64_t epoch_ = 0;              // guarded by mu_
  size_t moves_since_success_ = 0;  // guarded by mu_
  uint64_t failovers_ = 0;          // guarded by mu_
};

}  // namespace sigil::agent
