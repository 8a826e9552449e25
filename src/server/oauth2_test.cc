// OAuth 2.0 client credentials without the network: token URL, request body and client
// authentication, the endpoint's answers, cache timing, and the broker's cache and
// single-flight behaviour (fake clock, fake fetcher).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "common/encoding.h"
#include "server/oauth2_broker.h"
#include "server/oauth2_token.h"

namespace sigil::server::oauth2 {
namespace {

using namespace std::chrono_literals;

TEST(OAuth2UrlTest, ParsesHostPortAndTarget) {
  auto u = ParseHttpsUrl("https://idp.example.com/oauth2/token");
  ASSERT_TRUE(u.ok()) << u.error().ToString();
  EXPECT_EQ(u->host, "idp.example.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/oauth2/token");
  EXPECT_FALSE(u->host_is_ip);

  u = ParseHttpsUrl("https://localhost:8443");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 8443);
  EXPECT_EQ(u->target, "/");

  u = ParseHttpsUrl("https://127.0.0.1:9/t?tenant=a+b");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->host_is_ip);
  EXPECT_EQ(u->target, "/t?tenant=a+b");

  u = ParseHttpsUrl("https://[::1]:8443?x=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_TRUE(u->host_is_ip);
  EXPECT_EQ(u->target, "/?x=1");

  for (const char* bad : {"http://idp/token", "https://", "https://:443/", "https://h:0/",
                          "https://h:65536/", "https://h:/", "https://u@h/", "https://h/#f",
                          "https://[::1/", "https://[nothex]/", "https://h/a b"}) {
    EXPECT_FALSE(ParseHttpsUrl(bad).ok()) << bad;
  }
}

TEST(OAuth2RequestTest, FormBodyAndBasicAuthorization) {
  TokenRequest r;
  r.client_id = "sigil app";
  r.client_secret = SecretBytes::Copy(std::string_view("s3cr:t/+&="));
  EXPECT_EQ(FormBody(r).view(), "grant_type=client_credentials");
  r.scopes = {"orders.read", "orders.write"};
  EXPECT_EQ(FormBody(r).view(), "grant_type=client_credentials&scope=orders.read%20orders.write");
  r.auth = ClientAuth::kPost;
  EXPECT_EQ(FormBody(r).view(),
            "grant_type=client_credentials&scope=orders.read%20orders.write"
            "&client_id=sigil%20app&client_secret=s3cr%3At%2F%2B%26%3D");

  // RFC 6749 2.3.1: both parts form-encoded, then "id:secret" in base64.
  SecretBytes basic = BasicAuthorization(r.client_id, r.client_secret);
  ASSERT_TRUE(basic.view().starts_with("Basic "));
  auto decoded = Base64Decode(basic.view().substr(6));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(AsChars(*decoded), "sigil%20app:s3cr%3At%2F%2B%26%3D");
  SecretBytes plain = BasicAuthorization("id", SecretBytes::Copy(std::string_view("pw")));
  EXPECT_EQ(plain.view(), "Basic aWQ6cHc=");

  EXPECT_EQ(ClientAuthFromName("client_secret_basic"), ClientAuth::kBasic);
  EXPECT_EQ(ClientAuthFromName("client_secret_post"), ClientAuth::kPost);
  EXPECT_FALSE(ClientAuthFromName("private_key_jwt").has_value());
}

TEST(OAuth2ResponseTest, Token) {
  auto t = ParseTokenResponse(
      200, R"({"access_token":"eyJ.abc-_~+/=","token_type":"Bearer","expires_in":3600})", nullptr);
  ASSERT_TRUE(t.ok()) << t.error().ToString();
  EXPECT_EQ(t->value.view(), "eyJ.abc-_~+/=");
  EXPECT_EQ(t->token_type, "Bearer");
  EXPECT_EQ(t->lifetime, 3600s);
  EXPECT_FALSE(t->lifetime_defaulted);

  // Lower-case type, string and fractional expires_in, extra members, no type at all.
  t = ParseTokenResponse(200, R"({"access_token":"a","token_type":"bearer","expires_in":"120"})",
                         nullptr);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->token_type, "bearer");
  EXPECT_EQ(t->lifetime, 120s);
  t = ParseTokenResponse(200, R"({"access_token":"a","expires_in":2.5,"scope":"x y"})", nullptr);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->lifetime, 2500ms);
  EXPECT_EQ(t->token_type, "Bearer");
  t = ParseTokenResponse(200, R"({"access_token":"a","token_type":"Bearer"})", nullptr);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->lifetime_defaulted);
  EXPECT_EQ(t->lifetime, kDefaultLifetime);
  t = ParseTokenResponse(200, R"({"access_token":"a","expires_in":1e300})", nullptr);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->lifetime, Millis(int64_t{365} * 24 * 3600 * 1000));
}

