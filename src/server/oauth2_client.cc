// FetchToken: one client credentials request over HTTPS with cpp-httplib.
//
// httplib's own certificate check is switched off because, with a custom CA store, it would
// add the system roots to that store as well; OpenSSL verifies instead (SSL_VERIFY_PEER with
// our store and X509_VERIFY_PARAM host/IP check), so a failed check aborts the handshake.
// httplib bounds each connect/read/write but not the whole exchange, nor the number of header
// lines; a watchdog thread stops the client at the deadline.
#include "server/oauth2_client.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include <httplib.h>

#include "common/ossl.h"
#include "core/certificate.h"

namespace sigil::server::oauth2 {
namespace {

// The handshake runs in the calling thread; the verify callback leaves the first certificate
// error here so the failure can say what was wrong rather than "handshake failed".
thread_local int t_verify_error = X509_V_OK;

int RecordVerifyError(int preverify_ok, X509_STORE_CTX* ctx) {
  if (preverify_ok != 1 && t_verify_error == X509_V_OK) {
    t_verify_error = X509_STORE_CTX_get_error(ctx);
  }
  return preverify_ok;
}

Result<void> ConfigureTls(SSL_CTX* ctx, const HttpsUrl& url, const std::string& ca_bundle_pem) {
  if (ctx == nullptr) return Internal("token endpoint client: no TLS context");
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    return OsslError("token endpoint client: TLS 1.2 minimum");
  }
  if (ca_bundle_pem.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      return OsslError("token endpoint client: loading the system roots");
    }
  } else {
    SIGIL_ASSIGN_OR_RETURN(auto certs,
                           core::ParseCertificatesPem(ca_bundle_pem, /*skip_other_blocks=*/true));
    X509StorePtr store(X509_STORE_new());
    if (store == nullptr) return OsslError("token endpoint client: X509_STORE_new");
    for (const auto& cert : certs) {
      if (X509_STORE_add_cert(store.get(), cert.get()) != 1) {
        return OsslError("token endpoint client: caBundle certificate");
      }
    }
    SSL_CTX_set_cert_store(ctx, store.release());  // the context owns it now
  }
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const int named = url.host_is_ip
                        ? X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str())
                        : X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), url.host.size());
  if (named != 1) return OsslError("token endpoint client: expected host name");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, RecordVerifyError);
  return Ok();
}

// Stops `client` (shutting its socket down) if the exchange outlives `timeout`.
class Watchdog {
 public:
  Watchdog(httplib::SSLClient& client, std::chrono::milliseconds timeout)
      : thread_([this, &client, timeout] {
          std::unique_lock lock(mu_);
          if (cv_.wait_for(lock, timeout, [this] { return done_; })) return;
          fired_ = true;
          lock.unlock();
          client.stop();
        }) {}
  ~Watchdog() { Finish(); }
  // Returns whether the deadline passed before the exchange ended.
  bool Finish() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    return fired_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  bool fired_ = false;
  std::thread thread_;  // last: starts after the members it uses exist
};

void WipeString(std::string& s) { OPENSSL_cleanse(s.data(), s.size()); }

Error Scrubbed(const Error& e, const SecretBytes& secret) {
  EndpointFailure text{0, "", e.message()};
  ScrubSecret(text, secret);
  return {e.code(), text.detail};
}

std::string HostHeader(const HttpsUrl& url) {
  std::string host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  if (url.port != 443) host += ":" + std::to_string(url.port);
  return host;
}

}  // namespace

Result<AccessToken> FetchToken(const TokenRequest& request, const ClientOptions& options,
                               EndpointFailure* failure) {
  EndpointFailure local;
  EndpointFailure& f = failure != nullptr ? *failure : local;
  f = EndpointFailure{};
  SIGIL_ASSIGN_OR_RETURN(HttpsUrl url, ParseHttpsUrl(request.token_url));
  const std::string where = url.host + ":" + std::to_string(url.port);

  httplib::SSLClient client(url.host, url.port);
  if (!client.is_valid()) return OsslError("token endpoint client: TLS setup");
  SIGIL_TRY(ConfigureTls(client.ssl_context(), url, request.ca_bundle_pem));
  client.enable_server_certificate_verification(false);  // OpenSSL checks (ConfigureTls)
  client.set_follow_location(false);
  client.set_decompress(false);
  client.set_url_encode(false);
  client.set_keep_alive(false);
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(options.timeout);
  const auto usecs = std::chrono::duration_cast<std::chrono::microseconds>(options.timeout - secs);
  client.set_connection_timeout(secs.count(), usecs.count());
  client.set_read_timeout(secs.count(), usecs.count());
  client.set_write_timeout(secs.count(), usecs.count());

  httplib::Request req;
  req.method = "POST";
  req.path = url.target;
  req.headers.emplace("Host", HostHeader(url));
  req.headers.emplace("Content-Type", "application/x-www-form-urlencoded");
  req.headers.emplace("Accept", "application/json");
  req.headers.emplace("User-Agent", "sigil-server");
  if (request.auth == ClientAuth::kBasic) {
    SecretBytes auth = BasicAuthorization(request.client_id, request.client_secret);
    req.headers.emplace("Authorization", std::string(auth.view()));
  }
  {
    SecretBytes form = FormBody(request);
    req.body.assign(form.view());
  }
  std::string body;
  body.reserve(options.max_response_bytes);  // no reallocation: no stray copies of the token
  bool too_large = false;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (body.size() + n > options.max_response_bytes) {
      too_large = true;
      return false;
    }
    body.append(data, n);
    return true;
  };

  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  t_verify_error = X509_V_OK;
  ClearOsslErrors();
  bool sent = false;
  bool timed_out = false;
  {
    const auto start = std::chrono::steady_clock::now();
    Watchdog watchdog(client, options.timeout);
    sent = client.send(req, res, error);
    // Either the watchdog or one of httplib's own timeouts may end a silent exchange first.
    timed_out = watchdog.Finish() || std::chrono::steady_clock::now() - start >= options.timeout;
  }
  // Our copies of the credentials (httplib's own serialisation buffer is freed unwiped).
  WipeString(req.body);
  for (auto& [name, value] : req.headers) {
    if (name == "Authorization") WipeString(value);
  }

  if (!sent) {
    std::string reason;
    if (too_large) {
      f.http_status = res.status;
      reason =
          "its answer is longer than " + std::to_string(options.max_response_bytes / 1024) + " KiB";
    } else if (timed_out || error == httplib::Error::ConnectionTimeout) {
      reason = "no answer within " + std::to_string(options.timeout.count()) + " ms";
    } else if (t_verify_error != X509_V_OK) {
      reason = std::string("TLS: server certificate refused: ") +
               X509_verify_cert_error_string(t_verify_error);
    } else {
      reason = httplib::to_string(error);
      if (std::string ossl = DrainOsslErrors(); !ossl.empty()) reason += " (" + ossl + ")";
    }
    ClearOsslErrors();
    WipeString(body);
    f.detail = reason;
    ScrubSecret(f, request.client_secret);
    return Unavailable("token endpoint " + where + ": " + f.detail);
  }
  auto token = ParseTokenResponse(res.status, body, &f);
  WipeString(body);
  ScrubSecret(f, request.client_secret);
  if (!token.ok()) return Scrubbed(token.error(), request.client_secret);
  return token;
}

}  // namespace sigil::server::oauth2
