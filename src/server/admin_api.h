// The admin API: HTTPS + JSON over cpp-httplib, mTLS with the admin client certificates.
// See docs/control-plane.md, "Admin API".
//
// TLS 1.2+ with the server's own SVID (spiffe://TD/sigil/server). A client certificate is
// required and must chain to the bundle roots; the caller's role comes from its SPIFFE ID:
//   spiffe://TD/sigil/admin          read-write
//   spiffe://TD/sigil/admin/readonly GET only
// anything else is 403. Routes:
//   POST   /apis/sigil.dev/v1alpha1/apply               multi-document YAML/JSON, atomic
//   GET    /apis/sigil.dev/v1alpha1/<Kind>[/<name>]     canonical JSON, secrets redacted
//   PUT    /apis/sigil.dev/v1alpha1/<Kind>/<name>       metadata.resourceVersion -> 409 on mismatch
//   DELETE /apis/sigil.dev/v1alpha1/<Kind>/<name>
//   POST   /apis/sigil.dev/v1alpha1/credentialsources/<name>/rotate {secret}
//   POST   /api/v1/tokens {node, ttl}    GET /api/v1/nodes
//   GET    /api/v1/audit?since=&identity=&node=&pid=&type=&binding=&limit=
//   GET    /api/v1/audit/verify
// Errors are JSON: {"error": "...", "code": "..."} or, for invalid documents, {"errors": [...]}.
// Request bodies, tokens and secrets are never logged.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "server/control_plane.h"
#include "server/log.h"
#include "server/metrics.h"

namespace sigil::server {

class ServerIdentity;

struct AdminApiOptions {
  std::string host = "127.0.0.1";
  int port = 8443;  // 0 picks a free port
  size_t max_body_bytes = size_t{8} * 1024 * 1024;
  std::vector<std::string> dns_names = {"localhost"};  // server certificate DNS SANs
  // The server's TLS identity, shared with the agent API and renewed by the caller
  // (ServerIdentity::Refresh). Null: the admin API issues its own from `dns_names` (not
  // renewed; for tests and benchmarks). Must outlive the AdminApi.
  ServerIdentity* identity = nullptr;
  // When set, every request counts in sigil_admin_requests_total{method,code}. Must outlive
  // the AdminApi.
  metrics::ServerMetrics* metrics = nullptr;
};

class AdminApi {
 public:
  // Issues the server certificate, binds and starts serving on a background thread.
  static Result<std::unique_ptr<AdminApi>> Start(ControlPlane& control_plane, Logger& log,
                                                 const AdminApiOptions& options);
  ~AdminApi();  // Stop()
  AdminApi(const AdminApi&) = delete;
  AdminApi& operator=(const AdminApi&) = delete;

  const std::string& host() const;
  int port() const;
  // Stops accepting, finishes in-flight requests, joins the listener thread. Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit AdminApi(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sigil::server
