// The server's cache of OAuth 2.0 access tokens, one per CredentialSource.
//
// A token is served from memory until CacheDuration(lifetime) after the request that fetched
// it was sent, and only for the resource version of the source it was fetched for (a changed
// source - rotation, a new tokenUrl or scopes, on this server or another replica - is fetched
// anew). Fetches are single-flight per source: concurrent grants wait for the one request in
// progress and share its result, its failure included, so a slow or failing endpoint sees
// one request at a time from this server, not one per grant. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/clock.h"
#include "common/result.h"
#include "common/secret_bytes.h"
#include "server/oauth2_token.h"

namespace sigil::server::oauth2 {

// Performs one token request (FetchToken in the server; tests pass their own).
using Fetcher = std::function<Result<AccessToken>(const TokenRequest&, EndpointFailure*)>;

struct Grant {
  SecretBytes token;
  std::string token_type;
  TimePoint refresh_at;  // the cache fetches a new token from then on; grants end there
  bool cached = false;   // served from the cache (false: fetched, for this call or a peer)
};

class Broker {
 public:
  // `wait_limit`: how long a caller waits for another caller's fetch before giving up.
  Broker(const Clock& clock, Fetcher fetcher,
         std::chrono::milliseconds wait_limit = std::chrono::milliseconds(15000))
      : clock_(clock), fetcher_(std::move(fetcher)), wait_limit_(wait_limit) {}

  // The access token for `source` at resource `version`. `make_request` is called only by
  // the caller that fetches (it unseals the client secret); its error is that fetch's error.
  // On failure `failure` says what the endpoint answered (status 0: no answer).
  Result<Grant> Get(const std::string& source, uint64_t version,
                    const std::function<Result<TokenRequest>()>& make_request,
                    EndpointFailure* failure);

  // Drops the cached token of `source` (rotation, deletion). A fetch in progress completes
  // for its waiters but is not cached. Returns whether a token was cached.
  bool Invalidate(const std::string& source);

 private:
  struct Token {
    SecretBytes value;
    std::string type;
    uint64_t version = 0;
    TimePoint refresh_at;
  };
  struct Flight {
    uint64_t version = 0;
    bool done = false;
    std::shared_ptr<const Token> token;  // on success
    std::optional<Error> error;          // on failure
    EndpointFailure failure;
  };
  struct Entry {
    std::shared_ptr<const Token> token;
    std::shared_ptr<Flight> flight;  // the fetch in progress, if any
    uint64_t generation = 0;         // bumped by Invalidate
  };
  static Grant Copy(const Token& t, bool cached);

  const Clock& clock_;
  const Fetcher fetcher_;
  const std::chrono::milliseconds wait_limit_;
  std::mutex mu_;
  std::condition_variable cv_;            // a flight finished
  std::map<std::string, Entry> entries_;  // guarded by mu_; one per source name seen
};

}  // namespace sigil::server::oauth2
