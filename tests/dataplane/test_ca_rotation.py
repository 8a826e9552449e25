"""CA rotation end to end (issue 7): `sigil ca rotate` under continuous mTLS traffic.

  host A (10.81.0.1): server, agent A, a client loop (a new curl connection every ~60 ms)
  host B (10.81.0.2): agent B, an HTTP server behind a mutual Service

Every credential is short-lived (workload SVIDs, node SVIDs, the server's certificate and the
admin certificates: 20 s) so the whole rotation fits in about a minute:

  1. traffic flows under the first CA;
  2. `sigil ca rotate --activate-after 3s`: the new CA is in both agents' bundles at once;
  3. activation: the server signs with the new CA; a peer still holding an old-CA SVID is
     accepted (both roots in the bundle), and a freshly fetched SVID, agent B's service SVID
     (as `openssl s_client` sees it), both agents' node SVIDs, the server's TLS certificate and
     the admin certificate all come from the new CA;
  4. the old CA leaves the bundle (server, agents) once everything it signed has expired;
  5. not one request of the loop failed, from before the rotation to after the retirement, and
     one connection opened before the rotation (a slowly read 8 MiB download) was still open
     after the activation and completed intact: existing connections carry on through SVID
     renewals and the CA switch.
Run as root (namespaces, BPF, cgroup2); any missing capability is a failure, not a skip.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROTO = ROOT / "src" / "proto" / "workload.proto"
PROBE_UID = 4243
sys.path.insert(0, str(HERE.parent / "interop"))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402
from mesh import Mesh  # noqa: E402

TD = "example.org"
NS_A, NS_B = "A", "B"  # hosts of the Mesh
IP_A, IP_B = "10.81.0.1", "10.81.0.2"
PORT = 8080
TTL = "20s"  # workload, node, server and admin certificates
PYTHON = os.path.realpath("/usr/bin/python3")
CURL = os.path.realpath(shutil.which("curl") or "/usr/bin/curl")
BODY = "hello through a rotating CA\n"
LONG_BYTES = 8 << 20  # read at 256 KiB/s: ~32 s, longer than prepare -> activation

RESOURCES = f"""
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: client}}
spec:
  spiffeId: spiffe://{TD}/client
  selectors: ["unix:path:{CURL}"]
  ttl: {TTL}
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: web}}
spec:
  spiffeId: spiffe://{TD}/web
  selectors: ["unix:path:{PYTHON}"]
  ttl: {TTL}
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: probe}}
spec:
  spiffeId: spiffe://{TD}/probe
  selectors: ["unix:uid:{PROBE_UID}"]
  ttl: {TTL}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: web}}
spec:
  mode: mutual
  addresses: ["{IP_B}:{PORT}"]
  identity: spiffe://{TD}/web