TEST(OAuth2ResponseTest, UnusableTokenAnswers) {
  const std::string big(kMaxAccessTokenBytes + 1, 'a');
  for (std::string body :
       {std::string("not json"), std::string("[]"), std::string(R"({"token_type":"Bearer"})"),
        std::string(R"({"access_token":""})"), std::string(R"({"access_token":42})"),
        std::string(R"({"access_token":"has space"})"),
        std::string(R"({"access_token":"crlf\r\nX: y"})"),
        std::string(R"({"access_token":"caf\u00e9"})"),
        std::string(R"({"access_token":")") + big + "\"}",
        std::string(R"({"access_token":"a","token_type":"mac"})"),
        std::string(R"({"access_token":"a","token_type":7})"),
        std::string(R"({"access_token":"a","expires_in":0})"),
        std::string(R"({"access_token":"a","expires_in":-5})"),
        std::string(R"({"access_token":"a","expires_in":"soon"})"),
        std::string(R"({"access_token":"a","expires_in":[1]})")}) {
    EndpointFailure f;
    auto t = ParseTokenResponse(200, body, &f);
    ASSERT_FALSE(t.ok()) << body;
    EXPECT_EQ(t.error().code(), ErrorCode::kUnavailable) << body;
    EXPECT_EQ(f.http_status, 200);
    EXPECT_FALSE(f.detail.empty());
    EXPECT_TRUE(t.error().message().starts_with("token endpoint answered HTTP 200 but "))
        << t.error().message();
  }
}

TEST(OAuth2ResponseTest, ErrorAnswers) {
  EndpointFailure f;
  auto t = ParseTokenResponse(
      401, R"({"error":"invalid_client","error_description":"Client authentication failed"})", &f);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(t.error().message(),
            "token endpoint answered HTTP 401: invalid_client (Client authentication failed)");
  EXPECT_EQ(f.http_status, 401);
  EXPECT_EQ(f.oauth_error, "invalid_client");
  EXPECT_EQ(f.detail, "Client authentication failed");

  t = ParseTokenResponse(400, R"({"error":"invalid_scope"})", &f);
  EXPECT_EQ(t.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(f.oauth_error, "invalid_scope");
  EXPECT_TRUE(f.detail.empty());

  for (int status : {500, 503, 429, 408, 302}) {
    t = ParseTokenResponse(status, "<html>busy</html>", &f);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().code(), ErrorCode::kUnavailable) << status;
    EXPECT_EQ(f.http_status, status);
    EXPECT_TRUE(f.oauth_error.empty());
  }

  // Control characters and overlong text from the endpoint are neutralised.
  t = ParseTokenResponse(
      400, R"({"error":"bad\r\nline","error_description":")" + std::string(1000, 'x') + "\"}", &f);
  EXPECT_EQ(f.oauth_error, "bad??line");
  EXPECT_EQ(f.detail.size(), 256u + 3u);
  EXPECT_EQ(t.error().message().find('\n'), std::string::npos);

  // A 200 status with an error body is still not a token.
  EXPECT_FALSE(ParseTokenResponse(200, R"({"error":"invalid_client"})", nullptr).ok());
}

TEST(OAuth2ResponseTest, ScrubSecretFromFailure) {
  SecretBytes secret = SecretBytes::Copy(std::string_view("hunter2-secret"));
  EndpointFailure f{401, "x-hunter2-secret", "client hunter2-secret is wrong, hunter2-secret"};
  ScrubSecret(f, secret);
  EXPECT_EQ(f.oauth_error, "x-[redacted]");
  EXPECT_EQ(f.detail, "client [redacted] is wrong, [redacted]");
}

