// FetchToken against a real HTTPS token endpoint on loopback (cpp-httplib server, certificates
// from Sigil's own CA code): client authentication on the wire, the CA bundle as the only
// trust, host name checks, the endpoint's errors, size and time bounds.
#include "server/oauth2_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <httplib.h>

#include "common/encoding.h"
#include "core/ca.h"

namespace sigil::server::oauth2 {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kSecret = "cs-Very/Secret+value";

struct Pki {
  core::X509Ca ca;
  core::PrivateKey key;
  core::IssuedX509Svid leaf;
};

Pki MakePki(const std::string& dns) {
  auto td = core::TrustDomain::Parse("example.org");
  auto ca = core::X509Ca::CreateSelfSigned({*td}, Clock::System().Now());
  EXPECT_TRUE(ca.ok());
  auto key = core::PrivateKey::Generate(core::KeyType::kEcP256);
  EXPECT_TRUE(key.ok());
  core::X509SvidRequest req{
      *core::SpiffeId::Parse("spiffe://example.org/idp"), key->Public(), {dns}};
  auto leaf = ca->IssueX509Svid(req, Clock::System().Now());
  EXPECT_TRUE(leaf.ok()) << leaf.error().ToString();
  return Pki{std::move(ca).value(), std::move(key).value(), std::move(leaf).value()};
}

// An HTTPS server on 127.0.0.1 with handlers set by the test.
class Endpoint {
 public:
  explicit Endpoint(const Pki& pki) : server_(pki.leaf.leaf.get(), pki.key.get()) {
    EXPECT_TRUE(server_.is_valid());
    server_.set_keep_alive_max_count(1);
    port_ = server_.bind_to_any_port("127.0.0.1");
    EXPECT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 400 && !server_.is_running(); ++i) std::this_thread::sleep_for(5ms);
    EXPECT_TRUE(server_.is_running());
  }
  ~Endpoint() {
    server_.stop();
    thread_.join();
  }
  httplib::SSLServer& server() { return server_; }
  int port() const { return port_; }
  std::string Url(const std::string& host = "localhost") const {
    return "https://" + host + ":" + std::to_string(port_) + "/oauth2/token?tenant=t1";
  }

 private:
  httplib::SSLServer server_;
  int port_ = 0;
  std::thread thread_;
};

class OAuth2ClientTest : public ::testing::Test {
 protected:
  OAuth2ClientTest() : pki_(MakePki("localhost")), endpoint_(pki_) {}

  TokenRequest Request(ClientAuth auth = ClientAuth::kBasic) {
    TokenRequest r;
    r.token_url = endpoint_.Url();
    r.client_id = "sigil";
    r.client_secret = SecretBytes::Copy(kSecret);
    r.scopes = {"orders.read", "orders.write"};
    r.auth = auth;
    r.ca_bundle_pem = pki_.ca.root().ToPem();
    return r;
  }

  Pki pki_;
  Endpoint endpoint_;
  std::atomic<int> hits_{0};
};

TEST_F(OAuth2ClientTest, BasicClientAuthentication) {
  endpoint_.server().Post(
      "/oauth2/token", [&](const httplib::Request& req, httplib::Response& res) {
        ++hits_;
        EXPECT_EQ(req.get_param_value("tenant"), "t1");
        EXPECT_EQ(req.get_header_value("Content-Type"), "application/x-www-form-urlencoded");
        EXPECT_EQ(req.body, "grant_type=client_credentials&scope=orders.read%20orders.write");
        auto auth = req.get_header_value("Authorization");
        ASSERT_TRUE(auth.starts_with("Basic "));
        auto decoded = Base64Decode(std::string_view(auth).substr(6));
        ASSERT_TRUE(decoded.ok());
        EXPECT_EQ(AsChars(*decoded), "sigil:cs-Very%2FSecret%2Bvalue");
        res.set_content(R"({"access_token":"at-1","token_type":"Bearer","expires_in":60})",
                        "application/json");
      });
  EndpointFailure f;
  auto token = FetchToken(Request(), {}, &f);
  ASSERT_TRUE(token.ok()) << token.error().ToString();
  EXPECT_EQ(token->value.view(), "at-1");
  EXPECT_EQ(token->lifetime, 60s);
  EXPECT_EQ(hits_, 1);
}

TEST_F(OAuth2ClientTest, PostClientAuthentication) {
  endpoint_.server().Post(
      "/oauth2/token", [&](const httplib::Request& req, httplib::Response& res) {
        ++hits_;
        EXPECT_FALSE(req.has_header("Authorization"));
        EXPECT_EQ(req.get_param_value("grant_type"), "client_credentials");
        EXPECT_EQ(req.get_param_value("client_id"), "sigil");
        EXPECT_EQ(req.get_param_value("client_secret"), kSecret);
        EXPECT_EQ(req.get_param_value("scope"), "orders.read orders.write");
        res.set_content(R"({"access_token":"at-2","token_type":"bearer"})", "application/json");
      });
  auto token = FetchToken(Request(ClientAuth::kPost), {}, nullptr);
  ASSERT_TRUE(token.ok()) << token.error().ToString();
  EXPECT_EQ(token->value.view(), "at-2");
  EXPECT_TRUE(token->lifetime_defaulted);
  EXPECT_EQ(hits_, 1);
}

