"""End to end: the gRPC agent API (sigil.agent.v1.AgentService) of the real `sigil server`.

The client is independent of Sigil's C++ code: Python grpcio with stubs compiled at test time
from src/proto/agent.proto by grpc_tools.protoc, python3-cryptography for keys, CSRs and
certificate checks, PyJWT for JWT-SVIDs, the openssl CLI for path validation. Resources, tokens
and audit go through the real `sigil` CLI against the admin API.

One server per test class (setUpClass) on 127.0.0.1 port 0; node-a joins once (lazily, cached)
and the tests that need a node share that join. Every wait is bounded.

First contact (docs/control-plane.md, "Bootstrap" step 2): the agent connects with TLS before it
trusts anything, requires a chain that validates to a root whose SHA-256 (DER) equals the token's
pin, and only then sends the token. `FirstContact` below is that client logic; it uses nothing but
the token and what the server presents in the handshake. The server's chain ends with the root
(ControlPlane::IssueServerCredential appends it); `test_01_first_contact_presents_pinned_root`
pins that down, since first contact cannot work without it.

Run: SIGIL_BIN=build/release/apps/sigil/sigil /usr/bin/python3 tests/server/test_agent_api.py
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import importlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Callable, Iterable, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "interop"))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402

TD = "example.org"
PROTO = HERE.parent.parent / "src" / "proto" / "agent.proto"
RPC_TIMEOUT = 10.0     # seconds, any unary call
DELTA_TIMEOUT = 8.0    # seconds, a Sync delta after a commit (server polls every 1 s at most)
TLS_NAME = "localhost"  # the DNS SAN of the agent API's server certificate


def _require_modules():
    return helpers.require_modules()


def compile_stubs(out: Path):
    """Compiles agent.proto; returns (agent_pb2, agent_pb2_grpc)."""
    return helpers.compile_proto(PROTO, out)


# --------------------------------------------------------------------------------------------
# Certificates, keys, CSRs (python3-cryptography)
# --------------------------------------------------------------------------------------------

split_der_chain = helpers.split_der_chain


def der_certs(blob: bytes):
    from cryptography import x509
    if not blob:
        raise AssertionError("empty svid_chain")
    return [x509.load_der_x509_certificate(d) for d in split_der_chain(blob)]


def pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.DER)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uri_sans(cert) -> list[str]:
    from cryptography import x509
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)


def dns_sans(cert) -> list[str]:
    from cryptography import x509
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.DNSName)


def new_key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def csr_der(key) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def same_public_key(cert, key) -> bool:
    return cert.public_key().public_numbers() == key.public_key().public_numbers()


def not_after(cert) -> datetime.datetime:
    return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


# --------------------------------------------------------------------------------------------
# Join tokens and the client side of first contact
# --------------------------------------------------------------------------------------------

class PinMismatch(AssertionError):
    """The client refused the server: no certificate it could see has the token's pin."""


def parse_token(token: str) -> dict:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != "SJT1":
        raise AssertionError(f"join token is not SJT1.<id>.<secret>.<ca-sha256>: {len(parts)} "
                             "dot-separated parts")
    _, tid, secret, pin = parts
    if not (len(tid) == 8 and all(c in "0123456789abcdef" for c in tid)):
        raise AssertionError(f"token id {tid!r} is not 8 lowercase hex")
    if len(secret) != 32:
        raise AssertionError(f"token secret is {len(secret)} characters, expected 32")
    if not (len(pin) == 64 and all(c in "0123456789abcdef" for c in pin)):
        raise AssertionError("token pin is not 64 lowercase hex")
    return {"id": tid, "secret": secret, "pin": pin}


def presented_chain(addr: str) -> list:
    """The certificates the agent listener sends in its handshake, trusting none of them
    (openssl s_client -showcerts; verification errors are ignored, nothing is sent)."""
    from cryptography import x509
    openssl = helpers.require_tool("openssl")
    argv = [openssl, "s_client", "-connect", addr, "-servername", TLS_NAME, "-showcerts",
            "-alpn", "h2"]
    try:
        # Bytes: after the handshake the HTTP/2 server's SETTINGS frame is printed raw.
        r = subprocess.run(argv, input=b"", capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"timed out after 15s: {helpers.format_cmd(argv)}") from None
    pems = helpers.split_pem_certs(r.stdout)
    if not pems:
        raise AssertionError(f"no certificate from the agent API at {addr} "
                             f"(s_client exit {r.returncode}):\n"
                             f"{r.stdout.decode('utf-8', 'replace')}\n"
                             f"{r.stderr.decode('utf-8', 'replace')}")
    return [x509.load_pem_x509_certificate(p) for p in pems]


