"""End to end: the server's OAuth 2.0 token broker, `sigil credential rotate` and
`sigil audit --binding`, against the real `sigil server`.

The token endpoint is written for this test: Python's http.server wrapped in TLS with a test CA
made by python3-cryptography, in a thread of the test process, on 127.0.0.1 port 0, named
`localhost` in its certificate. It implements the client credentials grant (RFC 6749 4.4) just
far enough to check what the server sends: client authentication (HTTP Basic with form-encoded
parts, or client_secret_post), grant_type and scope; it counts requests per path, hands out
numbered tokens with a configurable expires_in, answers 401 invalid_client for a wrong secret
(echoing the presented secret in error_description, which the server must not store), and can
be slowed down to observe single-flight fetches.

FetchCredential is called over gRPC as a joined node (grpcio; the join and client plumbing come
from test_agent_api.py). Resources, rotation and audit go through the real CLI.

Run: SIGIL_BIN=build/release/apps/sigil/sigil /usr/bin/python3 tests/server/test_oauth2_broker.py
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import secrets
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "interop"))

import helpers  # noqa: E402
import test_agent_api as base  # noqa: E402

TD = base.TD
RPC_TIMEOUT = 20.0  # FetchCredential may wait for the token endpoint
CLIENT_ID = "sigil-e2e"
CLIENT_SECRET = "cs-e2e-" + secrets.token_urlsafe(24)
ROTATED_SECRET = "cs-rotated-" + secrets.token_urlsafe(24)
BAD_SECRET = "cs-wrong-" + secrets.token_urlsafe(24)
STATIC_OLD = "sk-static-old-" + secrets.token_urlsafe(24)
STATIC_NEW = "sk-static-new-" + secrets.token_urlsafe(24)
ALL_SECRETS = (CLIENT_SECRET, ROTATED_SECRET, BAD_SECRET, STATIC_OLD, STATIC_NEW)
ML_SELECTORS = ["unix:uid:2000"]
ML_ID = f"spiffe://{TD}/ml/node-a/trainer"


# --------------------------------------------------------------------------------------------
# Test PKI and the token endpoint
# --------------------------------------------------------------------------------------------

def make_pki(directory: Path) -> tuple[Path, Path, str]:
    """A CA and a server certificate for DNS:localhost. Returns (cert, key, CA PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oauth2 e2e test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_f, key_f = directory / "idp.crt", directory / "idp.key"
    cert_f.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_f.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cert_f, key_f, ca.public_bytes(serialization.Encoding.PEM).decode()


class TokenEndpoint:
    """A client credentials token endpoint over TLS. Thread-safe counters and settings."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.lock = threading.Lock()
        self.accepted_secret = CLIENT_SECRET
        self.expires_in: object = 3600
        self.delay = 0.0
        self.hits: dict[str, int] = {}
        self.requests: list[dict] = []
        self.issued = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(min(length, 65536)).decode()
                endpoint.handle(self, urllib.parse.urlsplit(self.path).path, body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits.get(path, 0)

    def last_request(self, path: str) -> dict:
        with self.lock:
            return [r for r in self.requests if r["path"] == path][-1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    # The grant --------------------------------------------------------------------------

    def handle(self, h: http.server.BaseHTTPRequestHandler, path: str, body: str) -> None:
        form = urllib.parse.parse_qs(body, keep_blank_values=True)
        auth = h.headers.get("Authorization", "")
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            self.requests.append({"path": path, "form": form, "authorization": auth,
                                  "content_type": h.headers.get("Content-Type", "")})
            delay, accepted, expires_in = self.delay, self.accepted_secret, self.expires_in
        if delay:
            time.sleep(delay)
        client_id = secret = None
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            client_id, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)
        elif "client_secret" in form:
            client_id, secret = form.get("client_id", [""])[0], form["client_secret"][0]
        if form.get("grant_type") != ["client_credentials"]:
            return self.reply(h, 400, {"error": "unsupported_grant_type"})
        if client_id != CLIENT_ID or secret != accepted:
            # Echoes what it was sent: the server must keep it out of its records.
            return self.reply(h, 401, {"error": "invalid_client",
                                       "error_description": f"client secret {secret} is wrong"})
        with self.lock:
            self.issued += 1
            token = f"at-{self.issued}-{secrets.token_urlsafe(12)}"
        return self.reply(h, 200, {"access_token": token, "token_type": "Bearer",
                                   "expires_in": expires_in})

    @staticmethod
    def reply(h: http.server.BaseHTTPRequestHandler, status: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Cache-Control", "no-store")
        h.end_headers()
        h.wfile.write(data)


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------

def indent(text: str, n: int) -> str:
    return "".join(" " * n + line + "\n" for line in text.strip().splitlines())


class OAuth2BrokerTest(base.AgentApiCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        try:
            cert, key, cls.ca_pem = make_pki(cls.tmp)
            cls.idp = TokenEndpoint(cert, key)
            cls._cleanups.append(cls.idp.stop)
        except BaseException:
            cls._class_cleanup()
            raise

    # --- helpers -------------------------------------------------------------------------

    def oauth2_source(self, name: str, path: str, secret: str, extra: str = "") -> str:
        return f"""\
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: {name}}}
spec:
  type: oauth2-client-credentials
  tokenUrl: {self.idp.url(path)}
  clientId: {CLIENT_ID}
  clientSecret: "{secret}"
  scopes: [orders.read, orders.write]
{extra}  caBundle: |
{indent(self.ca_pem, 4)}"""

    @staticmethod
    def binding(name: str, source: str) -> str:
        return f"""\
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: {name}}}
spec:
  source: {source}
  service: partner
  identities: ["spiffe://{TD}/ml/*"]
  delivery:
    header: {{name: Authorization, template: "Bearer {{{{secret}}}}"}}