TEST_F(OAuth2ClientTest, RejectionIsReportedWithoutTheSecret) {
  endpoint_.server().Post("/oauth2/token", [&](const httplib::Request&, httplib::Response& res) {
    ++hits_;
    res.status = 401;
    res.set_content(std::string(R"({"error":"invalid_client","error_description":"secret )") +
                        std::string(kSecret) + " is wrong\"}",
                    "application/json");
  });
  EndpointFailure f;
  auto token = FetchToken(Request(), {}, &f);
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(f.http_status, 401);
  EXPECT_EQ(f.oauth_error, "invalid_client");
  EXPECT_EQ(f.detail, "secret [redacted] is wrong");
  EXPECT_EQ(token.error().message().find(kSecret), std::string::npos) << token.error().message();
  EXPECT_NE(token.error().message().find("invalid_client"), std::string::npos);
}

TEST_F(OAuth2ClientTest, OnlyTheCaBundleIsTrusted) {
  endpoint_.server().Post("/oauth2/token", [&](const httplib::Request&, httplib::Response& res) {
    ++hits_;
    res.set_content(R"({"access_token":"at"})", "application/json");
  });
  // Another CA's root as the bundle.
  Pki other = MakePki("localhost");
  TokenRequest r = Request();
  r.ca_bundle_pem = other.ca.root().ToPem();
  EndpointFailure f;
  auto token = FetchToken(r, {}, &f);
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(token.error().message().find("server certificate refused"), std::string::npos)
      << token.error().message();
  EXPECT_EQ(f.http_status, 0);
  // No bundle: the system roots, which do not include the test CA.
  r.ca_bundle_pem.clear();
  EXPECT_FALSE(FetchToken(r, {}, nullptr).ok());
  EXPECT_EQ(hits_, 0);  // the secret was never sent
}

TEST_F(OAuth2ClientTest, HostNameMustMatch) {
  endpoint_.server().Post("/oauth2/token", [&](const httplib::Request&, httplib::Response& res) {
    ++hits_;
    res.set_content(R"({"access_token":"at"})", "application/json");
  });
  TokenRequest r = Request();
  r.token_url = endpoint_.Url("127.0.0.1");  // the certificate names localhost only
  auto token = FetchToken(r, {}, nullptr);
  ASSERT_FALSE(token.ok());
  EXPECT_NE(token.error().message().find("mismatch"), std::string::npos) << token.error().message();
  EXPECT_EQ(hits_, 0);
}

TEST_F(OAuth2ClientTest, OversizedAnswerIsRefused) {
  endpoint_.server().Post("/oauth2/token", [&](const httplib::Request&, httplib::Response& res) {
    ++hits_;
    res.set_content(R"({"access_token":"at","pad":")" + std::string(100 * 1024, 'x') + "\"}",
                    "application/json");
  });
  EndpointFailure f;
  auto token = FetchToken(Request(), {}, &f);
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(token.error().message().find("longer than 64 KiB"), std::string::npos)
      << token.error().message();
  EXPECT_EQ(f.http_status, 200);
}

TEST_F(OAuth2ClientTest, SlowAnswersEndAtTheDeadline) {
  // Silent for longer than the timeout...
  endpoint_.server().Post("/slow", [&](const httplib::Request&, httplib::Response& res) {
    ++hits_;
    std::this_thread::sleep_for(1500ms);
    res.set_content(R"({"access_token":"at"})", "application/json");
  });
  // ...and a trickle that keeps each read under the timeout but the whole past it.
  endpoint_.server().Post("/trickle", [&](const httplib::Request&, httplib::Response& res) {
    ++hits_;
    res.set_chunked_content_provider("application/json",
                                     [](size_t offset, httplib::DataSink& sink) {
                                       if (offset >= 40) {
                                         sink.done();
                                         return true;
                                       }
                                       std::this_thread::sleep_for(100ms);
                                       return sink.write(" ", 1);
                                     });
  });
  for (const char* path : {"/slow", "/trickle"}) {
    TokenRequest r = Request();
    r.token_url = "https://localhost:" + std::to_string(endpoint_.port()) + path;
    const auto start = std::chrono::steady_clock::now();
    auto token = FetchToken(r, ClientOptions{.timeout = 400ms}, nullptr);
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(token.ok()) << path;
    EXPECT_EQ(token.error().code(), ErrorCode::kUnavailable) << path;
    EXPECT_NE(token.error().message().find("no answer within 400 ms"), std::string::npos)
        << path << ": " << token.error().message();
    EXPECT_LT(took, 1300ms) << path;
  }
}

TEST_F(OAuth2ClientTest, NothingListening) {
  TokenRequest r = Request();
  r.token_url = "https://localhost:1/token";
  EndpointFailure f;
  auto token = FetchToken(r, {}, &f);
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(f.http_status, 0);
  EXPECT_FALSE(f.detail.empty());
}

}  // namespace
}  // namespace sigil::server::oauth2