TEST(OAuth2CacheTest, CacheDuration) {
  EXPECT_EQ(CacheDuration(3600s), 3240s);  // 10 % margin
  EXPECT_EQ(CacheDuration(300s), 270s);    // 30 s margin
  EXPECT_EQ(CacheDuration(120s), 90s);
  EXPECT_EQ(CacheDuration(60s), 30s);
  EXPECT_EQ(CacheDuration(35s), 17500ms);  // margin capped at half the lifetime
  EXPECT_EQ(CacheDuration(6s), 3s);
  EXPECT_EQ(CacheDuration(2s), 1s);
  EXPECT_EQ(CacheDuration(Millis(0)), Millis(0));
  EXPECT_EQ(CacheDuration(Millis(int64_t{7} * 24 * 3600 * 1000)), 24h);  // at most a day
}

// A fetcher that counts calls and answers with numbered tokens.
struct FakeEndpoint {
  std::atomic<int> calls{0};
  Millis lifetime = 3600s;
  std::optional<Error> fail;
  EndpointFailure failure;
  Millis delay{0};

  Fetcher AsFetcher() {
    return [this](const TokenRequest& r, EndpointFailure* f) -> Result<AccessToken> {
      const int n = ++calls;
      if (delay > Millis(0)) std::this_thread::sleep_for(delay);
      if (fail) {
        *f = failure;
        return *fail;
      }
      EXPECT_EQ(r.client_secret.view(), "client-secret");
      AccessToken t;
      t.value = SecretBytes::Copy("token-" + std::to_string(n));
      t.token_type = "Bearer";
      t.lifetime = lifetime;
      return t;
    };
  }
};

std::function<Result<TokenRequest>()> Request() {
  return [] {
    TokenRequest r;
    r.token_url = "https://idp.example/token";
    r.client_id = "sigil";
    r.client_secret = SecretBytes::Copy(std::string_view("client-secret"));
    return Result<TokenRequest>(std::move(r));
  };
}

TEST(OAuth2BrokerTest, CachesUntilShortlyBeforeExpiry) {
  FakeClock clock(FromUnixSeconds(1800000000));
  FakeEndpoint idp;
  idp.lifetime = 3600s;
  Broker broker(clock, idp.AsFetcher());
  auto a = broker.Get("partner", 7, Request(), nullptr);
  ASSERT_TRUE(a.ok()) << a.error().ToString();
  EXPECT_EQ(a->token.view(), "token-1");
  EXPECT_FALSE(a->cached);
  EXPECT_EQ(a->refresh_at, FromUnixSeconds(1800000000) + 3240s);
  EXPECT_EQ(idp.calls, 1);

  clock.Advance(3239s);
  auto b = broker.Get("partner", 7, Request(), nullptr);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->token.view(), "token-1");
  EXPECT_TRUE(b->cached);
  EXPECT_EQ(idp.calls, 1);

  clock.Advance(1s);  // at refresh_at: fetch anew
  auto c = broker.Get("partner", 7, Request(), nullptr);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->token.view(), "token-2");
  EXPECT_FALSE(c->cached);
  EXPECT_EQ(idp.calls, 2);

  // Short-lived tokens: a 2 s token is served for 1 s.
  idp.lifetime = 2s;
  auto d = broker.Get("short", 1, Request(), nullptr);
  EXPECT_EQ(d->refresh_at, clock.Now() + 1s);
  clock.Advance(999ms);
  EXPECT_TRUE(broker.Get("short", 1, Request(), nullptr)->cached);
  clock.Advance(1ms);
  EXPECT_FALSE(broker.Get("short", 1, Request(), nullptr)->cached);
  EXPECT_EQ(idp.calls, 4);
}

TEST(OAuth2BrokerTest, NewSourceVersionAndInvalidateFetchAnew) {
  FakeClock clock(FromUnixSeconds(1800000000));
  FakeEndpoint idp;
  Broker broker(clock, idp.AsFetcher());
  EXPECT_EQ(broker.Get("s", 1, Request(), nullptr)->token.view(), "token-1");
  EXPECT_EQ(broker.Get("s", 1, Request(), nullptr)->token.view(), "token-1");
  EXPECT_EQ(broker.Get("s", 2, Request(), nullptr)->token.view(), "token-2");  // changed source
  EXPECT_EQ(broker.Get("other", 2, Request(), nullptr)->token.view(), "token-3");
  EXPECT_TRUE(broker.Invalidate("s"));
  EXPECT_FALSE(broker.Invalidate("s"));
  EXPECT_FALSE(broker.Invalidate("never-seen"));
  EXPECT_EQ(broker.Get("s", 2, Request(), nullptr)->token.view(), "token-4");
  EXPECT_EQ(broker.Get("other", 2, Request(), nullptr)->token.view(), "token-3");
  EXPECT_EQ(idp.calls, 4);
}