"""

    def apply_base(self) -> None:
        self.apply(f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: ml-trainer}}
spec:
  spiffeId: spiffe://{TD}/ml/{{{{node}}}}/trainer
  selectors: [unix:uid:2000]
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: partner}}
spec:
  mode: inject
  addresses: ["api.partner.example:80"]
  tls: {{port: 443}}
""")

    def fetch(self, binding: str, pid: int, exe: str = "/usr/bin/trainer"):
        req = self.pb.FetchCredentialRequest(
            binding=binding, process=self.process(pid, 2000, ML_SELECTORS, exe=exe))
        return self.joined()["stub"].FetchCredential(req, timeout=RPC_TIMEOUT)

    def must_fetch(self, binding: str, pid: int, what: str):
        try:
            return self.fetch(binding, pid)
        except self.grpc.RpcError as e:
            self.fail(f"FetchCredential({binding}) {what}: {e.code().name}: {e.details()}")

    def grant_record(self, pid: int) -> dict:
        records = self.audit(type="credential.grant", pid=pid)
        self.assertEqual(len(records), 1, f"credential.grant records for pid {pid}: {records}")
        return records[0]

    def assert_no_secret_anywhere(self) -> None:
        log = self.server.output
        audit = self.cli("audit", "--limit", "10000").stdout
        files = [f for f in sorted(self.data.rglob("*")) if f.is_file()]
        for secret in ALL_SECRETS:
            self.assertNotIn(secret, log, "a secret is in the server's log")
            self.assertNotIn(secret, audit, "a secret is in the audit log")
            for f in files:
                self.assertNotIn(secret.encode(), f.read_bytes(),
                                 f"a secret is in clear in {f.relative_to(self.data)}")

    # --- 1. fetch, cache, refresh ----------------------------------------------------------

    def test_01_token_fetched_cached_and_refreshed(self):
        self.apply_base()
        self.apply(self.oauth2_source("partner-oauth", "/oauth2/token", CLIENT_SECRET) + "---\n"
                   + self.binding("partner-api", "partner-oauth"))
        # 6 s tokens are served from the cache for 3 s (margin: half the lifetime).
        with self.idp.lock:
            self.idp.expires_in = 6
        path = "/oauth2/token"
        first = self.must_fetch("partner-api", 41001, "(first)")
        fetched_at = time.monotonic()
        self.assertEqual(self.idp.count(path), 1, "the first grant must fetch a token")
        self.assertTrue(first.secret.startswith(b"at-"), first.secret[:8])
        self.assertEqual(first.source_type, "oauth2-client-credentials")
        self.assertEqual(first.source, "partner-oauth")
        self.assertEqual(first.spiffe_id, ML_ID)
        self.assertEqual(first.attributes.get("tokenType"), "Bearer")
        self.assertLessEqual(first.expires_at, time.time() + 4,
                             "the grant must end when the server's cache refreshes")

        # What went over the wire: RFC 6749 4.4 with HTTP Basic client authentication.
        req = self.idp.last_request(path)
        self.assertEqual(req["form"].get("grant_type"), ["client_credentials"])
        self.assertEqual(req["form"].get("scope"), ["orders.read orders.write"])
        self.assertNotIn("client_secret", req["form"], "the secret went into the body too")
        self.assertEqual(req["content_type"], "application/x-www-form-urlencoded")
        user, _, password = base64.b64decode(req["authorization"][6:]).decode().partition(":")
        self.assertEqual((user, password), (CLIENT_ID, CLIENT_SECRET))

        second = self.must_fetch("partner-api", 41002, "(second, cached)")
        self.assertLess(time.monotonic() - fetched_at, 2.5, "the second call came too late")
        self.assertEqual(second.secret, first.secret, "the second grant must reuse the token")
        self.assertEqual(self.idp.count(path), 1, "the second grant reached the endpoint")

        time.sleep(max(0.0, fetched_at + 3.4 - time.monotonic()))
        third = self.must_fetch("partner-api", 41003, "(after the refresh point)")
        self.assertEqual(self.idp.count(path), 2, "no new token after the refresh point")
        self.assertNotEqual(third.secret, first.secret)

        self.assertEqual(self.grant_record(41001)["details"].get("token_cached"), False)
        self.assertEqual(self.grant_record(41002)["details"].get("token_cached"), True)
        self.assertEqual(self.grant_record(41003)["details"].get("token_cached"), False)
        for pid in (41001, 41002, 41003):
            rec = self.grant_record(pid)
            self.assertEqual(rec["details"].get("binding"), "partner-api")
            self.assertEqual(rec["identity"], ML_ID)
            self.assertNotIn(third.secret.decode(), json.dumps(rec))

    # --- 2. single flight --------------------------------------------------------------------

    def test_02_concurrent_grants_share_one_fetch(self):
        self.apply_base()
        self.apply(self.oauth2_source("partner-slow", "/slow/token", CLIENT_SECRET) + "---\n"
                   + self.binding("partner-slow-api", "partner-slow"))
        with self.idp.lock:
            self.idp.expires_in, self.idp.delay = 3600, 1.0
        results: list = []
        lock = threading.Lock()

        def one(pid: int) -> None:
            try:
                r = self.fetch("partner-slow-api", pid)
                out = r.secret
            except self.grpc.RpcError as e:
                out = e
            with lock:
                results.append(out)

        try:
            threads = [threading.Thread(target=one, args=(42001 + i,)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=RPC_TIMEOUT + 5)
        finally:
            with self.idp.lock:
                self.idp.delay = 0.0
        self.assertEqual(len(results), 6, "a FetchCredential call did not return")
        errors = [r for r in results if not isinstance(r, bytes)]
        self.assertFalse(errors, f"failed grants: {[(e.code().name, e.details()) for e in errors]}")
        self.assertEqual(len(set(results)), 1, "concurrent grants got different tokens")
        self.assertEqual(self.idp.count("/slow/token"), 1,
                         "six concurrent grants made more than one token request")

    # --- 3. a refusing endpoint ----------------------------------------------------------------

    def test_03_wrong_client_secret_is_denied_and_audited_without_it(self):
        self.apply_base()
        self.apply(self.oauth2_source("partner-bad", "/bad/token", BAD_SECRET) + "---\n"
                   + self.binding("partner-bad-api", "partner-bad"))
        e = self.assert_rpc_code(lambda: self.fetch("partner-bad-api", 43001),
                                 [self.grpc.StatusCode.FAILED_PRECONDITION],
                                 "FetchCredential with a wrong client secret")
        self.assertIn("invalid_client", e.details())
        self.assertIn("401", e.details())
        self.assertNotIn(BAD_SECRET, e.details(), "the secret is in the gRPC error")
        self.assertEqual(self.idp.count("/bad/token"), 1)
        denied = self.audit(type="credential.denied", pid=43001)
        self.assertEqual(len(denied), 1, f"credential.denied records: {denied}")
        d = denied[0]["details"]
        self.assertEqual(d.get("binding"), "partner-bad-api")
        self.assertEqual(d.get("source"), "partner-bad")
        self.assertEqual(d.get("http_status"), 401)
        self.assertEqual(d.get("oauth_error"), "invalid_client")
        self.assertIn("[redacted]", d.get("reason", ""),
                      "the endpoint echoed the secret; the reason should show it redacted")
        self.assertNotIn(BAD_SECRET, json.dumps(denied))
        self.assertFalse(self.audit(type="credential.grant", pid=43001))
        # Failures are not cached: the next grant asks again.
        self.assert_rpc_code(lambda: self.fetch("partner-bad-api", 43002),
                             [self.grpc.StatusCode.FAILED_PRECONDITION], "second try")
        self.assertEqual(self.idp.count("/bad/token"), 2)

    # --- 4. client_secret_post ------------------------------------------------------------------

    def test_04_client_secret_post(self):
        self.apply_base()
        self.apply(self.oauth2_source("partner-post", "/post/token", CLIENT_SECRET,
                                      extra="  clientAuthMethod: client_secret_post\n")
                   + "---\n" + self.binding("partner-post-api", "partner-post"))
        self.must_fetch("partner-post-api", 44001, "with client_secret_post")
        req = self.idp.last_request("/post/token")
        self.assertEqual(req["authorization"], "", "client_secret_post sent an Authorization")
        self.assertEqual(req["form"].get("client_id"), [CLIENT_ID])
        self.assertEqual(req["form"].get("client_secret"), [CLIENT_SECRET])
        got = json.loads(self.cli("get", "CredentialSource", "partner-post", "-o", "json").stdout)
        self.assertEqual(got["spec"]["clientAuthMethod"], "client_secret_post")
        self.assertEqual(got["spec"]["clientSecret"], "[redacted]")

    # --- 5. rotation ------------------------------------------------------------------------------

    def source_version(self, name: str) -> int:
        got = json.loads(self.cli("get", "CredentialSource", name, "-o", "json").stdout)
        return int(got["metadata"]["resourceVersion"])

    def test_05_rotate_static_source(self):
        self.apply_base()
        self.apply(f"""\
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: static-key}}
spec: {{type: static, value: "{STATIC_OLD}"}}
---
""" + self.binding("static-api", "static-key"))
        self.assertEqual(self.must_fetch("static-api", 45001, "before rotation").secret,
                         STATIC_OLD.encode())
        version = self.source_version("static-key")
        j = self.joined()
        call, q = base.AgentApiTest._open_sync(self, j["stub"])
        snap = base.AgentApiTest._next_sync(self, q, lambda m: m.snapshot, base.DELTA_TIMEOUT,
                                            "the snapshot")

        new_file = self.tmp / "new-static-secret"
        new_file.write_text(STATIC_NEW + "\n")  # one trailing newline is not part of it
        out = self.cli("credential", "rotate", "static-key", "--from-file", new_file).stdout
        self.assertIn("CredentialSource/static-key rotated", out)
        self.assertNotIn(STATIC_NEW, out)

        delta = base.AgentApiTest._next_sync(
            self, q, lambda m: "static-key" in m.changed_credential_sources, base.DELTA_TIMEOUT,
            "changed_credential_sources naming static-key")
        self.assertGreater(delta.revision, snap.revision)
        call.cancel()
        self.assertGreater(self.source_version("static-key"), version,
                           "rotation did not move the source's resource version")
        self.assertEqual(self.must_fetch("static-api", 45002, "after rotation").secret,
                         STATIC_NEW.encode(), "FetchCredential still returns the old secret")

        rotated = self.audit(type="credential.rotated")
        rec = [r for r in rotated if r["details"].get("source") == "static-key"]
        self.assertEqual(len(rec), 1, f"credential.rotated records: {rotated}")
        self.assertEqual(rec[0]["details"].get("field"), "spec.value")
        self.assertEqual(rec[0]["actor"], f"spiffe://{TD}/sigil/admin")
        self.assertNotIn(STATIC_NEW, json.dumps(rotated))
        self.assertNotIn(STATIC_OLD, json.dumps(rotated))

        # The same through stdin (without a trailing newline this time).
        r = self.cli("credential", "rotate", "static-key", "--from-stdin", input=STATIC_NEW)
        self.assertIn("rotated", r.stdout)
        self.assertEqual(self.must_fetch("static-api", 45003, "after stdin rotation").secret,
                         STATIC_NEW.encode())

    def test_06_rotate_oauth2_source_drops_the_cached_token(self):
        self.apply_base()
        self.apply(self.oauth2_source("partner-rot", "/rot/token", CLIENT_SECRET) + "---\n"
                   + self.binding("partner-rot-api", "partner-rot"))
        with self.idp.lock:
            self.idp.expires_in = 3600
        first = self.must_fetch("partner-rot-api", 46001, "before rotation")
        self.assertEqual(self.idp.count("/rot/token"), 1)
        # The identity provider now only accepts the new secret; the cached token still serves.
        with self.idp.lock:
            self.idp.accepted_secret = ROTATED_SECRET
        try:
            self.assertEqual(self.must_fetch("partner-rot-api", 46002, "cached").secret,
                             first.secret)
            self.assertEqual(self.idp.count("/rot/token"), 1)
            out = self.cli("credential", "rotate", "partner-rot", "--from-stdin",
                           input=ROTATED_SECRET + "\n").stdout
            self.assertIn("cached access token dropped", out)
            after = self.must_fetch("partner-rot-api", 46003, "after rotation")
            self.assertEqual(self.idp.count("/rot/token"), 2, "rotation kept the cached token")
            self.assertNotEqual(after.secret, first.secret)
            user, _, password = base64.b64decode(
                self.idp.last_request("/rot/token")["authorization"][6:]).decode().partition(":")
            self.assertEqual(password, ROTATED_SECRET, "the new client secret was not used")
        finally:
            with self.idp.lock:
                self.idp.accepted_secret = CLIENT_SECRET
        rec = [r for r in self.audit(type="credential.rotated")
               if r["details"].get("source") == "partner-rot"]
        self.assertEqual(len(rec), 1)
        self.assertEqual(rec[0]["details"].get("field"), "spec.clientSecret")

    def test_07_rotate_errors(self):
        self.apply_base()
        self.apply("""\
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {name: vault-jwt}
spec: {type: jwt, audience: vault}
""")
        secret_file = self.tmp / "rotate-errors-secret"
        secret_file.write_text("x-new-value\n")
        r = self.cli("credential", "rotate", "no-such-source", "--from-file", secret_file,
                     check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('credential source "no-such-source" not found', r.stderr)
        r = self.cli("credential", "rotate", "vault-jwt", "--from-file", secret_file, check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn('"vault-jwt" is type jwt', r.stderr)
        r = self.cli("credential", "rotate", "vault-jwt", check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--from-file or --from-stdin", r.stderr)
        r = self.cli("credential", "rotate", "a", "--from-file", secret_file, "--from-stdin",
                     check=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        r = self.cli("credential", "rotate", "vault-jwt", "--from-stdin", input="\n",
                     check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("empty", r.stderr)
        r = helpers.run([self.sigil_bin, "credential", "rotate", "--help"])
        self.assertIn("--from-stdin", r.stdout)
        self.assertIn("credential.rotated", r.stdout)

    # --- 6. audit --binding -----------------------------------------------------------------------

    def test_08_audit_binding(self):
        self.apply_base()
        self.apply(f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: billing}}
spec:
  spiffeId: spiffe://{TD}/billing/app
  selectors: [unix:uid:3000]
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: audit-key}}
spec: {{type: static, value: "{STATIC_OLD}"}}
---
""" + self.binding("audit-api", "audit-key"))
        self.must_fetch("audit-api", 48001, "grant one")
        req = self.pb.FetchCredentialRequest(
            binding="audit-api", process=self.process(48002, 2000, ML_SELECTORS,
                                                      exe="/opt/other/tool"))
        self.call(self.joined()["stub"].FetchCredential, req, "grant two")
        # A denial for the same binding: a process whose identity the binding does not allow.
        req = self.pb.FetchCredentialRequest(
            binding="audit-api", process=self.process(48003, 3000, ["unix:uid:3000"],
                                                      exe="/usr/bin/billing"))
        self.assert_rpc_code(lambda: self.joined()["stub"].FetchCredential(
            req, timeout=RPC_TIMEOUT), [self.grpc.StatusCode.PERMISSION_DENIED], "denied")
        # Another binding of the same source: its records stay out.
        self.apply(self.binding("audit-api-2", "audit-key"))
        self.must_fetch("audit-api-2", 48004, "other binding")

        records = self.audit(binding="audit-api")
        self.assertEqual([r["pid"] for r in records], [48001, 48002, 48003],
                         [(r["type"], r["pid"]) for r in records])
        self.assertTrue(all(r["details"].get("binding") == "audit-api" for r in records))
        self.assertEqual([r["type"] for r in records],
                         ["credential.grant", "credential.grant", "credential.denied"])

        text = self.cli("audit", "--binding", "audit-api").stdout
        lines = text.splitlines()
        self.assertEqual(lines[0].split("\t"),
                         ["TIME", "TYPE", "NODE", "PID", "EXE", "IDENTITY", "ENDPOINT", "DETAIL"])
        self.assertEqual(len(lines), 4, text)
        rows = {int(ln.split("\t")[3]): ln.split("\t") for ln in lines[1:]}
        grant = rows[48001]
        self.assertEqual(grant[1], "credential.grant")
        self.assertEqual(grant[2], self.NODE)
        self.assertEqual(grant[4], "/usr/bin/trainer")
        self.assertEqual(grant[5], ML_ID)
        self.assertEqual(grant[6], "-", "a grant has no endpoint")
        self.assertIn("source=audit-key", grant[7])
        datetime.datetime.fromisoformat(grant[0].replace("Z", "+00:00"))
        self.assertEqual(rows[48002][4], "/opt/other/tool")
        denial = rows[48003]
        self.assertEqual(denial[1], "credential.denied")
        self.assertEqual(denial[4], "/usr/bin/billing")
        self.assertEqual(denial[5], f"spiffe://{TD}/billing/app")
        self.assertIn("none of the process's", denial[7])
        self.assertNotIn("48004", text)
        self.assertNotIn(STATIC_OLD, text)
        self.assertEqual(self.audit(binding="no-such-binding"), [])
        self.assertIn("--binding", helpers.run([self.sigil_bin, "audit", "--help"]).stdout)

    # --- last -------------------------------------------------------------------------------------

    def test_99_no_secret_in_logs_db_or_audit(self):
        self.assertIn("ok", self.cli("audit", "verify").stdout)
        self.assert_no_secret_anywhere()
        # A clean stop (under ASan this is also the leak check of the broker's state).
        self.server.proc.send_signal(signal.SIGTERM)
        rc = self.server.wait_exit(timeout=15)
        self.assertEqual(rc, 0, f"server exit status after SIGTERM\n{self.server.output}")
        for secret in ALL_SECRETS:
            self.assertNotIn(secret, self.server.output, "a secret is in the server's log")
            for f in (f for f in sorted(self.data.rglob("*")) if f.is_file()):
                self.assertNotIn(secret.encode(), f.read_bytes(),
                                 f"a secret is in clear in {f.relative_to(self.data)} after stop")


if __name__ == "__main__":
    helpers.main()
