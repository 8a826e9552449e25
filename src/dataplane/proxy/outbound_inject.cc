// Outbound `inject`: the workload speaks plain HTTP to an external API's address (or HTTPS,
// which the agent terminates with the node-local CA when the Service sets
// spec.inject.terminateTls); the agent attests the process, picks the CredentialBinding it may
// use for the Service, fetches the grant (the server checks and audits it), originates TLS to
// the real upstream and adds the credential to every request (inject_relay.h). Each request is
// audited with method, host, path (no query), binding, pid, exe and identity. See
// docs/injection.md.
#include <openssl/crypto.h>

#include <mutex>

#include "common/encoding.h"
#include "dataplane/http/error_response.h"
#include "dataplane/inject/intercept_ca.h"
#include "dataplane/inject/sigv4.h"
#include "dataplane/proxy/inject_audit.h"
#include "dataplane/proxy/inject_relay.h"
#include "dataplane/proxy/proxy_impl.h"

namespace sigil::dataplane {

// What one inject connection carries through its steps.
struct InjectConn {
  std::shared_ptr<Outbound> c;
  std::unique_ptr<Endpoint> workload;  // plain, or TLS the agent terminated; loop thread only
  std::string sni;                     // terminated TLS: the server name the workload asked for
  agent::attest::AttestedProcess process;
  InjectBinding binding;
  std::shared_ptr<const InjectCredential> credential;  // loop thread only after setup
};

namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// The Host field without a port ("api.x.com:80" -> "api.x.com", "[::1]:80" -> "::1").
std::string_view HostName(std::string_view host) {
  if (host.starts_with('[')) {
    const size_t end = host.find(']');
    return end == std::string_view::npos ? host : host.substr(1, end - 1);
  }
  const size_t colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

// The address the workload dialled as a Host field would name it ("10.0.0.1", "::1").
std::string DialledHost(const Destination& dst) { return std::string(HostName(dst.str())); }

// Host must name the Service: one of its DNS names (a "*." name covers exactly one more
// label), its tls.sni, or the address the workload dialled.
// `dialled` is DialledHost() of the connection's destination.
bool HostCovered(std::string_view host, const CompiledService& service, std::string_view dialled) {
  const std::string_view name = HostName(host);
  if (name.empty()) return false;
  if (EqualsIgnoreCase(name, dialled)) return true;
  if (!service.tls.sni.empty() && EqualsIgnoreCase(name, service.tls.sni)) return true;
  for (const auto& a : service.addresses) {
    if (a.type != resources::ServiceAddress::Type::kDnsName) continue;
    if (a.host.starts_with("*.")) {
      const std::string_view suffix = std::string_view(a.host).substr(1);  // ".domain"
      if (name.size() > suffix.size() &&
          EqualsIgnoreCase(name.substr(name.size() - suffix.size()), suffix) &&
          name.substr(0, name.size() - suffix.size()).find('.') == std::string_view::npos) {
        return true;
      }
    } else if (EqualsIgnoreCase(name, a.host)) {
      return true;
    }
  }
  return false;
}

// "Bearer {{secret}}" with the secret in place; the result is wiped by the caller's
// rewriter buffers only when they are released (documented in docs/injection.md).
std::string RenderTemplate(const std::string& tmpl, std::string_view secret) {
  static constexpr std::string_view kPlaceholder = "{{secret}}";
  const size_t at = tmpl.find(kPlaceholder);
  if (at == std::string::npos) return tmpl;
  std::string out;
  out.reserve(tmpl.size() + secret.size());
  out.append(tmpl, 0, at);
  out.append(secret);
  out.append(tmpl, at + kPlaceholder.size());
  return out;
}

bool HasCrLf(std::string_view v) {
  return v.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// A peer-supplied string for logs and audit records: printable ASCII, at most 255 bytes.
std::string Printable(std::string_view s) { return PrintableAscii(s, 255); }

// One answer from the agent in place of the upstream's, then the end of the connection: the
// request head is small and the connection fresh, so one non-blocking write carries it.
void AnswerAndClose(Endpoint& workload, int status, const std::string& reason) {
  if (workload.closed()) return;
  const std::string response = http::BuildErrorResponse(status, reason);
  (void)workload.Write(std::span<const char>(response.data(), response.size()));
  (void)workload.ShutdownWrite();
  workload.Close();
}

// --- TLS interception: the workload's handshake --------------------------------------------

// What the server-name callback needs for one workload handshake, and what it found.
struct SniCheck {
  const CompiledService* service = nullptr;
  std::shared_ptr<inject::InterceptCa> ca;
  std::string sni;      // what the workload asked for (printable)
  std::string refused;  // why the callback refused, for the audit ("" when it did not)
};

int SniCheckIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// Chooses the leaf for the name the workload asked for; refuses (unrecognized_name) names the
// Service does not cover, and handshakes without a name.
int OnWorkloadServerName(SSL* ssl, int* alert, void*) {
  auto* check = static_cast<SniCheck*>(SSL_get_ex_data(ssl, SniCheckIndex()));
  if (check == nullptr) {
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (sni == nullptr) {
    check->refused =
        "no TLS server name (SNI): the agent presents certificates for the host "
        "names of Service " +
        check->service->name + " only";
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  check->sni = Printable(sni);
  bool covered = false;
  for (const auto& name : TlsServerNames(*check->service)) {
    covered = covered || inject::InterceptNameMatches(name, sni);
  }
  if (!covered) {
    check->refused =
        "TLS server name \"" + check->sni + "\" is not covered by Service " + check->service->name;
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  auto ctx = check->ca->ContextFor(sni, Clock::System().Now());
  if (!ctx.ok()) {
    check->refused = "TLS server name \"" + check->sni + "\": " + ctx.error().message();
    *alert = ctx.error().code() == ErrorCode::kPermissionDenied ? SSL_AD_UNRECOGNIZED_NAME
                                                                : SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  if (SSL_set_SSL_CTX(ssl, ctx->get()) == nullptr) {
    check->refused = "cannot select the certificate for \"" + check->sni + "\"";
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  return SSL_TLSEXT_ERR_OK;
}

// The context every workload handshake starts with: TLS 1.2+, no tickets or session cache,
// no renegotiation, and the server-name callback that swaps in the leaf's context.
SSL_CTX* WorkloadServerContext() {
  static const SslCtxPtr ctx = [] {
    SslCtxPtr c(SSL_CTX_new(TLS_server_method()));
    if (!c) return c;
    SSL_CTX_set_min_proto_version(c.get(), TLS1_2_VERSION);
    SSL_CTX_set_num_tickets(c.get(), 0);
    SSL_CTX_set_session_cache_mode(c.get(), SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(c.get(), SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    // (The SSL_CTX_set_tlsext_servername_callback macro needs an old-style cast.)
    using ServerNameCb = int (*)(SSL*, int*, void*);
    ServerNameCb cb = OnWorkloadServerName;
    SSL_CTX_callback_ctrl(c.get(), SSL_CTRL_SET_TLSEXT_SERVERNAME_CB,
                          reinterpret_cast<void (*)()>(cb));
    return c;
  }();
  return ctx.get();
}

}  // namespace

// Attest, pick the binding, fetch the grant (off the loop), then originate TLS upstream and
// start the relay. Refusals before the relay answer the workload over conn->workload.
static void AuthorizeInject(Proxy::Impl& self, EventLoop& loop, std::shared_ptr<InjectConn> conn) {
  auto refuse_http = [&self, &loop, conn](int status, const std::string& reason,
                                          const std::string& identity) {
    const Outbound& c = *conn->c;
    self.counters.inject_refused++;
    self.host.Audit(status == 403 ? "dataplane.denied" : "dataplane.refused", identity,
                    c.origin.tgid, c.exe,
                    {{"side", "outbound"},
                     {"dst", c.dst.str()},
                     {"service", c.service->name},
                     {"code", status},
                     {"reason", reason}});
    self.log.Warn("dataplane.inject.refused", [&] {
      nlohmann::json f = c.Fields();
      f["code"] = status;
      f["reason"] = reason;
      return f;
    }());
    // The workload gets an HTTP answer (over its TLS when the agent terminated it), not a bare
    // reset.
    loop.Post([conn, status, reason] { AnswerAndClose(*conn->workload, status, reason); });
  };
  self.workers->Submit([&self, &loop, conn, refuse_http] {
    auto c = conn->c;
    auto process = self.host.Attest(c->origin.tgid);
    if (!process.ok()) return refuse_http(403, "attestation: " + process.error().message(), "");
    if (process->uid != c->origin.uid) {
      return refuse_http(403, "process uid changed since connect", "");
    }
    c->exe = process->exe_path;
    auto bindings = self.host.InjectBindings(*process, c->service->name);
    if (bindings.empty()) {
      return refuse_http(
          403, "no CredentialBinding of Service " + c->service->name + " allows this process", "");
    }
    conn->process = *process;
    conn->binding = bindings.front();  // sorted by name: a stable choice
    auto credential = self.host.FetchInjectCredential(conn->binding.name, *process);
    if (!credential.ok()) {
      return refuse_http(403, "binding " + conn->binding.name + ": " + credential.error().message(),
                         "");
    }
    conn->credential = *credential;
    c->source_id = conn->credential->spiffe_id();
    loop.Post([&self, &loop, conn] {
      self.ConnectUpstreamTls(
          loop, conn->c, [&self, &loop, conn](Result<std::unique_ptr<Endpoint>> ep) {
            if (!ep.ok()) {
              // 502 with the reason; the handshake failure is already logged.
              return AnswerAndClose(*conn->workload, 502, "upstream TLS: " + ep.error().message());
            }
            self.StartInject(loop, conn, std::move(*ep));
          });
    });
  });
}

// TLS interception: completes the workload's handshake with a leaf for the name it asked for
// (which the Service must cover), then continues like the plaintext path over that TLS.
static void TerminateWorkloadTls(Proxy::Impl& self, EventLoop& loop,
                                 std::shared_ptr<InjectConn> conn) {
  auto c = conn->c;
  auto refuse_tls = [&self, c](const std::string& reason, const std::string& sni) {
    self.counters.inject_refused++;
    self.log.Warn("dataplane.inject.tls_refused", [&] {
      nlohmann::json f = c->Fields();
      f["reason"] = reason;
      if (!sni.empty()) f["sni"] = sni;
      return f;
    }());
    self.workers->Submit([&self, c, reason, sni] {
      auto process = self.host.Attest(c->origin.tgid);  // for the exe; it may be gone
      nlohmann::json details = {{"side", "outbound"},           {"dst", c->dst.str()},
                                {"service", c->service->name},  {"tls", "intercepted"},
                                {"alert", "unrecognized_name"}, {"reason", reason}};
      if (!sni.empty()) details["sni"] = sni;
      self.host.Audit("dataplane.refused", "", c->origin.tgid,
                      process.ok() ? process->exe_path : "", details);
    });
  };
  SSL_CTX* base = WorkloadServerContext();
  if (!self.options.intercept_ca || base == nullptr) {
    refuse_tls("TLS interception is not enabled on this node", "");
    return AbortSocket(std::move(c->workload));
  }
  auto check = std::make_shared<SniCheck>();
  check->service = c->service;
  check->ca = self.options.intercept_ca;
  SslPtr ssl(SSL_new(base));
  if (!ssl || SSL_set_ex_data(ssl.get(), SniCheckIndex(), check.get()) != 1) {
    refuse_tls("cannot set up the workload's TLS", "");
    return AbortSocket(std::move(c->workload));
  }
  SSL_set_accept_state(ssl.get());
  AsyncTlsHandshake(loop, std::move(c->workload), std::move(ssl), self.options.handshake_timeout,
                    [&self, &loop, conn, check, refuse_tls](Result<std::unique_ptr<Endpoint>> ep) {
                      if (!ep.ok()) {
                        if (!check->refused.empty()) return refuse_tls(check->refused, check->sni);
                        // The workload gave up (it does not trust the node CA, or went away):
                        // logged only.
                        self.counters.outbound_failed++;
                        nlohmann::json f = conn->c->Fields();
                        f["error"] = ep.error().message();
                        if (!check->sni.empty()) f["sni"] = check->sni;
                        self.log.Warn("dataplane.inject.tls_failed", f);
                        return;
                      }
                      // The check dies with this callback; the SSL lives on (no renegotiation can
                      // call the server-name callback again, but leave nothing dangling).
                      if (SSL* held = (*ep)->ssl()) SSL_set_ex_data(held, SniCheckIndex(), nullptr);
                      conn->workload = std::move(*ep);
                      conn->sni = check->sni;
                      AuthorizeInject(self, loop, conn);
                    });
}

void Proxy::Impl::OriginateInject(EventLoop& loop, std::shared_ptr<Outbound> c) {
  auto conn = std::make_shared<InjectConn>();
  conn->c = c;
  if (c->service->terminate_tls) return TerminateWorkloadTls(*this, loop, std::move(conn));
  conn->workload = Endpoint::Plain(std::move(c->workload));
  AuthorizeInject(*this, loop, std::move(conn));
}

namespace {

// The injected requests of one connection not yet audited, and the timer that reports them
// (loop thread only). See inject_audit.h.
struct InjectAudit {
  static constexpr std::chrono::milliseconds kMaxDelay{250};
  InjectAuditBatch batch;
  std::string identity;  // of every request in the batch
  EventLoop::TimerId timer = 0;
};

// Reports the batch as one dataplane.inject record.
void FlushInjectAudit(ProxyHost& host, EventLoop& loop, const InjectConn& conn, InjectAudit& a) {
  if (a.timer != 0) {
    loop.CancelTimer(a.timer);
    a.timer = 0;
  }
  if (a.batch.empty()) return;
  const Outbound& c = *conn.c;
  // Written as text, like the batch (inject_audit.h). Resource names are validated, but go
  // through the same quoting as the peer's strings.
  std::string details = "{\"binding\":";
  AppendPrintableAsciiJson(details, conn.binding.name, conn.binding.name.size());
  details += ",\"service\":";
  AppendPrintableAsciiJson(details, c.service->name, c.service->name.size());
  if (!conn.sni.empty()) details += ",\"tls\":\"intercepted\"";
  details += ",\"requests\":";
  details += a.batch.Take();
  details.push_back('}');
  host.AuditJson("dataplane.inject", a.identity, c.origin.tgid, c.exe, std::move(details));
}

}  // namespace

void Proxy::Impl::StartInject(EventLoop& loop, std::shared_ptr<InjectConn> conn,
                              std::unique_ptr<Endpoint> upstream) {
  // Audits one request forwarded with the credential: into the connection's batch, reported
  // when full, after InjectAudit::kMaxDelay, or when the connection ends.
  auto pending = std::make_shared<InjectAudit>();
  auto audit = [this, &loop, conn, pending](const http::RequestHead& head,
                                            const std::string& host_value) {
    counters.inject_requests++;
    const std::string& identity = conn->credential->spiffe_id();  // on_head checked it is set
    if (!pending->batch.empty() && pending->identity != identity) {
      FlushInjectAudit(host, loop, *conn, *pending);  // a renewed credential, another identity
    }
    pending->identity = identity;
    const std::string_view target = head.target;
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               Clock::System().Now().time_since_epoch())
                               .count();
    if (pending->batch.Add(now_ms, head.method, host_value, target.substr(0, target.find('?')))) {
      return FlushInjectAudit(host, loop, *conn, *pending);
    }
    if (pending->timer == 0) {
      pending->timer = loop.AddTimer(
          InjectAudit::kMaxDelay, [this, &loop, conn, weak = std::weak_ptr<InjectAudit>(pending)] {
            auto a = weak.lock();
            if (!a) return;
            a->timer = 0;
            FlushInjectAudit(host, loop, *conn, *a);
          });
    }
  };
  // Signs `head` with SigV4: the body's hash when `body` is given, UNSIGNED-PAYLOAD otherwise.
  auto sign = [conn](http::RequestHead& head,
                     std::optional<std::string_view> body) -> std::optional<http::HeadVerdict> {
    const InjectBinding& b = conn->binding;
    inject::SigV4Params params;
    params.region = b.region;
    params.service = b.aws_service;
    params.time = Clock::System().Now();
    params.uri_mode = inject::DefaultUriMode(b.aws_service);
    // A signed body hash goes on the wire too (X-Amz-Content-SHA256), so the upstream and
    // anyone reading the audit of the exchange see what was signed.
    params.content_sha256_header = body.has_value();
    inject::SigV4Request req;
    req.method = head.method;
    const std::string_view target = head.target;
    const size_t q = target.find('?');
    req.path = target.substr(0, q);
    if (q != std::string_view::npos) req.query = target.substr(q + 1);
    req.headers = head.headers;
    req.body = body;
    inject::AwsCredentials aws;
    aws.access_key_id = conn->credential->attribute("accessKeyId");
    Result<inject::SigV4Result> signed_headers = Internal("not signed");
    conn->credential->WithSecret([&](std::string_view secret, std::string_view token) {
      aws.secret_access_key = SecretBytes::Copy(secret);
      aws.session_token = SecretBytes::Copy(token);
      signed_headers = inject::SignV4(req, aws, params);
    });
    if (!signed_headers.ok()) {
      return http::HeadVerdict::Reject(400, "SigV4: " + signed_headers.error().message());
    }
    for (auto& f : signed_headers->set) head.Add(std::move(f.name), std::move(f.value));
    return std::nullopt;
  };
  InjectHooks hooks;
  // Formatted once: every request's Host is checked against it.
  hooks.on_head = [conn, audit, sign, dialled = DialledHost(conn->c->dst)](
                      http::RequestHead& head, const http::RequestInfo& info) -> http::HeadVerdict {
    const Outbound& c = *conn->c;
    const http::HeaderField* host_field = head.Find("host");
    const std::string host_value = host_field ? host_field->value : "";
    if (!HostCovered(host_value, *c.service, dialled)) {
      return http::HeadVerdict::Reject(
          403, "host \"" + host_value + "\" is not covered by Service " + c.service->name);
    }
    if (!conn->credential) {
      return http::HeadVerdict::Reject(
          403, "the credential for binding " + conn->binding.name + " is no longer granted");
    }
    const InjectBinding& b = conn->binding;
    std::optional<http::HeadVerdict> refused;
    if (b.kind == InjectBinding::Kind::kHeader) {
      head.Remove(b.header_name);  // whatever the workload sent for this binding
      conn->credential->WithSecret([&](std::string_view secret, std::string_view) {
        std::string value = RenderTemplate(b.header_template, secret);
        if (HasCrLf(value)) {
          refused = http::HeadVerdict::Reject(502, "the credential cannot be sent in a header");
        } else {
          head.Add(b.header_name, std::move(value));
        }
        OPENSSL_cleanse(value.data(), value.size());
      });
    } else {
      for (std::string_view name : inject::SigV4Result::kReplaced) head.Remove(name);
      if (inject::DefaultUriMode(b.aws_service) != inject::UriMode::kS3) {
        // Every service but S3 needs the payload's hash: hold the request until its body is
        // in (at most 64 KiB; larger is 413), then sign in on_body.
        return http::HeadVerdict::BufferBody();
      }
      // S3: a body goes out as UNSIGNED-PAYLOAD, streamed.
      const bool no_body = info.body.kind == http::BodyKind::kNone ||
                           (info.body.kind == http::BodyKind::kLength && info.body.length == 0);
      refused =
          sign(head, no_body ? std::optional<std::string_view>(std::string_view()) : std::nullopt);
    }
    if (refused) return *refused;
    audit(head, host_value);
    return http::HeadVerdict::Forward();
  };
  hooks.on_body = [conn, audit, sign](http::RequestHead& head, const http::RequestInfo&,
                                      std::string_view body) -> http::HeadVerdict {
    if (!conn->credential) {
      return http::HeadVerdict::Reject(
          403, "the credential for binding " + conn->binding.name + " is no longer granted");
    }
    if (auto refused = sign(head, body)) return *refused;
    const http::HeaderField* host_field = head.Find("host");
    audit(head, host_field ? host_field->value : "");
    return http::HeadVerdict::Forward();
  };
  hooks.on_refused = [this, conn](int status, const std::string& reason) {
    const Outbound& c = *conn->c;
    counters.inject_refused++;
    host.Audit(status == 403 ? "dataplane.denied" : "dataplane.refused",
               conn->credential ? conn->credential->spiffe_id() : "", c.origin.tgid, c.exe,
               {{"side", "outbound"},
                {"binding", conn->binding.name},
                {"service", c.service->name},
                {"code", status},
                {"reason", reason}});
    nlohmann::json f = c.Fields();
    f["code"] = status;
    f["reason"] = reason;
    log.Warn("dataplane.inject.refused", f);
  };
  hooks.fresh = [conn] { return conn->credential && conn->credential->current(); };
  hooks.refresh = [this, conn](std::function<void()> done) {
    workers->Submit([this, conn, done = std::move(done)] {
      auto next = host.FetchInjectCredential(conn->binding.name, conn->process);
      auto fresh = next.ok() ? *next : nullptr;
      if (!next.ok()) {
        log.Warn("dataplane.inject.credential_lost",
                 {{"binding", conn->binding.name}, {"error", next.error().message()}});
      }
      // The relay is paused while refreshing (neither on_head nor fresh runs), and done()
      // posts to its loop, which orders this write before the loop's next read.
      conn->credential = std::move(fresh);
      done();
    });
  };
  hooks.on_end = [this, &loop, conn, pending](const std::string&) {
    FlushInjectAudit(host, loop, *conn, *pending);
    counters.active_relays--;
  };
  counters.active_relays++;
  // Read ahead: one read(2) takes a whole response (header and body records) instead of one
  // for each record's header and one for its body.
  if (SSL* ssl = upstream->ssl()) SSL_set_read_ahead(ssl, 1);
  StartInjectRelay(loop, std::move(conn->workload), std::move(upstream), std::move(hooks),
                   options.idle_timeout);
}

}  // namespace sigil::dataplane
