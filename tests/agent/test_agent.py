"""`sigil agent` end to end: the real server and agent binaries, driven by independent clients.

- Python grpcio (stubs compiled at test time from src/proto/workload.proto with grpc_tools) is
  the Workload API client: X.509-SVIDs, bundles, JWT-SVIDs, ValidateJWTSVID, the security header,
  a stream kept open through an SVID rotation (ttl 10 s).
- Two uids on the same node get different identities; a uid with no WorkloadIdentity gets
  PERMISSION_DENIED (clients run as separate processes under those uids).
- The fetched SVIDs complete a real mTLS handshake with `openssl s_server`/`s_client`.
- `sigil whoami`, /healthz and /metrics, restart without a token, and key custody (no workload
  private key in the data directory or the logs; the agent's core dump filter).

Run: SIGIL_BIN=build/release/apps/sigil/sigil /usr/bin/python3 tests/agent/test_agent.py
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "interop"))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402

TD = "example.org"
NODE = "node-a"
PROTO = ROOT / "src" / "proto" / "workload.proto"
MD = (("workload.spiffe.io", "true"),)
PY = os.path.realpath(sys.executable)

RESOURCES = f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: a-root}}
spec:
  spiffeId: spiffe://{TD}/test/root
  selectors: ["unix:uid:0"]
  ttl: 10s
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: b-root-python}}
spec:
  spiffeId: spiffe://{TD}/test/python/{{{{node}}}}
  selectors: ["unix:uid:0", "unix:path:{PY}"]
  jwtAudiences: [test-aud, other-aud]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: nobody}}
spec:
  spiffeId: spiffe://{TD}/test/nobody
  selectors: ["unix:uid:65534"]
"""


RESOURCES_EXTRA = f"""
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: extra}}
spec:
  spiffeId: spiffe://{TD}/test/extra
  selectors: ["unix:uid:0"]
"""


def _modules():
    return helpers.require_modules()


def compile_stubs(out: Path):
    return helpers.compile_proto(PROTO, out)


split_der = helpers.split_der_chain


class AgentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._td = tempfile.TemporaryDirectory(prefix="sigil-agent-test-")
        cls.tmp = Path(cls._td.name)
        os.chmod(cls.tmp, 0o755)  # the other-uid clients read the stubs
        cls.peers: list[Peer] = []
        try:
            cls.mods = _modules()
            cls.grpc = cls.mods["grpc"]
            cls.sigil = helpers.sigil_bin()
            cls.openssl = helpers.require_tool("openssl")
            cls.stubs = cls.tmp / "stubs"
            cls.pb, cls.pb_grpc = compile_stubs(cls.stubs)
            cls.server_data = cls.tmp / "server"
            cls._start_server()
            cls.cli("apply", "-f", "-", input=RESOURCES)
            token = cls.cli("token", "create", "--node", NODE).stdout
            m = re.search(r"SJT1\.[^\s]+", token)
            assert m, token
            cls.token_file = cls.tmp / "token"
            cls.token_file.write_text(m.group(0) + "\n")
            os.chmod(cls.token_file, 0o600)
            cls.agent_data = cls.tmp / "agent"
            cls.socket = cls.tmp / "run" / "agent.sock"
            cls.agent = cls._start_agent(join=True)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for p in reversed(cls.peers):
            p.kill()
        cls._td.cleanup()

    @classmethod
    def cli(cls, *args, input=None, check=True):
        return run([cls.sigil, *args, "--server", cls.admin_url, "--credentials",
                    cls.server_data / "admin"], input=input, check=check)

    @classmethod
    def _wait_ready(cls, peer: Peer, ready: Path, what: str) -> dict:
        return helpers.wait_ready_file(peer, ready, what, timeout=20)

    @classmethod
    def _start_server(cls) -> None:
        ready = cls.tmp / "server.ready"
        peer = Peer([cls.sigil, "server", "--data-dir", cls.server_data, "--trust-domain", TD,
                     "--admin-listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0",
                     "--metrics-listen", "off", "--ready-file", ready], "sigil-server")
        cls.peers.append(peer)
        addr = cls._wait_ready(peer, ready, "server")
        cls.admin_url = "https://" + addr["admin"]
        cls.agent_api = addr["agent"]
        cls.server = peer

    @classmethod
    def _start_agent(cls, join: bool) -> Peer:
        ready = cls.tmp / "agent.ready"
        if ready.exists():
            ready.unlink()
        argv = [cls.sigil, "agent", "--server", cls.agent_api, "--data-dir", cls.agent_data,
                "--socket", cls.socket, "--node-name", NODE, "--health-listen", "127.0.0.1:0",
                "--ready-file", ready,
                # Credential files are tested in test_creds_fuse.py; agents of parallel tests
                # must not contend for the default mount point.
                "--creds-mount", ""]
        if join:
            argv += ["--join-token-file", cls.token_file]
        peer = Peer(argv, "sigil-agent")
        cls.peers.append(peer)
        addr = cls._wait_ready(peer, ready, "agent")
        cls.health = addr["health"]
        return peer

    # --- helpers ---------------------------------------------------------------------------

    def stub(self):
        channel = self.grpc.insecure_channel(f"unix:{self.socket}")
        self.addCleanup(channel.close)
        return self.pb_grpc.SpiffeWorkloadAPIStub(channel)

    def fetch_x509(self, timeout: float = 20):
        stream = self.stub().FetchX509SVID(self.pb.X509SVIDRequest(), metadata=MD,
                                           timeout=timeout)
        first = next(iter(stream))
        stream.cancel()
        return first

    def as_uid(self, uid: int, *args: str) -> dict:
        def drop():
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        r = subprocess.run([PY, str(HERE / "wl_client.py"), str(self.stubs), str(self.socket),
                            *args], capture_output=True, text=True, timeout=30, preexec_fn=drop)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def wait_synced(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.health}/healthz", timeout=5) as r:
                    if json.loads(r.read())["synced"]:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.fail(f"agent never synced\n{self.agent.output}")

    # --- tests -------------------------------------------------------------------------------

    def test_01_x509_svids_for_root(self):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        self.wait_synced()
        resp = self.fetch_x509()
        ids = [s.spiffe_id for s in resp.svids]
        self.assertEqual(ids, [f"spiffe://{TD}/test/root", f"spiffe://{TD}/test/python/{NODE}"])
        self.assertEqual([s.hint for s in resp.svids], ["a-root", "b-root-python"])
        for svid in resp.svids:
            chain = [x509.load_der_x509_certificate(d) for d in split_der(svid.x509_svid)]
            san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
            self.assertEqual(san.value.get_values_for_type(x509.UniformResourceIdentifier),
                             [svid.spiffe_id])
            key = serialization.load_der_private_key(svid.x509_svid_key, None)
            pub = lambda k: k.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
            self.assertEqual(pub(key.public_key()), pub(chain[0].public_key()))
            roots = [x509.load_der_x509_certificate(d) for d in split_der(svid.bundle)]
            self.assertTrue(roots, "empty bundle")
            issuer = chain[1] if len(chain) > 1 else roots[0]
            helpers.verify_signed_by(chain[0], issuer)
        ttl = chain[0].not_valid_after - chain[0].not_valid_before
        self.assertLessEqual(ttl.total_seconds(), 3600 + 20)

    def test_02_security_header_required(self):
        stub = self.stub()
        with self.assertRaises(self.grpc.RpcError) as e:
            next(iter(stub.FetchX509SVID(self.pb.X509SVIDRequest(), timeout=10)))
        self.assertEqual(e.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(self.grpc.RpcError) as e:
            stub.FetchJWTSVID(self.pb.JWTSVIDRequest(audience=["x"]), timeout=10)
        self.assertEqual(e.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)

    def test_03_other_uids(self):
        self.wait_synced()
        nobody = self.as_uid(65534, "x509")
        self.assertEqual(nobody, {"ok": True, "ids": [f"spiffe://{TD}/test/nobody"]})
        stranger = self.as_uid(4242, "x509")
        self.assertFalse(stranger["ok"], stranger)
        self.assertEqual(stranger["code"], "PERMISSION_DENIED", stranger)

    def test_04_jwt_svid_bundles_and_validate(self):
        import jwt as pyjwt
        self.wait_synced()
        stub = self.stub()
        resp = stub.FetchJWTSVID(self.pb.JWTSVIDRequest(audience=["test-aud"],
                                                        spiffe_id=f"spiffe://{TD}/test/python/{NODE}"),
                                 metadata=MD, timeout=20)
        self.assertEqual(len(resp.svids), 1)
        token = resp.svids[0].svid
        bundles = next(iter(stub.FetchJWTBundles(self.pb.JWTBundlesRequest(), metadata=MD,
                                                 timeout=10)))
        jwks = json.loads(bundles.bundles[f"spiffe://{TD}"])
        kid = pyjwt.get_unverified_header(token)["kid"]
        keys = [k for k in jwks["keys"] if k.get("kid") == kid]
        self.assertEqual(len(keys), 1, jwks)
        key = pyjwt.PyJWK(keys[0]).key
        claims = pyjwt.decode(token, key, algorithms=["ES256", "ES384", "RS256", "PS256"],
                              audience="test-aud")
        self.assertEqual(claims["sub"], f"spiffe://{TD}/test/python/{NODE}")
        v = stub.ValidateJWTSVID(self.pb.ValidateJWTSVIDRequest(audience="test-aud", svid=token),
                                 metadata=MD, timeout=10)
        self.assertEqual(v.spiffe_id, claims["sub"])
        self.assertEqual(v.claims["sub"], claims["sub"])
        with self.assertRaises(self.grpc.RpcError) as e:
            stub.ValidateJWTSVID(self.pb.ValidateJWTSVIDRequest(audience="wrong", svid=token),
                                 metadata=MD, timeout=10)
        self.assertEqual(e.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        # An audience outside jwtAudiences is refused by the server's policy.
        with self.assertRaises(self.grpc.RpcError) as e:
            stub.FetchJWTSVID(self.pb.JWTSVIDRequest(
                audience=["nope"], spiffe_id=f"spiffe://{TD}/test/python/{NODE}"), metadata=MD,
                timeout=20)
        self.assertEqual(e.exception.code(), self.grpc.StatusCode.PERMISSION_DENIED)

    def test_05_stream_pushes_rotation(self):
        self.wait_synced()
        stream = self.stub().FetchX509SVID(self.pb.X509SVIDRequest(), metadata=MD, timeout=40)
        it = iter(stream)
        first = next(it)
        serial = {s.spiffe_id: s.x509_svid for s in first.svids}
        start = time.monotonic()
        second = next(it)  # the 10 s identity renews at half-life (~5 s)
        elapsed = time.monotonic() - start
        stream.cancel()
        changed = [s.spiffe_id for s in second.svids if serial.get(s.spiffe_id) != s.x509_svid]
        self.assertIn(f"spiffe://{TD}/test/root", changed)
        self.assertLess(elapsed, 12, "rotation took too long")

    def test_05b_stream_pushes_identity_removal(self):
        """Deleting a WorkloadIdentity (the way an identity is withdrawn today; `sigil revoke`
        comes with the revocation work) reaches an open stream within a second."""
        self.wait_synced()
        extra = RESOURCES_EXTRA
        self.cli("apply", "-f", "-", input=extra)
        stream = self.stub().FetchX509SVID(self.pb.X509SVIDRequest(), metadata=MD, timeout=30)
        it = iter(stream)
        want = f"spiffe://{TD}/test/extra"
        deadline = time.monotonic() + 15
        while want not in {s.spiffe_id for s in next(it).svids}:
            self.assertLess(time.monotonic(), deadline, "the new identity never arrived")
        self.cli("delete", "WorkloadIdentity", "extra")
        start = time.monotonic()
        while True:
            msg = next(it)
            if want not in {s.spiffe_id for s in msg.svids}:
                break
            self.assertLess(time.monotonic() - start, 5)
        elapsed = time.monotonic() - start
        stream.cancel()
        self.assertLess(elapsed, 1.5, f"removal took {elapsed:.2f} s to reach the stream")

    def test_06_tls_handshake_with_fetched_svids(self):
        from cryptography.hazmat.primitives import serialization
        self.wait_synced()
        resp = self.fetch_x509()
        svid = resp.svids[0]
        d = self.tmp / "tls"
        d.mkdir(exist_ok=True)
        certs = "".join("-----BEGIN CERTIFICATE-----\n" +
                        "\n".join(re.findall(".{1,64}", base64.b64encode(c).decode())) +
                        "\n-----END CERTIFICATE-----\n" for c in split_der(svid.x509_svid))
        (d / "chain.pem").write_text(certs)
        key = serialization.load_der_private_key(svid.x509_svid_key, None)
        (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        bundle = "".join("-----BEGIN CERTIFICATE-----\n" +
                         "\n".join(re.findall(".{1,64}", base64.b64encode(c).decode())) +
                         "\n-----END CERTIFICATE-----\n" for c in split_der(svid.bundle))
        (d / "bundle.pem").write_text(bundle)
        server, port = helpers.start_s_server(d / "chain.pem", d / "key.pem", d / "bundle.pem",
                                              extra=["-Verify", "2", "-verify_return_error"])
        with server:
            r = run([self.openssl, "s_client", "-connect", f"127.0.0.1:{port}",
                     "-cert", d / "chain.pem", "-key", d / "key.pem", "-CAfile", d / "bundle.pem",
                     "-verify_return_error", "-tls1_3"], input="", check=False, timeout=20)
            self.assertIn("Verify return code: 0 (ok)", r.stdout, r.stdout + r.stderr)

    def test_07_whoami(self):
        self.wait_synced()
        r = run([self.sigil, "whoami", "--socket", self.socket])
        self.assertIn(f"spiffe://{TD}/test/root", r.stdout)
        self.assertIn("unix:uid:0", r.stdout)
        self.assertIn("from WorkloadIdentity a-root", r.stdout)

    def test_08_health_and_metrics(self):
        self.wait_synced()
        with urllib.request.urlopen(f"http://{self.health}/metrics", timeout=5) as r:
            text = r.read().decode()
        self.assertRegex(text, r"sigil_agent_synced 1")
        self.assertIn("sigil_agent_svids_held", text)

    def test_09_custody(self):
        from cryptography.hazmat.primitives import serialization
        self.wait_synced()
        resp = self.fetch_x509()
        key = serialization.load_der_private_key(resp.svids[0].x509_svid_key, None)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        for path in self.agent_data.rglob("*"):
            if path.is_file():
                self.assertNotIn(scalar, path.read_bytes(), f"workload key bytes in {path}")
        log = self.agent.output.encode()
        self.assertNotIn(base64.b64encode(resp.svids[0].x509_svid_key)[:40], log)
        self.assertNotIn(b"PRIVATE KEY", log)
        pid = self.agent.proc.pid
        self.assertEqual(Path(f"/proc/{pid}/coredump_filter").read_text().strip(), "00000010")
        self.assertEqual((self.agent_data / "node.key").stat().st_mode & 0o777, 0o600)

    def health_json(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://{self.health}/healthz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_10_server_outage(self):
        """The server goes away: the agent keeps serving what it holds, reports itself degraded,
        and resyncs on its own when the server is back on the same address."""
        self.wait_synced()
        before = self.fetch_x509()
        self.server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait_exit(15), 0, self.server.output)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.health_json()[0] == 200:
            time.sleep(0.2)
        status, body = self.health_json()
        self.assertEqual(status, 503, body)
        self.assertFalse(body["synced"])
        during = self.fetch_x509()
        self.assertEqual([s.spiffe_id for s in during.svids], [s.spiffe_id for s in before.svids])
        # Back on the same port: the agent reconnects by itself (jittered backoff, no restart).
        self._restart_server_on_agent_api("server2")
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and self.health_json()[0] != 200:
            time.sleep(0.3)
        self.assertEqual(self.health_json()[0], 200, self.agent.output)
        self.assertIn("sync.disconnected", self.agent.output)

    def _restart_server_on_agent_api(self, name: str) -> None:
        ready = self.tmp / f"{name}.ready"
        peer = Peer([self.sigil, "server", "--data-dir", self.server_data,
                     "--admin-listen", "127.0.0.1:0", "--agent-listen", self.agent_api,
                     "--metrics-listen", "off", "--ready-file", ready], f"sigil-{name}")
        self.peers.append(peer)
        addr = self._wait_ready(peer, ready, name)
        type(self).server = peer
        type(self).admin_url = "https://" + addr["admin"]

    def test_11_agent_not_synced_since_start_says_so(self):
        """An agent restarted while the server is away cannot tell a process without an
        identity from one whose identity it has not learned yet: it answers UNAVAILABLE (which
        clients retry), not PERMISSION_DENIED, and `sigil whoami` waits for it."""
        self.wait_synced()
        self.server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait_exit(15), 0, self.server.output)
        self.agent.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.agent.wait_exit(15), 0, self.agent.output)
        type(self).agent = self._start_agent(join=False)
        with self.assertRaises(self.grpc.RpcError) as e:
            self.fetch_x509(timeout=10)
        self.assertEqual(e.exception.code(), self.grpc.StatusCode.UNAVAILABLE)
        self.assertIn("has not synced with the server since it started", e.exception.details())
        r = run([self.sigil, "whoami", "--socket", self.socket, "--wait", "0s"], check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("has not synced with the server since it started", r.stderr)
        self.assertEqual(r.stdout, "")
        # whoami started now waits; the server comes back; the agent syncs and whoami answers.
        waiting = subprocess.Popen([self.sigil, "whoami", "--socket", self.socket,
                                    "--wait", "60s"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1)
            self.assertIsNone(waiting.poll(), "whoami did not wait")
            self._restart_server_on_agent_api("server3")
            out, err = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
        self.assertEqual(waiting.returncode, 0, out + err + self.agent.output)
        self.assertIn("waiting for the agent", err)
        self.assertIn(f"spiffe://{TD}/test/root", out)

    def test_99_restart_without_token(self):
        self.wait_synced()
        self.agent.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.agent.wait_exit(15), 0, self.agent.output)
        type(self).agent = self._start_agent(join=False)
        self.wait_synced()
        self.assertEqual(len(self.fetch_x509().svids), 2)


if __name__ == "__main__":
    unittest.main()
