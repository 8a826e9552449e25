// oauth2::Broker: cached, single-flight access tokens per CredentialSource.
#include "server/oauth2_broker.h"

namespace sigil::server::oauth2 {

Grant Broker::Copy(const Token& t, bool cached) {
  return Grant{SecretBytes::Copy(t.value.view()), t.type, t.refresh_at, cached};
}

Result<Grant> Broker::Get(const std::string& source, uint64_t version,
                          const std::function<Result<TokenRequest>()>& make_request,
                          EndpointFailure* failure) {
  EndpointFailure local;
  EndpointFailure& f = failure != nullptr ? *failure : local;
  f = EndpointFailure{};
  const auto wait_until = std::chrono::steady_clock::now() + wait_limit_;

  std::unique_lock lock(mu_);
  std::shared_ptr<Flight> flight;
  uint64_t generation = 0;
  // Bounded: each pass either returns or waits for a flight to finish, and waiting stops at
  // wait_until.
  while (true) {
    Entry& entry = entries_[source];
    if (entry.token != nullptr && entry.token->version == version &&
        clock_.Now() < entry.token->refresh_at) {
      return Copy(*entry.token, /*cached=*/true);
    }
    if (entry.flight == nullptr) {
      flight = std::make_shared<Flight>();
      flight->version = version;
      entry.flight = flight;
      generation = entry.generation;
      break;  // this caller fetches
    }
    std::shared_ptr<Flight> other = entry.flight;
    if (!cv_.wait_until(lock, wait_until, [&] { return other->done; })) {
      return Unavailable("credential source " + source +
                         ": another grant's token request is still in progress after " +
                         std::to_string(wait_limit_.count()) + " ms");
    }
    if (other->version == version) {
      if (other->token != nullptr) return Copy(*other->token, /*cached=*/false);
      f = other->failure;
      return *other->error;
    }
    // That fetch was for another version of the source: look again.
  }
  lock.unlock();

  const TimePoint started = clock_.Now();
  EndpointFailure fetch_failure;
  Result<AccessToken> fetched = [&]() -> Result<AccessToken> {
    SIGIL_ASSIGN_OR_RETURN(TokenRequest request, make_request());
    return fetcher_(request, &fetch_failure);
  }();
  std::shared_ptr<Token> token;
  if (fetched.ok()) {
    token = std::make_shared<Token>();
    token->value = std::move(fetched->value);
    token->type = fetched->token_type;
    token->version = version;
    token->refresh_at =
        started + std::chrono::duration_cast<TimePoint::duration>(CacheDuration(fetched->lifetime));
  }

  lock.lock();
  flight->done = true;
  flight->token = token;
  if (!fetched.ok()) {
    flight->error = fetched.error();
    flight->failure = fetch_failure;
  }
  Entry& entry = entries_[source];
  if (entry.flight == flight) entry.flight.reset();
  if (token != nullptr && entry.generation == generation) entry.token = token;
  cv_.notify_all();
  lock.unlock();

  if (!fetched.ok()) {
    f = std::move(fetch_failure);
    return std::move(fetched).error();
  }
  return Copy(*token, /*cached=*/false);
}

bool Broker::Invalidate(const std::string& source) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(source);
  if (it == entries_.end()) return false;
  const bool had = it->second.token != nullptr;
  it->second.token.reset();
  ++it->second.generation;
  if (it->second.flight == nullptr) entries_.erase(it);
  return had;
}

}  // namespace sigil::server::oauth2