TEST(OAuth2BrokerTest, FailuresAreNotCached) {
  FakeClock clock(FromUnixSeconds(1800000000));
  FakeEndpoint idp;
  idp.fail = FailedPrecondition("token endpoint answered HTTP 401: invalid_client");
  idp.failure = {401, "invalid_client", ""};
  Broker broker(clock, idp.AsFetcher());
  EndpointFailure f;
  auto a = broker.Get("s", 1, Request(), &f);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(f.http_status, 401);
  EXPECT_EQ(f.oauth_error, "invalid_client");
  idp.fail.reset();
  auto b = broker.Get("s", 1, Request(), &f);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->token.view(), "token-2");
  EXPECT_EQ(f.http_status, 0);  // reset on success

  // A request that cannot be built (secret unreadable) is the fetch's error.
  auto c = broker.Get(
      "t", 1, [] { return Result<TokenRequest>(Internal("no blob")); }, &f);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message(), "no blob");
  EXPECT_EQ(idp.calls, 2);
}

TEST(OAuth2BrokerTest, ConcurrentGrantsShareOneFetch) {
  FakeClock clock(FromUnixSeconds(1800000000));
  FakeEndpoint idp;
  idp.delay = 300ms;
  Broker broker(clock, idp.AsFetcher());
  constexpr int kThreads = 8;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::atomic<int> fetched{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      auto g = broker.Get("s", 1, Request(), nullptr);
      if (g.ok() && g->token.view() == "token-1") ++ok;
      if (g.ok() && !g->cached) ++fetched;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(idp.calls, 1);
  EXPECT_EQ(ok, kThreads);
  // Every caller that waited for the fetch got it as fetched (not from the cache), unless it
  // arrived after the fetch finished.
  EXPECT_GE(fetched, 1);

  // A failing endpoint: concurrent callers share the one failure.
  idp.fail = Unavailable("token endpoint answered HTTP 503");
  idp.failure = {503, "", ""};
  threads.clear();
  std::atomic<int> failed{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      EndpointFailure f;
      auto g = broker.Get("down", 1, Request(), &f);
      if (!g.ok() && f.http_status == 503) ++failed;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed, kThreads);
  EXPECT_LE(idp.calls, 1 + kThreads);
  EXPECT_GE(idp.calls, 2);
}

TEST(OAuth2BrokerTest, WaitersGiveUpAtTheWaitLimit) {
  FakeClock clock(FromUnixSeconds(1800000000));
  FakeEndpoint idp;
  idp.delay = 1500ms;
  Broker broker(clock, idp.AsFetcher(), 200ms);
  std::thread leader([&] { EXPECT_TRUE(broker.Get("s", 1, Request(), nullptr).ok()); });
  // Let the leader start its fetch (bounded wait).
  for (int i = 0; i < 200 && idp.calls == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(idp.calls, 1);
  const auto start = std::chrono::steady_clock::now();
  auto waiter = broker.Get("s", 1, Request(), nullptr);
  const auto waited = std::chrono::steady_clock::now() - start;
  leader.join();
  ASSERT_FALSE(waiter.ok());
  EXPECT_EQ(waiter.error().code(), ErrorCode::kUnavailable);
  EXPECT_LT(waited, 1000ms);
  EXPECT_EQ(idp.calls, 1);
}

TEST(OAuth2BrokerTest, InvalidateDuringAFetchKeepsItsResultOutOfTheCache) {
  FakeClock clock(FromUnixSeconds(1800000000));
  FakeEndpoint idp;
  idp.delay = 300ms;
  Broker broker(clock, idp.AsFetcher());
  std::thread leader([&] {
    auto g = broker.Get("s", 1, Request(), nullptr);
    EXPECT_EQ(g->token.view(), "token-1");  // its caller still gets it
  });
  for (int i = 0; i < 200 && idp.calls == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(idp.calls, 1);
  broker.Invalidate("s");  // e.g. rotation committed while the old secret was in use
  leader.join();
  idp.delay = Millis(0);
  EXPECT_EQ(broker.Get("s", 1, Request(), nullptr)->token.view(), "token-2");
}

}  // namespace
}  // namespace sigil::server::oauth2