---
apiVersion: sigil.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: client-to-web}}
spec:
  sources: [spiffe://{TD}/client, spiffe://{TD}/probe]
  destinations: [web]
"""

# The client loop: one new connection (one curl process) per iteration, one line per result.
# Bounded by the stop file and by an iteration cap (~2.5 min at the pace below).
LOOP = f"""
i=0
while [ ! -e "$1" ] && [ $i -lt 2000 ]; do
  out=$({CURL} -sS --max-time 5 http://{IP_B}:{PORT}/hello.txt 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && [ "$out" = "{BODY.strip()}" ]; then echo OK; else echo "FAIL rc=$rc $out"; fi
  i=$((i+1))
  sleep 0.06
done
echo DONE
"""


def sha256_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pem_certs(text: str) -> list[bytes]:
    """DER of every PEM certificate in `text`."""
    return [ssl.PEM_cert_to_DER_cert(m.group(0).decode())
            for m in helpers.PEM_CERT_RE.finditer(text.encode())]


def issued_by(leaf_der: bytes, ca_der: bytes) -> bool:
    """`ca` signed `leaf`: issuer name, AKID/SKID and the signature itself."""
    from cryptography import x509
    leaf = x509.load_der_x509_certificate(leaf_der)
    ca = x509.load_der_x509_certificate(ca_der)
    if leaf.issuer != ca.subject:
        return False
    akid = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    skid = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    if akid.key_identifier != skid.digest:
        return False
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    key = ca.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(leaf.signature, leaf.tbs_certificate_bytes,
                       ec.ECDSA(leaf.signature_hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(),
                       leaf.signature_hash_algorithm)
        else:
            raise AssertionError(f"unexpected CA key type {type(key)}")
    except InvalidSignature:
        return False
    return True


class Traffic:
    """The client loop under `sigil run` in A, its result lines stamped as they arrive."""

    def __init__(self, argv: list[str], stop: Path):
        self.stop = stop
        self.proc = subprocess.Popen(argv + [str(stop)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def ok_count(self) -> int:
        with self.lock:
            return sum(1 for _, line in self.lines if line == "OK")

    def failures(self) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, line) for t, line in self.lines if line.startswith("FAIL")]

    def finish(self, timeout: float = 20) -> list[tuple[float, str]]:
        self.stop.write_text("")
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError("the client loop did not stop within its bound") from None
        self.thread.join(timeout=5)
        with self.lock:
            return list(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


class CaRotationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._td = tempfile.TemporaryDirectory(prefix="sigil-ca-rotation-")
        cls.tmp = Path(cls._td.name)
        os.chmod(cls.tmp, 0o755)
        cls.traffic: Traffic | None = None
        cls.mesh = Mesh(cls.tmp, TD, IP_A, IP_B, tag="car")
        try:
            for tool in ("curl", "openssl"):
                helpers.require_tool(tool)
            helpers.require_modules()
            helpers.require_modules([("cryptography", "python3-cryptography")])
            agent = ["--pool-idle", "1"]
            cls.mesh.start(RESOURCES, {"A": agent, "B": agent},
                           server_args=["--server-cert-ttl", TTL, "--node-svid-ttl", TTL,
                                        "--admin-cert-ttl", TTL])
            cls.server, cls.server_data = cls.mesh.server, cls.mesh.server_data
            cls.agent_a, cls.agent_b = cls.mesh.agents["A"], cls.mesh.agents["B"]
            for host, agent_peer in cls.mesh.agents.items():
                agent_peer.data = cls.tmp / f"agent-{host}"
            cls._start_web()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.traffic is not None:
            cls.traffic.kill()
        cls.mesh.close()
        cls._td.cleanup()

    # --- setup -------------------------------------------------------------------------------

    @classmethod
    def cli(cls, *args, input=None, check=True):
        return cls.mesh.cli(*args, input=input, check=check)

    @classmethod
    def sigil_run(cls, ns: str, agent: Peer, *cmd: object) -> list[str]:
        return cls.mesh.run_argv("A" if ns == NS_A else "B", *cmd)

    @classmethod
    def _start_web(cls) -> None:
        www = cls.tmp / "www"
        www.mkdir()
        (www / "hello.txt").write_text(BODY)
        # Fetched slowly across the whole rotation by one long-lived connection.
        (www / "long.bin").write_bytes(os.urandom(LONG_BYTES))
        cls.long_sha = hashlib.sha256((www / "long.bin").read_bytes()).hexdigest()
        peer = Peer(cls.sigil_run(NS_B, cls.agent_b, PYTHON, "-m", "http.server", PORT,
                                  "--bind", IP_B, "--directory", www), "web")
        cls.mesh.peers.append(peer)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(cls.sigil_run(NS_A, cls.agent_a, CURL, "-sS", "--max-time", "5",
                                             f"http://{IP_B}:{PORT}/hello.txt"),
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0 and r.stdout == BODY:
                return
            time.sleep(0.5)
        raise AssertionError(f"no answer through the mesh\nagent A:\n{cls.agent_a.output}\n"
                             f"agent B:\n{cls.agent_b.output}\nweb:\n{peer.output}")

    # --- observations ------------------------------------------------------------------------

    def ca_status(self) -> dict:
        return json.loads(self.cli("ca", "status", "--json").stdout)

    def bundle_roots(self) -> dict[str, bytes]:
        """The X.509 roots of the server's bundle file (DIR/admin/bundle.pem), by SHA-256."""
        text = (self.server_data / "admin" / "bundle.pem").read_text()
        return {sha256_der(d): d for d in pem_certs(text)}

    @staticmethod
    def agent_roots(agent: Peer) -> set[str]:
        """SHA-256 of the X.509 roots in an agent's saved bundle (bundle.jwks)."""
        doc = json.loads((agent.data / "bundle.jwks").read_text())
        return {sha256_der(base64.b64decode(k["x5c"][0])) for k in doc.get("keys", [])
                if k.get("use") == "x509-svid"}

    def fetch_probe_svid(self, out: Path) -> list[bytes]:
        """An SVID for spiffe://TD/probe from agent A's Workload API (a process of PROBE_UID),
        written to out/{svid,key,bundle}.pem. Returns the chain (DER, leaf first)."""
        out.mkdir(exist_ok=True)
        os.chown(out, PROBE_UID, PROBE_UID)
        r = subprocess.run(self.mesh.in_ns("A", "/usr/bin/setpriv", f"--reuid={PROBE_UID}",
                                 f"--regid={PROBE_UID}", "--clear-groups", PYTHON,
                                 ROOT / "tests" / "agent" / "wl_client.py", self.stubs,
                                 self.agent_a.socket, "x509-files", out, f"spiffe://{TD}/probe"),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(json.loads(r.stdout)["ok"], r.stdout)
        return pem_certs((out / "svid.pem").read_text())

    def s_client(self, svid_dir: Path, ca_file: Path | None = None) -> subprocess.CompletedProcess:
        """sigil/1 to agent B with `svid_dir`'s SVID as the client certificate, verifying B
        against `ca_file` (default: the bundle fetched with the SVID): the chain B presents
        (-showcerts) and the service's answer."""
        return subprocess.run(
            self.mesh.in_ns("A", "openssl", "s_client", "-connect", f"{IP_B}:15008", "-servername",
                  f"{PORT}.sigil.invalid", "-alpn", "sigil/1", "-cert", svid_dir / "svid.pem",
                  "-key", svid_dir / "key.pem", "-CAfile", ca_file or svid_dir / "bundle.pem",
                  "-verify_return_error", "-showcerts", "-ign_eof"),
            input=f"CONNECT {IP_B}:{PORT} SIGIL/1\r\nGET /hello.txt HTTP/1.0\r\n\r\n".encode(),
            capture_output=True, timeout=30)

    def wait(self, what: str, predicate, timeout: float, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        self.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})\n"
                  f"server:\n{self.server.output[-4000:]}\n"
                  f"agent A:\n{self.agent_a.output[-3000:]}\nagent B:\n{self.agent_b.output[-3000:]}")

    # --- the test ----------------------------------------------------------------------------

    def test_rotation_under_continuous_traffic(self):
        t_start = time.monotonic()
        self.stubs = self.tmp / "stubs"
        helpers.compile_proto(PROTO, self.stubs)
        status = self.ca_status()
        self.assertEqual([g["role"] for g in status["generations"]], ["active"], status)
        old_ca = status["generations"][0]["caSha256"]
        self.assertEqual(set(self.bundle_roots()), {old_ca})

        # A peer's SVID from the old CA, kept to present after activation.
        old_probe = self.tmp / "probe-old"
        old_chain = self.fetch_probe_svid(old_probe)
        self.assertTrue(issued_by(old_chain[0], self.bundle_roots()[old_ca]))

        # One connection held open from before the rotation to after the retirement: existing
        # connections carry on through SVID renewals (20 s), activation and retirement.
        long_out = self.tmp / "long.bin"
        # curl reads only as fast as a slow consumer takes the bytes (64 KiB per 0.25 s), so
        # the connection stays open ~30 s; a reset would truncate the file (the hash below).
        slow = (f"{CURL} -sS --max-time 120 http://{IP_B}:{PORT}/long.bin | "
                f"{{ i=0; while [ $i -lt {LONG_BYTES // 65536} ]; do "
                f"dd bs=65536 count=1 iflag=fullblock status=none >> {long_out} || break; "
                f"i=$((i+1)); sleep 0.25; done; cat >> {long_out}; }}")
        long_conn = Peer(self.sigil_run(NS_A, self.agent_a, "/bin/sh", "-c", slow),
                         "long-connection")
        self.addCleanup(long_conn.kill)

        stop = self.tmp / "traffic.stop"
        type(self).traffic = traffic = Traffic(
            self.sigil_run(NS_A, self.agent_a, "/bin/sh", "-c", LOOP, "loop"), stop)
        self.wait("traffic to flow", lambda: traffic.ok_count() >= 10, timeout=20, interval=0.2)
        self.assertEqual(traffic.failures(), [])

        # --- rotate: publish now, sign in 3 s -------------------------------------------------
        seen_a = self.agent_a.output.count("bundle.update")
        seen_b = self.agent_b.output.count("bundle.update")
        out = self.cli("ca", "rotate", "--activate-after", "3s").stdout
        self.assertIn("prepared CA", out)
        status = self.ca_status()
        prepared = [g for g in status["generations"] if g["role"] == "prepared"]
        self.assertEqual(len(prepared), 1, status)
        new_ca = prepared[0]["caSha256"]
        self.assertTrue(prepared[0]["activationScheduled"])
        again = self.cli("ca", "rotate", "--activate-after", "1s", check=False)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn(new_ca, again.stderr)  # the pending generation is named
        # Bundle first: both agents receive the new root before it signs anything.
        self.wait("both agents to receive the new root",
                  lambda: (self.agent_a.output.count("bundle.update") > seen_a
                           and self.agent_b.output.count("bundle.update") > seen_b
                           and new_ca in self.agent_roots(self.agent_a)
                           and new_ca in self.agent_roots(self.agent_b)),
                  timeout=10, interval=0.1)
        self.assertEqual(self.ca_status()["generations"][-1]["role"], "prepared",
                         "activated before the agents had the new root")

        # --- activation -----------------------------------------------------------------------
        def activated():
            s = self.ca_status()
            roles = {g["caSha256"]: g["role"] for g in s["generations"]}
            return s if roles.get(new_ca) == "active" and roles.get(old_ca) == "retiring" else None
        status = self.wait("activation", activated, timeout=20)
        # The connection opened under the old CA is still transferring after the switch.
        self.assertIsNone(long_conn.proc.poll(), "the long-lived connection ended before the "
                          f"activation\n{long_conn.output}")
        retiring = [g for g in status["generations"] if g["caSha256"] == old_ca][0]
        self.assertIsNotNone(retiring["leavesBundleAt"])
        self.assertLess(retiring["leavesBundleAt"], retiring["notAfter"])  # RFC 3339, UTC
        roots = self.bundle_roots()
        self.assertEqual(set(roots), {old_ca, new_ca})
        activations = json.loads(self.cli("audit", "--type", "ca.rotate.activate",
                                          "--json").stdout)
        self.assertEqual(len(activations), 1, activations)
        self.assertEqual(activations[0]["details"]["ca_sha256"], new_ca)
        self.assertEqual(activations[0]["details"]["previous_ca_sha256"], old_ca)

        # A peer still holding its old-CA SVID is accepted: both roots are in B's bundle. (B
        # itself may present either CA's SVID by now: verify it against both roots.)
        both = self.tmp / "both-roots.pem"
        both.write_text((self.server_data / "admin" / "bundle.pem").read_text())
        r = self.s_client(old_probe, both)
        self.assertIn(b"SIGIL/1 200 OK", r.stdout, r.stderr[-2000:])
        self.assertIn(BODY.encode(), r.stdout)
        # Agent A renews the probe's SVID (at half-life) from the new CA.
        new_probe = self.tmp / "probe-new"
        self.wait("agent A to hand out a probe SVID from the new CA",
                  lambda: issued_by(self.fetch_probe_svid(new_probe)[0], roots[new_ca]),
                  timeout=20)
        self.assertFalse(issued_by(pem_certs((new_probe / "svid.pem").read_text())[0],
                                   roots[old_ca]))

        # Agent B's service SVID is reissued by the new CA at its half-life.
        def b_presents_new_ca():
            self.fetch_probe_svid(new_probe)  # a current one: they live 20 s
            r = self.s_client(new_probe)
            presented = pem_certs(r.stdout.decode("utf-8", "replace"))
            ok = b"SIGIL/1 200 OK" in r.stdout and presented
            return ok and issued_by(presented[0], roots[new_ca])
        self.wait("agent B to present a web SVID from the new CA", b_presents_new_ca, timeout=30)
        # Agent A's client SVID is reissued too (issuances after activation are audited).
        def client_reissued():
            recs = json.loads(self.cli("audit", "--type", "svid.issue", "--identity",
                                       f"spiffe://{TD}/client", "--json").stdout)
            return [x for x in recs if x["seq"] > activations[0]["seq"]]
        self.wait("agent A to renew the client SVID", client_reissued, timeout=30)
        # Node SVIDs (renewed at half-life), the server's certificate, the admin certificate.
        def node_svids_new():
            return all(issued_by(pem_certs((a.data / "node.crt").read_text())[0], roots[new_ca])
                       for a in (self.agent_a, self.agent_b))
        self.wait("both node SVIDs to come from the new CA", node_svids_new, timeout=30)
        self.wait("the server's certificate to come from the new CA",
                  lambda: issued_by(pem_certs((self.server_data / "tls" / "server.crt")
                                              .read_text())[0], roots[new_ca]), timeout=10)
        self.wait("the admin certificate to come from the new CA",
                  lambda: issued_by(pem_certs((self.server_data / "admin" / "cert.pem")
                                              .read_text())[0], roots[new_ca]), timeout=15)

        # --- retirement: the old CA leaves once all it signed has expired ---------------------
        def retired():
            s = self.ca_status()
            return s if all(g["caSha256"] != old_ca for g in s["generations"]) else None
        status = self.wait("the old CA to leave the bundle", retired, timeout=75)
        self.assertEqual([g["role"] for g in status["generations"]], ["active"])
        self.assertEqual(status["generations"][0]["caSha256"], new_ca)
        self.wait("the bundle file to drop the old root",
                  lambda: set(self.bundle_roots()) == {new_ca}, timeout=5)
        self.wait("both agents to drop the old root",
                  lambda: (self.agent_roots(self.agent_a) == {new_ca}
                           and self.agent_roots(self.agent_b) == {new_ca}), timeout=10)
        retirements = json.loads(self.cli("audit", "--type", "ca.rotate.retire", "--json").stdout)
        self.assertEqual([x["details"]["ca_sha256"] for x in retirements], [old_ca])
        # A little more traffic with the new CA alone, then stop and count.
        t_retired = time.monotonic()
        ok_at_retirement = traffic.ok_count()
        self.wait("traffic after the retirement", lambda: traffic.ok_count() >= ok_at_retirement + 20,
                  timeout=20, interval=0.2)
        lines = traffic.finish()
        oks = [t for t, line in lines if line == "OK"]
        fails = [line for _, line in lines if line.startswith("FAIL")]
        self.assertEqual(fails, [], f"{len(fails)} of {len(oks) + len(fails)} requests failed\n"
                                    f"agent A:\n{self.agent_a.output[-4000:]}\n"
                                    f"agent B:\n{self.agent_b.output[-4000:]}")
        self.assertIn("DONE", [line for _, line in lines])
        self.assertGreater(len(oks), 200)
        self.assertLess(oks[0], t_retired - 15)  # traffic spanned the whole rotation
        self.assertGreater(oks[-1], t_retired)
        # The long-lived connection, opened before the rotation, completes intact.
        self.assertEqual(long_conn.proc.wait(timeout=90), 0, long_conn.output)
        self.assertEqual(hashlib.sha256(long_out.read_bytes()).hexdigest(), self.long_sha)
        self.cli("audit", "verify")
        print(f"\n{len(oks)} requests, 0 failed, {time.monotonic() - t_start:.0f} s",
              file=sys.stderr)


if __name__ == "__main__":
    helpers.main()