class FirstContact:
    """What an agent does before it trusts the server (docs/control-plane.md, Bootstrap)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def pinned_root(self, addr: str, token: str) -> tuple:
        """Returns (root certificate, presented chain) or raises PinMismatch. A presented
        certificate must have the pin as its DER SHA-256, and the presented leaf must validate
        (openssl verify -x509_strict) to it and name spiffe://TD/sigil/server."""
        from cryptography import x509
        pin = parse_token(token)["pin"]
        chain = presented_chain(addr)
        root = None
        for cert in chain:
            if sha256_hex(der(cert)) == pin:
                root = cert
        if root is None:
            raise PinMismatch(
                f"refusing the server at {addr}: none of the {len(chain)} presented certificate(s)"
                f" (subjects {[c.subject.rfc4514_string() for c in chain]}) has SHA-256 {pin}")
        tag = secrets.token_hex(4)
        root_f = self.workdir / f"fc-root-{tag}.pem"
        leaf_f = self.workdir / f"fc-leaf-{tag}.pem"
        root_f.write_bytes(pem(root))
        leaf_f.write_bytes(pem(chain[0]))
        argv: list[object] = ["openssl", "verify", "-x509_strict", "-CAfile", root_f]
        inters = [c for c in chain[1:] if der(c) != der(root)]
        if inters:
            inter_f = self.workdir / f"fc-inter-{tag}.pem"
            inter_f.write_bytes(b"".join(pem(c) for c in inters))
            argv += ["-untrusted", inter_f]
        r = run(argv + [leaf_f], check=False)
        if r.returncode != 0:
            raise PinMismatch(f"refusing the server: its certificate does not validate to the "
                              f"pinned root:\n{r.stdout}{r.stderr}")
        if f"spiffe://{TD}/sigil/server" not in uri_sans(chain[0]):
            raise PinMismatch(f"server certificate names {uri_sans(chain[0])}, not "
                              f"spiffe://{TD}/sigil/server")
        assert isinstance(root, x509.Certificate)
        return root, chain


# --------------------------------------------------------------------------------------------
# The test base: one real server per class, a gRPC client, the CLI
# --------------------------------------------------------------------------------------------

