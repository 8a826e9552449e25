// Outbound `inject`: the workload speaks plain HTTP to an external API's address; the agent
// attests the process, picks the CredentialBinding it may use for the Service, fetches the
// grant (the server checks and audits it), originates TLS to the real upstream and adds the
// credential to every request (inject_relay.h). Each request is audited with method, host,
// path (no query), binding, pid, exe and identity. See docs/injection.md.
#include <openssl/crypto.h>

#include <mutex>

#include "dataplane/http/error_response.h"
#include "dataplane/inject/sigv4.h"
#include "dataplane/proxy/inject_relay.h"
#include "dataplane/proxy/proxy_impl.h"

namespace sigil::dataplane {

// What one inject connection carries through its steps.
struct InjectConn {
  std::shared_ptr<Outbound> c;
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

// Host must name the Service: one of its DNS names (a "*." name covers exactly one more
// label), its tls.sni, or the address the workload dialled.
bool HostCovered(std::string_view host, const CompiledService& service, const Destination& dst) {
  const std::string_view name = HostName(host);
  if (name.empty()) return false;
  std::string dialled = dst.str();
  dialled = std::string(HostName(dialled));
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

}  // namespace

void Proxy::Impl::OriginateInject(EventLoop& loop, std::shared_ptr<Outbound> c) {
  auto refuse_http = [this, &loop, c](int status, const std::string& reason,
                                      const std::string& identity) {
    counters.inject_refused++;
    host.Audit(status == 403 ? "dataplane.denied" : "dataplane.refused", identity, c->origin.tgid,
               c->exe,
               {{"side", "outbound"},
                {"dst", c->dst.str()},
                {"service", c->service->name},
                {"code", status},
                {"reason", reason}});
    log.Warn("dataplane.inject.refused", [&] {
      nlohmann::json f = c->Fields();
      f["code"] = status;
      f["reason"] = reason;
      return f;
    }());
    loop.Post([c, status, reason] {
      // The workload gets an HTTP answer, not a bare reset: the request head is small and the
      // socket is fresh, so one non-blocking send carries the whole response.
      const std::string response = http::BuildErrorResponse(status, reason);
      (void)::send(c->workload.get(), response.data(), response.size(),
                   MSG_NOSIGNAL | MSG_DONTWAIT);
      ::shutdown(c->workload.get(), SHUT_WR);
      c->workload.Reset();
    });
  };
  workers->Submit([this, &loop, c, refuse_http] {
    auto process = host.Attest(c->origin.tgid);
    if (!process.ok()) return refuse_http(403, "attestation: " + process.error().message(), "");
    if (process->uid != c->origin.uid) {
      return refuse_http(403, "process uid changed since connect", "");
    }
    c->exe = process->exe_path;
    auto bindings = host.InjectBindings(*process, c->service->name);
    if (bindings.empty()) {
      return refuse_http(
          403, "no CredentialBinding of Service " + c->service->name + " allows this process", "");
    }
    auto conn = std::make_shared<InjectConn>();
    conn->c = c;
    conn->process = *process;
    conn->binding = bindings.front();  // sorted by name: a stable choice
    auto credential = host.FetchInjectCredential(conn->binding.name, *process);
    if (!credential.ok()) {
      return refuse_http(403, "binding " + conn->binding.name + ": " + credential.error().message(),
                         "");
    }
    conn->credential = *credential;
    c->source_id = conn->credential->spiffe_id();
    loop.Post([this, &loop, conn] {
      ConnectUpstreamTls(loop, conn->c, [this, &loop, conn](Result<std::unique_ptr<Endpoint>> ep) {
        if (!ep.ok()) {
          // 502 with the reason; the handshake failure is already logged.
          const std::string response =
              http::BuildErrorResponse(502, "upstream TLS: " + ep.error().message());
          (void)::send(conn->c->workload.get(), response.data(), response.size(),
                       MSG_NOSIGNAL | MSG_DONTWAIT);
          return conn->c->workload.Reset();
        }
        StartInject(loop, conn, std::move(*ep));
      });
    });
  });
}

void Proxy::Impl::StartInject(EventLoop& loop, std::shared_ptr<InjectConn> conn,
                              std::unique_ptr<Endpoint> upstream) {
  InjectHooks hooks;
  hooks.on_head = [this, conn](http::RequestHead& head,
                               const http::RequestInfo& info) -> http::HeadVerdict {
    const Outbound& c = *conn->c;
    const http::HeaderField* host_field = head.Find("host");
    const std::string host_value = host_field ? host_field->value : "";
    if (!HostCovered(host_value, *c.service, c.dst)) {
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
      inject::SigV4Params params;
      params.region = b.region;
      params.service = b.aws_service;
      params.time = Clock::System().Now();
      params.uri_mode = inject::DefaultUriMode(b.aws_service);
      inject::SigV4Request req;
      req.method = head.method;
      const std::string_view target = head.target;
      const size_t q = target.find('?');
      req.path = target.substr(0, q);
      if (q != std::string_view::npos) req.query = target.substr(q + 1);
      req.headers = head.headers;
      const bool no_body = info.body.kind == http::BodyKind::kNone ||
                           (info.body.kind == http::BodyKind::kLength && info.body.length == 0);
      if (no_body) {
        req.body = std::string_view();
      } else if (params.uri_mode != inject::UriMode::kS3) {
        // Only S3 accepts UNSIGNED-PAYLOAD; other services need the body's hash, which the
        // agent does not buffer yet.
        return http::HeadVerdict::Reject(
            501, "SigV4 for " + b.aws_service + " requests with a body is not supported yet");
      }
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
    }
    if (refused) return *refused;
    counters.inject_requests++;
    const std::string_view target = head.target;
    host.Audit("dataplane.inject", conn->credential->spiffe_id(), c.origin.tgid, c.exe,
               {{"binding", b.name},
                {"service", c.service->name},
                {"method", head.method},
                {"host", host_value},
                {"path", std::string(target.substr(0, target.find('?')))}});
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
  hooks.on_end = [this](const std::string&) { counters.active_relays--; };
  counters.active_relays++;
  StartInjectRelay(loop, Endpoint::Plain(std::move(conn->c->workload)), std::move(upstream),
                   std::move(hooks), options.idle_timeout);
}

}  // namespace sigil::dataplane
