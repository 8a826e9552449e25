"""`sigil server` end to end: the real binary on ephemeral ports, driven by the real CLI.

Covers the admin API through `sigil apply|get|delete|token|audit`: atomic multi-document apply,
validation errors naming document index and field path with the store unchanged, the read-only
role, mTLS refusal of a foreign client certificate, join tokens and their audit, SIGTERM
shutdown, and restart on the same data directory (same CA, no private key in sigil.db).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "interop"))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402

TD = "example.org"

VALID = """\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {name: web}
spec:
  spiffeId: spiffe://example.org/web
  selectors: [unix:uid:1001]
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: payments-api}
spec:
  mode: mutual
  addresses: ["payments.internal:8443"]
  identity: spiffe://example.org/payments/api
---
apiVersion: sigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web-to-payments}
spec:
  sources: ["spiffe://example.org/web"]
  destinations: [payments-api]
  action: allow
"""

UNKNOWN_FIELD_DOC2 = VALID.replace("  mode: mutual\n", "  mode: mutual\n  colour: blue\n") \
    .replace("spiffe://example.org/web\n  selectors", "spiffe://example.org/web2\n  selectors")


class ServerCase(helpers.InteropCase):
    metrics_listen = "127.0.0.1:0"

    def setUp(self) -> None:
        super().setUp()
        self.data = self.tmp / "data"
        self.server = self.start_server(first=True)

    def start_server(self, first: bool = False) -> Peer:
        ready = self.tmp / "ready"
        if ready.exists():
            ready.unlink()
        argv = [self.sigil.bin, "server", "--data-dir", self.data,
                "--admin-listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0",
                "--metrics-listen", self.metrics_listen, "--ready-file", ready]
        if first:
            argv += ["--trust-domain", TD]
        peer = Peer(argv, "sigil-server")
        self.addCleanup(peer.kill)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if peer.proc.poll() is not None or time.monotonic() > deadline:
                peer.kill()
                raise AssertionError(f"server did not become ready\n{peer.output}")
            time.sleep(0.05)
        addr = dict(line.split("=", 1) for line in ready.read_text().split())
        self.url = "https://" + addr["admin"]
        self.metrics_url = f"http://{addr['metrics']}/metrics" if "metrics" in addr else None
        return peer

    def cli(self, *args: object, creds: str | Path = "admin", check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
        cdir = creds if isinstance(creds, Path) else self.data / creds
        return run([self.sigil.bin, *args, "--server", self.url, "--credentials", cdir],
                   check=check, input=input)

    def write(self, name: str, text: str) -> Path:
        p = self.path(name)
        p.write_text(text)
        return p

    def get_all(self) -> dict:
        out = {}
        for kind in ("WorkloadIdentity", "Service", "AccessPolicy"):
            items = json.loads(self.cli("get", kind, "-o", "json").stdout)
            for it in items:
                out[(kind, it["metadata"]["name"])] = it
        return out

    def assert_refused(self, text: str, *needles: str) -> None:
        before = self.get_all()
        r = self.cli("apply", "-f", self.write("bad.yaml", text), check=False)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        for n in needles:
            self.assertIn(n, r.stderr)
        self.assertEqual(self.get_all(), before, "store changed after a refused apply")


class AdminApiTest(ServerCase):
    def test_apply_get_and_validation(self):
        r = self.cli("apply", "-f", self.write("ok.yaml", VALID))
        self.assertIn("WorkloadIdentity/web applied", r.stdout)
        state = self.get_all()
        self.assertEqual(set(state), {("WorkloadIdentity", "web"), ("Service", "payments-api"),
                                      ("AccessPolicy", "web-to-payments")})
        for item in state.values():
            self.assertTrue(item["metadata"]["resourceVersion"].isdigit())
        one = json.loads(self.cli("get", "Service", "payments-api", "-o", "json").stdout)
        self.assertEqual(one["spec"]["mode"], "mutual")
        self.assertIn("payments-api", self.cli("get", "Service").stdout)
        self.assertIn("kind: AccessPolicy", self.cli("get", "AccessPolicy", "-o", "yaml").stdout)
        # Re-apply is a no-op; stdin works.
        self.assertIn("unchanged", self.cli("apply", "-f", "-", input=VALID).stdout)

        self.assert_refused(UNKNOWN_FIELD_DOC2, "document 2", "spec.colour")
        self.assert_refused("kind: [unclosed\n", "document 1")
        self.assert_refused(VALID.replace("kind: AccessPolicy", "kind: Gizmo"),
                            "document 3", "kind")
        self.assert_refused(VALID.replace("spiffe://example.org/payments/api", "spiffe://Bad ID"),
                            "document 2", "spec.identity")
        self.assert_refused(VALID + "---\n" + VALID.split("---\n")[0], "document 4",
                            "duplicate")

        r = self.cli("get", "Service", "nope", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not found", r.stderr)
        self.cli("delete", "AccessPolicy", "web-to-payments")
        self.assertNotIn(("AccessPolicy", "web-to-payments"), self.get_all())

    def test_roles_and_foreign_client(self):
        self.cli("apply", "-f", self.write("ok.yaml", VALID))
        self.assertIn("web", self.cli("get", "WorkloadIdentity", creds="admin-readonly").stdout)
        r = self.cli("apply", "-f", self.write("ok2.yaml", VALID), creds="admin-readonly",
                     check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("403", r.stderr)
        r = self.cli("token", "create", "--node", "n1", creds="admin-readonly", check=False)
        self.assertIn("403", r.stderr)

        # A client certificate from another CA (same trust domain name) fails the handshake.
        other_ca = self.new_ca("other")
        svid = self.new_svid(other_ca, f"spiffe://{TD}/sigil/admin", "intruder")
        foreign = self.path("foreign")
        foreign.mkdir(exist_ok=True)
        (foreign / "cert.pem").write_bytes(svid.chain.read_bytes())
        (foreign / "key.pem").write_bytes(svid.key.read_bytes())
        (foreign / "bundle.pem").write_bytes((self.data / "admin" / "bundle.pem").read_bytes())
        r = self.cli("get", "Service", creds=foreign, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach the admin API", r.stderr)
        self.assertNotIn("server answered", r.stderr)

    def test_tokens_audit_shutdown_restart(self):
        self.cli("apply", "-f", self.write("ok.yaml", VALID))
        token = self.cli("token", "create", "--node", "node-1", "--ttl", "30m").stdout.strip()
        self.assertRegex(token, r"^SJT1\.[0-9a-f]{8}\.[A-Za-z0-9_-]{32}\.[0-9a-f]{64}$")
        audit = self.cli("audit").stdout
        self.assertIn("token.create", audit)
        self.assertIn("resource.apply", audit)
        self.assertNotIn(token.split(".")[2], audit)
        self.assertIn("token.create", self.cli("audit", "--type", "token.create",
                                                "--since", "1h").stdout)
        self.assertNotIn("resource.apply", self.cli("audit", "--type", "token.create").stdout)
        self.assertIn("ok", self.cli("audit", "verify").stdout)
        self.assertNotIn(token.split(".")[2], self.server.output, "token secret in the log")

        bundle_fp = hashlib.sha256((self.data / "admin" / "bundle.pem").read_bytes()).hexdigest()
        self.server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait_exit(timeout=10), 0, self.server.output)
        self.assertNotIn(b"PRIVATE KEY", (self.data / "sigil.db").read_bytes())

        self.server = self.start_server(first=False)
        self.assertEqual(
            hashlib.sha256((self.data / "admin" / "bundle.pem").read_bytes()).hexdigest(),
            bundle_fp)
        self.assertEqual(len(self.get_all()), 3)
        self.assertIn("token.create", self.cli("audit").stdout)
        self.assertIn("ok", self.cli("audit", "verify").stdout)
        self.assertEqual(os.stat(self.data / "admin" / "key.pem").st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(self.data).st_mode & 0o777, 0o700)


class SecretsAndConcurrencyTest(ServerCase):
    TOOLS = ("openssl", "curl")

    def curl(self, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
        host_port = self.url.removeprefix("https://")
        port = host_port.rsplit(":", 1)[1]
        creds = self.data / "admin"
        argv = ["curl", "-sS", "--max-time", "10", "-X", method, "-o", "-", "-w",
                "\n%{http_code}", "--resolve", f"localhost:{port}:127.0.0.1",
                "--cacert", creds / "bundle.pem", "--cert", creds / "cert.pem",
                "--key", creds / "key.pem", f"https://localhost:{port}{path}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data-binary", body]
        out = run(argv).stdout
        text, code = out.rsplit("\n", 1)
        return int(code), json.loads(text) if text.strip() else {}

    def test_put_optimistic_concurrency(self):
        self.cli("apply", "-f", self.write("ok.yaml", VALID))
        code, doc = self.curl("GET", "/apis/sigil.dev/v1alpha1/WorkloadIdentity/web")
        self.assertEqual(code, 200)
        version = int(doc["metadata"]["resourceVersion"])
        doc["spec"]["ttl"] = "30m"
        doc["metadata"]["resourceVersion"] = str(version + 1000)
        code, err = self.curl("PUT", "/apis/sigil.dev/v1alpha1/WorkloadIdentity/web",
                              json.dumps(doc))
        self.assertEqual(code, 409, err)
        doc["metadata"]["resourceVersion"] = str(version)
        code, new = self.curl("PUT", "/apis/sigil.dev/v1alpha1/WorkloadIdentity/web",
                              json.dumps(doc))
        self.assertEqual(code, 200, new)
        self.assertGreater(int(new["metadata"]["resourceVersion"]), version)
        self.assertEqual(new["spec"]["ttl"], "30m")
        code, _ = self.curl("GET", "/apis/sigil.dev/v1alpha1/Service/missing")
        self.assertEqual(code, 404)
        code, err = self.curl("POST", "/api/v1/tokens", "not json")
        self.assertEqual(code, 400)
        self.assertIn("error", err)

    def test_credential_source_secret_sealed(self):
        secret = "sk-live-TOPSECRET-0123456789"
        doc = ("apiVersion: sigil.dev/v1alpha1\nkind: CredentialSource\n"
               f"metadata: {{name: openai-key}}\nspec: {{type: static, value: {secret}}}\n")
        self.cli("apply", "-f", self.write("src.yaml", doc))
        shown = self.cli("get", "CredentialSource", "openai-key", "-o", "json").stdout
        self.assertNotIn(secret, shown)
        self.assertIn("openai-key", shown)
        self.assertIn("secret.store", self.cli("audit").stdout)
        self.server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait_exit(timeout=10), 0)
        self.assertNotIn(secret, self.server.output)
        for f in self.data.iterdir():
            if f.is_file():
                self.assertNotIn(secret.encode(), f.read_bytes(), f"secret in clear in {f}")


class ConfigFileTest(helpers.InteropCase):
    def test_config_file_and_flag_override(self):
        data = self.tmp / "data"
        ready = self.tmp / "ready"
        cfg = self.path("server.yaml")
        cfg.write_text(f"data-dir: {data}\ntrust-domain: {TD}\nadmin-listen: 127.0.0.1:0\n"
                       f"agent-listen: 127.0.0.1:1\nmetrics-listen: \"off\"\n")
        # --agent-listen on the command line overrides the config's unusable port 1.
        peer = Peer([self.sigil.bin, "server", "--config", cfg, "--agent-listen", "127.0.0.1:0",
                     "--ready-file", ready], "sigil-server")
        self.addCleanup(peer.kill)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if peer.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not become ready\n{peer.output}")
            time.sleep(0.05)
        addr = dict(line.split("=", 1) for line in ready.read_text().split())
        self.assertIn("agent", addr)
        r = run([self.sigil.bin, "node", "list", "--server", "https://" + addr["admin"],
                 "--credentials", data / "admin"])
        self.assertEqual(r.returncode, 0)
        bad = self.path("bad.yaml")
        bad.write_text("colour: blue\n")
        r = run([self.sigil.bin, "server", "--config", bad], check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn('unknown key "colour"', r.stderr)


def parse_metrics(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """Prometheus text format -> ({name: type}, {sample-with-labels: value})."""
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return types, samples


class MetricsTest(ServerCase):
    def scrape(self) -> tuple[dict[str, str], dict[str, float]]:
        self.assertIsNotNone(self.metrics_url, "no metrics= line in the ready file")
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            self.assertEqual(resp.status, 200)
            self.assertTrue(resp.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
            return parse_metrics(resp.read().decode())

    def test_admin_request_counters(self):
        types, before = self.scrape()
        self.assertEqual(types["sigil_admin_requests_total"], "counter")
        self.assertEqual(types["sigil_svid_issued_total"], "counter")
        self.assertEqual(types["sigil_svid_issue_seconds"], "histogram")
        self.assertEqual(types["sigil_store_revision"], "gauge")
        self.assertEqual(types["sigil_agents_connected"], "gauge")
        self.assertIn('sigil_svid_issue_seconds_bucket{le="+Inf"}', before)
        get_ok = 'sigil_admin_requests_total{method="GET",code="200"}'
        get_404 = 'sigil_admin_requests_total{method="GET",code="404"}'
        post_ok = 'sigil_admin_requests_total{method="POST",code="200"}'
        post_403 = 'sigil_admin_requests_total{method="POST",code="403"}'
        rev0 = before["sigil_store_revision"]

        self.cli("apply", "-f", self.write("ok.yaml", VALID))
        for _ in range(3):
            self.cli("get", "WorkloadIdentity", "web", "-o", "json")
        for _ in range(2):
            self.assertEqual(self.cli("get", "Service", "nope", check=False).returncode, 1)
        r = self.cli("apply", "-f", self.write("ok2.yaml", VALID), creds="admin-readonly",
                     check=False)
        self.assertIn("403", r.stderr)

        _, after = self.scrape()

        def delta(key: str) -> float:
            return after.get(key, 0.0) - before.get(key, 0.0)

        self.assertEqual(delta(post_ok), 1, after)
        self.assertEqual(delta(get_ok), 3, after)
        self.assertEqual(delta(get_404), 2, after)
        self.assertEqual(delta(post_403), 1, after)
        self.assertGreater(after["sigil_store_revision"], rev0)
        # Only GET /metrics is served; the listener is plain HTTP.
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(self.metrics_url.replace("/metrics", "/other"), timeout=10)
        self.assertEqual(cm.exception.code, 404)

    def test_metrics_off(self):
        self.server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait_exit(timeout=10), 0, self.server.output)
        self.metrics_listen = "off"
        self.server = self.start_server(first=False)
        self.assertIsNone(self.metrics_url)
        self.assertEqual(len(self.get_all()), 0)


if __name__ == "__main__":
    helpers.main()