class AgentApiCase(unittest.TestCase):
    NODE = "node-a"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls._tmpdir = tempfile.TemporaryDirectory(prefix="sigil-agent-api-")
        cls.tmp = Path(cls._tmpdir.name)
        cls._cleanups: list[Callable[[], None]] = []
        try:
            cls.mods = _require_modules()
            cls.grpc = cls.mods["grpc"]
            cls.sigil_bin = helpers.sigil_bin()
            helpers.require_tool("openssl")
            cls.pb, cls.pb_grpc = compile_stubs(cls.tmp / "stubs")
            cls.data = cls.tmp / "data"
            cls.server = cls._start_server()
            cls._joined = None
            cls._join_error = None
        except BaseException:
            cls._class_cleanup()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls._class_cleanup()
        super().tearDownClass()

    @classmethod
    def _class_cleanup(cls) -> None:
        for fn in reversed(cls._cleanups):
            try:
                fn()
            except Exception:  # noqa: BLE001 - best effort
                pass
        cls._cleanups = []
        cls._tmpdir.cleanup()

    @classmethod
    def _start_server(cls) -> Peer:
        ready = cls.tmp / "ready"
        argv = [cls.sigil_bin, "server", "--data-dir", cls.data, "--trust-domain", TD,
                "--admin-listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0",
                "--metrics-listen", "127.0.0.1:0", "--ready-file", ready]
        peer = Peer(argv, "sigil-server")
        cls._cleanups.append(peer.kill)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if peer.proc.poll() is not None or time.monotonic() > deadline:
                peer.kill()
                raise AssertionError(f"sigil server did not write {ready} within 15 s\n"
                                     f"{peer.output}")
            time.sleep(0.05)
        addr = dict(line.split("=", 1) for line in ready.read_text().split())
        if "agent" not in addr:
            raise AssertionError(f"ready file has no agent= line: {ready.read_text()!r}")
        cls.admin_url = "https://" + addr["admin"]
        cls.agent_addr = addr["agent"]
        return peer

    # --- CLI ----------------------------------------------------------------------------

    def cli(self, *args: object, check: bool = True, input: str | None = None):
        return run([self.sigil_bin, *args, "--server", self.admin_url,
                    "--credentials", self.data / "admin"], check=check, input=input)

    def apply(self, text: str) -> str:
        return self.cli("apply", "-f", "-", input=text).stdout

    def new_token(self, node: str) -> str:
        token = self.cli("token", "create", "--node", node, "--ttl", "10m").stdout.strip()
        parse_token(token)
        return token

    def audit(self, **filters: object) -> list[dict]:
        args: list[object] = ["audit", "--json"]
        for k, v in filters.items():
            args += [f"--{k}", v]
        return json.loads(self.cli(*args).stdout)

    # --- gRPC ---------------------------------------------------------------------------

    @classmethod
    def stub(cls, root_pem: bytes, cert_chain_pem: bytes | None = None,
             key: bytes | None = None):
        creds = cls.grpc.ssl_channel_credentials(root_certificates=root_pem, private_key=key,
                                                 certificate_chain=cert_chain_pem)
        channel = cls.grpc.secure_channel(
            cls.agent_addr, creds, options=[("grpc.ssl_target_name_override", TLS_NAME)])
        cls._cleanups.append(channel.close)
        return cls.pb_grpc.AgentServiceStub(channel)

    def assert_rpc_code(self, fn: Callable[[], object], codes: Iterable, what: str):
        codes = tuple(codes)
        try:
            result = fn()
        except self.grpc.RpcError as e:
            self.assertIn(e.code(), codes,
                          f"{what}: expected {[c.name for c in codes]}, got {e.code().name}: "
                          f"{e.details()}")
            return e
        self.fail(f"{what}: expected {[c.name for c in codes]}, but the call succeeded: "
                  f"{str(result)[:300]}")

    def call(self, fn: Callable, request, what: str):
        """A unary call that must succeed; an RpcError becomes a readable failure."""
        try:
            return fn(request, timeout=RPC_TIMEOUT)
        except self.grpc.RpcError as e:
            self.fail(f"{what} failed: {e.code().name}: {e.details()}")

    def bundle_roots(self) -> list:
        """The bundle roots the server wrote for the admin CLI (for cross-checks only)."""
        return helpers.load_certs(self.data / "admin" / "bundle.pem")

    # --- the shared node ----------------------------------------------------------------

    def joined(self) -> dict:
        """node-a, joined once per class: {token, root, key, chain, stub, ...}."""
        cls = type(self)
        if cls._joined is None and cls._join_error is None:
            try:
                cls._joined = self._join_node(self.NODE)
            except AssertionError as e:
                cls._join_error = e
        if cls._join_error is not None:
            raise AssertionError(f"the shared join of {self.NODE} failed: "
                                 f"{cls._join_error}") from None
        return cls._joined

    def _join_node(self, node: str) -> dict:
        token = self.new_token(node)
        root, chain = FirstContact(self.tmp).pinned_root(self.agent_addr, token)
        anon = self.stub(pem(root))
        key = new_key()
        resp = self.call(anon.Join, self.pb.JoinRequest(token=token, node_name=node,
                                                        csr=csr_der(key)), f"Join({node})")
        certs = der_certs(resp.svid_chain)
        cert_chain_pem = b"".join(pem(c) for c in certs)
        return {"token": token, "root": root, "server_chain": chain,
                "key": key, "certs": certs, "resp": resp,
                "stub": self.stub(pem(root), cert_chain_pem, key_pem(key)),
                "anon": anon}

    def verify_chain(self, certs: list, root) -> None:
        """openssl verify -x509_strict: certs[0] validates to `root` through certs[1:]."""
        tag = secrets.token_hex(4)
        root_f, leaf_f = self.tmp / f"v-root-{tag}.pem", self.tmp / f"v-leaf-{tag}.pem"
        root_f.write_bytes(pem(root))
        leaf_f.write_bytes(pem(certs[0]))
        argv: list[object] = ["openssl", "verify", "-x509_strict", "-CAfile", root_f]
        inters = [c for c in certs[1:] if der(c) != der(root)]
        if inters:
            inter_f = self.tmp / f"v-inter-{tag}.pem"
            inter_f.write_bytes(b"".join(pem(c) for c in inters))
            argv += ["-untrusted", inter_f]
        r = run(argv + [leaf_f], check=False)
        self.assertEqual(r.returncode, 0,
                         f"SVID {uri_sans(certs[0])} does not validate to the pinned root:\n"
                         f"{r.stdout}{r.stderr}")

    def process(self, pid: int, uid: int, selectors: Sequence[str], exe: str = "/usr/bin/web"):
        return self.pb.AttestedProcess(
            pid=pid, uid=uid, gid=uid, exe_path=exe, exe_sha256="ab" * 32,
            cgroup="/system.slice/e2e.service", selectors=list(selectors))


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------

WEB_WI = f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: web}}
spec:
  spiffeId: spiffe://{TD}/web/{{{{node}}}}
  selectors: [unix:uid:1000, unix:path:/usr/bin/web]
  ttl: 30m
  dnsNames: [web.internal]
  jwtAudiences: [db, vault]
"""
WEB_ID = f"spiffe://{TD}/web/node-a"
WEB_SELECTORS = ["unix:uid:1000", "unix:gid:1000", "unix:path:/usr/bin/web"]


class AgentApiTest(AgentApiCase):

    # 3. First contact and Join ------------------------------------------------------------

    def test_01_first_contact_presents_pinned_root(self):
        """docs/control-plane.md: the agent 'requires a chain that validates to a root whose
        SHA-256 equals the pin'. With nothing but the token, the pinned root must be visible in
        the handshake, and the server certificate must carry the name the agent checks."""
        token = self.new_token("node-pin-probe")
        chain = presented_chain(self.agent_addr)
        leaf = chain[0]
        self.assertEqual(uri_sans(leaf), [f"spiffe://{TD}/sigil/server"],
                         "agent API server certificate URI SAN")
        self.assertIn(TLS_NAME, dns_sans(leaf),
                      f"server certificate DNS SANs {dns_sans(leaf)} lack {TLS_NAME}")
        pin = parse_token(token)["pin"]
        self.assertIn(pin, [sha256_hex(der(c)) for c in self.bundle_roots()],
                      "the token pins no root of the server's trust bundle")
        self.assertIn(
            pin, [sha256_hex(der(c)) for c in chain],
            f"the agent API presents {len(chain)} certificate(s) "
            f"({[c.subject.rfc4514_string() for c in chain]}) and none is the pinned root "
            f"{pin}: an agent holding only the join token cannot authenticate the server on "
            "first contact")
        root = next(c for c in chain if sha256_hex(der(c)) == pin)
        self.assertEqual(root.subject, root.issuer, "the pinned certificate is not self-signed")
        FirstContact(self.tmp).pinned_root(self.agent_addr, token)  # accepts the real server

    def test_02_join_issues_node_svid(self):
        j = self.joined()
        resp, certs, key, root = j["resp"], j["certs"], j["key"], j["root"]
        node_id = f"spiffe://{TD}/sigil/node/{self.NODE}"
        self.assertEqual(resp.spiffe_id, node_id)
        leaf = certs[0]
        self.assertEqual(uri_sans(leaf), [node_id], "node SVID URI SAN")
        self.assertTrue(same_public_key(leaf, key), "node SVID is not for the key we sent")
        self.verify_chain(certs, root)
        self.assertNotIn(der(root), [der(c) for c in certs[1:]] if len(certs) > 1 else [],
                         "svid_chain should not need to carry the root")
        now = datetime.datetime.now(datetime.timezone.utc)
        life = not_after(leaf) - now
        self.assertGreater(life, datetime.timedelta(hours=23), "node SVID TTL (24 h expected)")
        self.assertLessEqual(life, datetime.timedelta(hours=24, minutes=5))
        keys = json.loads(resp.trust_bundle_jwks)["keys"]
        x5c = [base64.b64decode(k["x5c"][0]) for k in keys if k.get("use") == "x509-svid"]
        self.assertIn(der(root), x5c, "Join's bundle lacks the pinned root")

    # 4. Refusals ------------------------------------------------------------------------

    def test_03_replayed_token_refused(self):
        j = self.joined()
        token = j["token"]
        e = self.assert_rpc_code(
            lambda: j["anon"].Join(self.pb.JoinRequest(token=token, node_name=self.NODE,
                                                      csr=csr_der(new_key())),
                                   timeout=RPC_TIMEOUT),
            [self.grpc.StatusCode.PERMISSION_DENIED, self.grpc.StatusCode.UNAUTHENTICATED],
            "Join with an already used token")
        self.assertNotIn(parse_token(token)["secret"], e.details())
        tid = parse_token(token)["id"]
        reuse = [r for r in self.audit(type="token.reuse")
                 if tid in json.dumps(r.get("details", {}))]
        self.assertTrue(reuse, "no token.reuse audit record for the replayed token")

    def test_04_token_for_other_node_refused(self):
        j = self.joined()
        token = self.new_token(self.NODE)
        self.assert_rpc_code(
            lambda: j["anon"].Join(self.pb.JoinRequest(token=token, node_name="node-b",
                                                      csr=csr_der(new_key())),
                                   timeout=RPC_TIMEOUT),
            [self.grpc.StatusCode.PERMISSION_DENIED, self.grpc.StatusCode.UNAUTHENTICATED],
            "Join as node-b with a token created for node-a")
        nodes = self.cli("node", "list").stdout
        self.assertNotIn("node-b", nodes, "node-b was registered with node-a's token")
        self.assertTrue(self.audit(type="token.mismatch", node="node-b"),
                        "no token.mismatch audit record naming node-b")

    def test_05_wrong_pin_client_refuses(self):
        token = self.new_token("node-c")
        t = parse_token(token)
        bad_pin = sha256_hex(b"not the sigil root " + os.urandom(8))
        bad = ".".join(["SJT1", t["id"], t["secret"], bad_pin])
        with self.assertRaises(PinMismatch, msg="client accepted a server the pin does not match"):
            FirstContact(self.tmp).pinned_root(self.agent_addr, bad)
        # The client sent nothing: the only record naming this token is its creation.
        named = [r["type"] for r in self.audit()
                 if t["id"] in json.dumps(r.get("details", {}))]
        self.assertEqual(named, ["token.create"],
                         f"the refused token reached the server: {named}")
        # Defense in depth: a client that sends it anyway is refused by the server too.
        j = self.joined()
        self.assert_rpc_code(
            lambda: j["anon"].Join(self.pb.JoinRequest(token=bad, node_name="node-c",
                                                      csr=csr_der(new_key())),
                                   timeout=RPC_TIMEOUT),
            [self.grpc.StatusCode.PERMISSION_DENIED, self.grpc.StatusCode.UNAUTHENTICATED],
            "Join with a token pinning another CA")

    # 5. Node SVID renewal and Sync ------------------------------------------------------

    def test_06_renew_node_svid(self):
        j = self.joined()
        key2 = new_key()
        resp = self.call(j["stub"].RenewNodeSVID,
                         self.pb.RenewNodeSVIDRequest(csr=csr_der(key2)), "RenewNodeSVID")
        certs = der_certs(resp.svid_chain)
        leaf = certs[0]
        self.assertEqual(uri_sans(leaf), [f"spiffe://{TD}/sigil/node/{self.NODE}"])
        self.assertTrue(same_public_key(leaf, key2), "renewed SVID is not for the new key")
        self.assertNotEqual(leaf.serial_number, j["certs"][0].serial_number)
        self.verify_chain(certs, j["root"])
        self.assertEqual(resp.expires_at, int(not_after(leaf).timestamp()))
        self.assertGreater(resp.expires_at, time.time() + 23 * 3600)
        # The renewed certificate authenticates.
        renewed = self.stub(pem(j["root"]), b"".join(pem(c) for c in certs), key_pem(key2))
        again = self.call(renewed.RenewNodeSVID,
                          self.pb.RenewNodeSVIDRequest(csr=csr_der(key2)),
                          "RenewNodeSVID with the renewed certificate")
        self.assertTrue(again.svid_chain)
        self.assertTrue(self.audit(type="node.renew", node=self.NODE), "no node.renew audit")

    def _open_sync(self, stub, from_revision: int = 0):
        q: queue.Queue = queue.Queue()
        call = stub.Sync(self.pb.SyncRequest(from_revision=from_revision), timeout=45)
        self.addCleanup(call.cancel)

        def reader() -> None:
            try:
                for msg in call:
                    q.put(msg)
                q.put(None)
            except self.grpc.RpcError as e:
                q.put(e)

        threading.Thread(target=reader, daemon=True).start()
        return call, q

    def _next_sync(self, q: queue.Queue, pred: Callable, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.fail(f"Sync: no message with {what} within {timeout}s; saw {seen}")
            try:
                msg = q.get(timeout=remaining)
            except queue.Empty:
                continue
            if msg is None:
                self.fail(f"Sync stream ended before {what}; saw {seen}")
            if isinstance(msg, self.grpc.RpcError):
                self.fail(f"Sync stream failed before {what}: {msg.code().name}: {msg.details()}")
            if pred(msg):
                return msg
            seen.append((msg.revision, msg.snapshot,
                         [(u.kind, u.name) for u in msg.upserts],
                         [(d.kind, d.name) for d in msg.deletes]))

    def test_07_sync_snapshot_and_deltas(self):
        j = self.joined()
        self.apply(WEB_WI.replace("name: web}", "name: sync-pre}")
                   .replace("/web/{{node}}", "/sync/pre"))
        call, q = self._open_sync(j["stub"])
        snap = self._next_sync(q, lambda m: True, DELTA_TIMEOUT, "the first message")
        self.assertTrue(snap.snapshot, "first Sync message from revision 0 is not a snapshot")
        self.assertGreater(snap.revision, 0)
        names = {(u.kind, u.name) for u in snap.upserts}
        self.assertIn(("WorkloadIdentity", "sync-pre"), names)
        pre = next(u for u in snap.upserts if u.name == "sync-pre")
        self.assertEqual(json.loads(pre.spec_json)["spiffeId"], f"spiffe://{TD}/sync/pre")
        jwks = json.loads(snap.trust_bundle_jwks)
        x509_keys = [k for k in jwks["keys"] if k.get("use") == "x509-svid"]
        self.assertTrue(x509_keys, f"bundle has no x509-svid key: {snap.trust_bundle_jwks}")
        self.assertIn(parse_token(j["token"])["pin"],
                      [sha256_hex(base64.b64decode(k["x5c"][0])) for k in x509_keys],
                      "the pinned root is not among the bundle's x509-svid keys")
        self.assertTrue([k for k in jwks["keys"] if k.get("use") == "jwt-svid"],
                        "bundle has no jwt-svid key")

        # A WorkloadIdentity applied while the stream is open arrives as a delta.
        self.apply(WEB_WI.replace("name: web}", "name: sync-live}")
                   .replace("/web/{{node}}", "/sync/live"))
        up = self._next_sync(
            q, lambda m: any(u.name == "sync-live" for u in m.upserts), DELTA_TIMEOUT,
            "an upsert of WorkloadIdentity/sync-live")
        self.assertFalse(up.snapshot, "a change arrived as a snapshot, expected a delta")
        self.assertGreater(up.revision, snap.revision)
        live = next(u for u in up.upserts if u.name == "sync-live")
        self.assertEqual(live.kind, "WorkloadIdentity")
        self.assertGreater(live.resource_version, 0)
        self.assertEqual(json.loads(live.spec_json)["spiffeId"], f"spiffe://{TD}/sync/live")

        self.cli("delete", "WorkloadIdentity", "sync-live")
        gone = self._next_sync(
            q, lambda m: any(d.name == "sync-live" for d in m.deletes), DELTA_TIMEOUT,
            "a delete of WorkloadIdentity/sync-live")
        self.assertFalse(gone.snapshot)
        self.assertGreater(gone.revision, up.revision)
        self.assertIn(("WorkloadIdentity", "sync-live"),
                      [(d.kind, d.name) for d in gone.deletes])
        call.cancel()

        # Resuming from the last revision seen: no snapshot, the bundle first.
        call2, q2 = self._open_sync(j["stub"], gone.revision)
        hello = self._next_sync(q2, lambda m: True, DELTA_TIMEOUT, "the resume message")
        self.assertFalse(hello.snapshot, "resume from a known revision sent a snapshot")
        self.assertEqual(hello.revision, gone.revision)
        self.assertTrue(hello.trust_bundle_jwks, "resume did not send the bundle first")
        call2.cancel()

    # 6. Workload SVIDs ------------------------------------------------------------------

    def _sign(self, stub, pid: int, selectors: Sequence[str], spiffe_id: str = WEB_ID,
              uid: int = 1000, key=None):
        key = key or new_key()
        req = self.pb.SignWorkloadSVIDRequest(csr=csr_der(key), spiffe_id=spiffe_id,
                                              process=self.process(pid, uid, selectors))
        return key, stub.SignWorkloadSVID(req, timeout=RPC_TIMEOUT)

    def test_08_sign_workload_svid(self):
        j = self.joined()
        self.apply(WEB_WI)
        pid = 31001
        try:
            key, resp = self._sign(j["stub"], pid, WEB_SELECTORS)
        except self.grpc.RpcError as e:
            self.fail(f"SignWorkloadSVID for matching selectors: {e.code().name}: {e.details()}")
        certs = der_certs(resp.svid_chain)
        leaf = certs[0]
        self.assertEqual(uri_sans(leaf), [WEB_ID], "workload SVID URI SAN")
        self.assertEqual(dns_sans(leaf), ["web.internal"], "workload SVID DNS SANs (dnsNames)")
        self.assertTrue(same_public_key(leaf, key))
        self.verify_chain(certs, j["root"])
        life = resp.expires_at - time.time()
        self.assertTrue(29 * 60 <= life <= 31 * 60, f"ttl 30m expected, got {life:.0f}s")
        self.assertEqual(resp.expires_at, int(not_after(leaf).timestamp()))

        denied = [
            (["unix:uid:1000"], WEB_ID, "a selector missing (unix:path)"),
            (["unix:uid:1001", "unix:path:/usr/bin/web"], WEB_ID, "another uid"),
            (WEB_SELECTORS, f"spiffe://{TD}/web/node-b", "an ID rendered for another node"),
            (WEB_SELECTORS, f"spiffe://{TD}/sigil/node/{self.NODE}", "the node's own ID"),
        ]
        for i, (sel, sid, what) in enumerate(denied):
            self.assert_rpc_code(lambda: self._sign(j["stub"], 31100 + i, sel, sid),
                                 [self.grpc.StatusCode.PERMISSION_DENIED],
                                 f"SignWorkloadSVID with {what}")
        self.assertTrue(self.audit(type="svid.denied", pid=31100),
                        "no svid.denied audit record for the refused pid 31100")

    def test_09_mint_jwt_svid_verifies_with_sync_bundle(self):
        jwt = self.mods["jwt"]
        j = self.joined()
        self.apply(WEB_WI)
        call, q = self._open_sync(j["stub"])
        snap = self._next_sync(q, lambda m: m.snapshot, DELTA_TIMEOUT, "the snapshot")
        call.cancel()
        jwks = json.loads(snap.trust_bundle_jwks)
        req = self.pb.MintJWTSVIDRequest(spiffe_id=WEB_ID, audience=["db"],
                                         process=self.process(32001, 1000, WEB_SELECTORS))
        resp = self.call(j["stub"].MintJWTSVID, req, "MintJWTSVID")
        header = jwt.get_unverified_header(resp.token)
        keys = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
        self.assertEqual(len(keys), 1, f"kid {header.get('kid')!r} not in the Sync bundle")
        self.assertEqual(keys[0].get("use"), "jwt-svid")
        public = jwt.PyJWK(keys[0]).key
        claims = jwt.decode(resp.token, key=public, algorithms=[header["alg"]], audience="db",
                            options={"require": ["sub", "aud", "exp"]})
        self.assertEqual(claims["sub"], WEB_ID)
        self.assertEqual(claims["exp"], resp.expires_at)
        self.assertTrue(240 <= resp.expires_at - time.time() <= 310, "JWT-SVID TTL 5 min")
        with self.assertRaises(jwt.InvalidAudienceError):
            jwt.decode(resp.token, key=public, algorithms=[header["alg"]], audience="other")

        self.assert_rpc_code(
            lambda: j["stub"].MintJWTSVID(self.pb.MintJWTSVIDRequest(
                spiffe_id=WEB_ID, audience=["payments"],
                process=self.process(32002, 1000, WEB_SELECTORS)), timeout=RPC_TIMEOUT),
            [self.grpc.StatusCode.PERMISSION_DENIED], "MintJWTSVID outside jwtAudiences")
        self.assert_rpc_code(
            lambda: j["stub"].MintJWTSVID(self.pb.MintJWTSVIDRequest(
                spiffe_id=WEB_ID, audience=["db"],
                process=self.process(32003, 1001, ["unix:uid:1001"])), timeout=RPC_TIMEOUT),
            [self.grpc.StatusCode.PERMISSION_DENIED], "MintJWTSVID for non-matching selectors")
        self.assert_rpc_code(
            lambda: j["stub"].MintJWTSVID(self.pb.MintJWTSVIDRequest(
                spiffe_id=WEB_ID, process=self.process(32004, 1000, WEB_SELECTORS)),
                timeout=RPC_TIMEOUT),
            [self.grpc.StatusCode.INVALID_ARGUMENT], "MintJWTSVID without an audience")
        self.assertTrue(self.audit(type="jwt.issue", pid=32001), "no jwt.issue audit for pid")

    def test_10_calls_without_node_certificate(self):
        j = self.joined()
        anon = j["anon"]
        unauth = [self.grpc.StatusCode.UNAUTHENTICATED]
        proc = self.process(33001, 1000, WEB_SELECTORS)
        calls = {
            "RenewNodeSVID": lambda s: s.RenewNodeSVID(
                self.pb.RenewNodeSVIDRequest(csr=csr_der(new_key())), timeout=RPC_TIMEOUT),
            "SignWorkloadSVID": lambda s: s.SignWorkloadSVID(self.pb.SignWorkloadSVIDRequest(
                csr=csr_der(new_key()), spiffe_id=WEB_ID, process=proc), timeout=RPC_TIMEOUT),
            "MintJWTSVID": lambda s: s.MintJWTSVID(self.pb.MintJWTSVIDRequest(
                spiffe_id=WEB_ID, audience=["db"], process=proc), timeout=RPC_TIMEOUT),
            "FetchCredential": lambda s: s.FetchCredential(self.pb.FetchCredentialRequest(
                binding="ml-openai", process=proc), timeout=RPC_TIMEOUT),
            "Sync": lambda s: next(iter(s.Sync(self.pb.SyncRequest(), timeout=RPC_TIMEOUT))),
        }
        for name, fn in calls.items():
            with self.subTest(rpc=name, client="no certificate"):
                self.assert_rpc_code(lambda: fn(anon), unauth, f"{name} without a client cert")
        # A valid SVID of the trust domain that is not a node (the admin credential).
        admin = self.stub(pem(j["root"]), (self.data / "admin" / "cert.pem").read_bytes(),
                          (self.data / "admin" / "key.pem").read_bytes())
        for name, fn in calls.items():
            with self.subTest(rpc=name, client="admin SVID"):
                self.assert_rpc_code(lambda: fn(admin), [self.grpc.StatusCode.PERMISSION_DENIED],
                                     f"{name} with the admin SVID")

    # 7. Credentials ---------------------------------------------------------------------

    CRED_SECRET = "sk-e2e-" + secrets.token_urlsafe(24)

    def apply_credentials(self) -> None:
        self.apply(f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: ml-trainer}}
spec:
  spiffeId: spiffe://{TD}/ml/{{{{node}}}}/trainer
  selectors: [unix:uid:2000]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: ml-elsewhere}}
spec:
  spiffeId: spiffe://{TD}/ml/elsewhere
  selectors: [unix:uid:2100]
  nodes: [node-z]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: billing}}
spec:
  spiffeId: spiffe://{TD}/billing/app
  selectors: [unix:uid:3000]
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: openai-key}}
spec: {{type: static, value: "{self.CRED_SECRET}"}}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: openai}}
spec:
  mode: inject
  addresses: ["api.openai.example:80"]
  tls: {{port: 443}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: ml-openai}}
spec:
  source: openai-key
  service: openai
  identities: ["spiffe://{TD}/ml/*"]
  delivery:
    header: {{name: Authorization, template: "Bearer {{{{secret}}}}"}}
""")

    def assert_secret_nowhere(self, secret: str) -> None:
        self.assertNotIn(secret, self.server.output, "credential secret in the server's log")
        for f in sorted(self.data.iterdir()):
            if f.is_file():
                self.assertNotIn(secret.encode(), f.read_bytes(),
                                 f"credential secret in clear in {f.name}")
        self.assertNotIn(secret, self.cli("audit").stdout, "credential secret in the audit log")

    def test_11_credential_secret_never_synced(self):
        j = self.joined()
        self.apply_credentials()
        call, q = self._open_sync(j["stub"])
        snap = self._next_sync(q, lambda m: m.snapshot, DELTA_TIMEOUT, "the snapshot")
        call.cancel()
        kinds = {u.kind for u in snap.upserts}
        self.assertIn("CredentialBinding", kinds)
        self.assertNotIn("CredentialSource", kinds, "a CredentialSource was synced to an agent")
        self.assertNotIn(self.CRED_SECRET.encode(), snap.SerializeToString(),
                         "the credential secret is in the Sync snapshot")
        binding = next(u for u in snap.upserts if u.kind == "CredentialBinding")
        self.assertEqual(json.loads(binding.spec_json)["source"], "openai-key")
        self.assert_secret_nowhere(self.CRED_SECRET)

    def test_12_fetch_credential(self):
        j = self.joined()
        self.apply_credentials()
        fetch = j["stub"].FetchCredential
        req = self.pb.FetchCredentialRequest(
            binding="ml-openai", process=self.process(34001, 2000, ["unix:uid:2000"],
                                                      exe="/usr/bin/trainer"))
        try:
            resp = fetch(req, timeout=RPC_TIMEOUT)
        except self.grpc.RpcError as e:
            if e.code() == self.grpc.StatusCode.UNIMPLEMENTED:
                self.fail(f"FetchCredential is not implemented by this server yet "
                          f"(UNIMPLEMENTED: {e.details()}); this case passes once it lands")
            self.fail(f"FetchCredential for a process whose identity "
                      f"spiffe://{TD}/ml/{self.NODE}/trainer matches the binding: "
                      f"{e.code().name}: {e.details()}")
        self.assertEqual(resp.secret, self.CRED_SECRET.encode(), "static secret bytes")
        self.assertGreater(resp.expires_at, time.time(), "grant expires_at is not in the future")
        self.assertLess(resp.expires_at, time.time() + 25 * 3600, "grant TTL implausibly long")
        self.assertNotIn(self.CRED_SECRET, json.dumps(dict(resp.attributes)))
        fields = resp.DESCRIPTOR.fields_by_name
        if "spiffe_id" in fields:  # newer agent.proto: the identity the grant was made for
            self.assertEqual(resp.spiffe_id, f"spiffe://{TD}/ml/{self.NODE}/trainer")
        if "source_type" in fields:
            self.assertEqual(resp.source_type, "static")

        denied = [
            ("ml-openai", 34002, 3000, ["unix:uid:3000"],
             "a process whose identity (billing) is not in the binding"),
            ("ml-openai", 34003, 9999, ["unix:uid:9999"], "a process matching no identity"),
            ("ml-openai", 34004, 2100, ["unix:uid:2100"],
             "a process whose ml identity is restricted to another node"),
        ]
        for binding, pid, uid, sel, what in denied:
            with self.subTest(what=what):
                e = self.assert_rpc_code(
                    lambda: fetch(self.pb.FetchCredentialRequest(
                        binding=binding, process=self.process(pid, uid, sel)),
                        timeout=RPC_TIMEOUT),
                    [self.grpc.StatusCode.PERMISSION_DENIED], f"FetchCredential for {what}")
                self.assertNotIn(self.CRED_SECRET, e.details())
        self.assert_rpc_code(
            lambda: fetch(self.pb.FetchCredentialRequest(
                binding="no-such-binding", process=self.process(34005, 2000, ["unix:uid:2000"])),
                timeout=RPC_TIMEOUT),
            [self.grpc.StatusCode.NOT_FOUND, self.grpc.StatusCode.PERMISSION_DENIED],
            "FetchCredential for an unknown binding")

        grants = self.audit(type="credential.grant", pid=34001)
        self.assertTrue(grants, "no credential.grant audit record for pid 34001")
        self.assertEqual(grants[-1].get("node"), self.NODE)
        self.assertTrue(self.audit(type="credential.denied", pid=34002),
                        "no credential.denied audit record for pid 34002")
        self.assert_secret_nowhere(self.CRED_SECRET)

    # 8. Audit ---------------------------------------------------------------------------

    def test_13_audit_names_node_and_pid(self):
        j = self.joined()
        self.apply(WEB_WI)
        pid = 35001
        try:
            self._sign(j["stub"], pid, WEB_SELECTORS)
        except self.grpc.RpcError as e:
            self.fail(f"SignWorkloadSVID: {e.code().name}: {e.details()}")
        text = self.cli("audit", "--type", "node.join").stdout
        self.assertIn(f"node={self.NODE}", text, f"no node.join record for {self.NODE}:\n{text}")
        self.assertIn(f"identity=spiffe://{TD}/sigil/node/{self.NODE}", text)
        text = self.cli("audit", "--type", "svid.issue", "--pid", str(pid)).stdout
        lines = [ln for ln in text.splitlines() if "\tsvid.issue\t" in ln]
        self.assertEqual(len(lines), 1, f"svid.issue records for pid {pid}:\n{text}")
        for needle in (f"node={self.NODE}", f"pid={pid}", f"identity={WEB_ID}",
                       "exe=/usr/bin/web", '"workload_identity":"web"'):
            self.assertIn(needle, lines[0])
        self.assertIn("ok", self.cli("audit", "verify").stdout)

    # Last (stops the shared server) -----------------------------------------------------

    def test_99_sigterm_with_open_sync_stream(self):
        j = self.joined()
        _, q = self._open_sync(j["stub"])
        self._next_sync(q, lambda m: m.snapshot, DELTA_TIMEOUT, "the snapshot")
        self.server.proc.send_signal(signal.SIGTERM)
        rc = self.server.wait_exit(timeout=10)
        self.assertEqual(rc, 0, f"server exit status after SIGTERM with an open Sync stream\n"
                                f"{self.server.output}")
        try:
            end = q.get(timeout=5)
        except queue.Empty:
            self.fail("the Sync stream did not end when the server stopped")
        self.assertTrue(end is None or isinstance(end, self.grpc.RpcError),
                        f"unexpected message after SIGTERM: {end}")
        self.assert_secret_nowhere_offline(self.CRED_SECRET)

    def assert_secret_nowhere_offline(self, secret: str) -> None:
        self.assertNotIn(secret, self.server.output, "credential secret in the server's log")
        for f in sorted(self.data.iterdir()):
            if f.is_file():
                self.assertNotIn(secret.encode(), f.read_bytes(),
                                 f"credential secret in clear in {f.name} after shutdown")


if __name__ == "__main__":
    helpers.main()
