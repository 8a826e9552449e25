"""Data plane end to end: two "hosts" (network namespaces joined by veth), one `sigil server`,
one `sigil agent --dataplane` per host, workloads started with `sigil run`.

  host A (10.77.0.1): server, agent A, clients (curl, python)
  host B (10.77.0.2): agent B, an HTTP server (python3 -m http.server) started with sigil run

Checks, each against the real binaries and kernel:
  * curl in A -> http://10.77.0.2:8080 through sigil/1 mTLS works, and agent B logs the
    client's SPIFFE ID;
  * a raw packet capture on A's veth sees no plaintext of the transfer;
  * a workload whose identity no AccessPolicy allows is refused (agent B audits 403);
  * a process outside managed cgroups is not intercepted;
  * `openssl s_client` with a certificate from another CA is rejected at port 15008, and with
    an SVID fetched from the Workload API it speaks sigil/1 and reaches the service;
  * TLS sessions are resumed for later connections (agent /metrics counters);
  * a permissive Service takes both sigil/1 and plaintext on its port;
  * a 256 MiB transfer arrives intact (SHA-256), 40 parallel connections all succeed, and a
    client's half-close still gets the whole response.
Run as root (namespaces, BPF, cgroup2); any missing capability is a failure, not a skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROTO = ROOT / "src" / "proto" / "workload.proto"
PROBE_UID = 4242
sys.path.insert(0, str(HERE.parent / "interop"))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402
from netns_topology import (delete_hosts, make_hosts, netns,  # noqa: E402
                            remove_cgroup_tree, sh)

TD = "example.org"
NS_A, NS_B = f"sgA{os.getpid()}", f"sgB{os.getpid()}"
IP_A, IP_B = "10.77.0.1", "10.77.0.2"
PORT = 8080
LEGACY_PORT = 8082  # a permissive Service: plaintext and sigil/1 both accepted
XFCC_PORT = 8083  # a mutual Service with peerIdentityForwarding: xfcc
# An HTTP/1.1 keep-alive server that answers every GET with the x-forwarded-client-cert
# fields it received, one per line.
XFCC_ECHO = (
    "import http.server,sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version='HTTP/1.1'\n"
    "    def do_GET(self):\n"
    "        b=''.join(v+'\\n' for v in self.headers.get_all('x-forwarded-client-cert') or [])\n"
    "        b=(b or 'none\\n').encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length',str(len(b)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(b)\n"
    "    def log_message(self,*a): pass\n"
    "http.server.ThreadingHTTPServer((sys.argv[1],int(sys.argv[2])),H).serve_forever()\n")
PYTHON = os.path.realpath("/usr/bin/python3")
CURL = os.path.realpath(shutil.which("curl") or "/usr/bin/curl")
MARKER = b"sigil-plaintext-marker-" + os.urandom(8).hex().encode()

RESOURCES = f"""
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: client}}
spec:
  spiffeId: spiffe://{TD}/client
  selectors: ["unix:path:{CURL}"]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: web}}
spec:
  spiffeId: spiffe://{TD}/web
  selectors: ["unix:path:{PYTHON}"]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: probe}}
spec:
  spiffeId: spiffe://{TD}/probe
  selectors: ["unix:uid:{PROBE_UID}"]
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
kind: Service
metadata: {{name: legacy}}
spec:
  mode: permissive
  addresses: ["{IP_B}:{LEGACY_PORT}"]
  identity: spiffe://{TD}/web
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: headers}}
spec:
  mode: mutual
  addresses: ["{IP_B}:{XFCC_PORT}"]
  identity: spiffe://{TD}/web
  peerIdentityForwarding: xfcc
---
apiVersion: sigil.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: client-to-web}}
spec:
  sources: [spiffe://{TD}/client, spiffe://{TD}/probe]
  destinations: [web, legacy, headers]
"""




class DataplaneTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._td = tempfile.TemporaryDirectory(prefix="sigil-dp-test-")
        cls.tmp = Path(cls._td.name)
        os.chmod(cls.tmp, 0o755)
        cls.peers: list[Peer] = []
        cls.cleanup_dirs: list[Path] = []
        cls.unmount: list[Path] = []
        cls.made_ns = False
        try:
            cls.sigil = helpers.sigil_bin()
            for tool in ("ip", "curl", "openssl"):
                helpers.require_tool(tool)
            cls._make_hosts()
            cls._start_server()
            cls.cli("apply", "-f", "-", input=RESOURCES + cls._partner_resources())
            cls.ext_cgroup = cls._make_external_cgroup()
            # Agent A takes the existing cgroup from its config file (--config).
            config_a = cls.tmp / "agent-a.yaml"
            config_a.write_text(f"manage-cgroup:\n  - {cls.ext_cgroup}\n")
            cls.agent_a = cls._start_agent("a", NS_A, ["--config", config_a])
            cls.agent_b = cls._start_agent("b", NS_B)
            cls._start_web()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for p in reversed(cls.peers):
            p.kill()
        # Kill whatever is left in the cgroups this test made (the agents' managed trees and
        # the external one), then remove them, so nothing outlives the test.
        for d in cls.cleanup_dirs:
            cls._remove_cgroup_tree(d)
        for m in cls.unmount:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        if cls.made_ns:
            delete_hosts(NS_A, NS_B)
        cls._td.cleanup()

    # --- setup -------------------------------------------------------------------------------

    @classmethod
    def _make_hosts(cls) -> None:
        cls.made_ns = True
        cls.veth_a = make_hosts(NS_A, IP_A, NS_B, IP_B, f"v{os.getpid() % 100000}")

    @classmethod
    def cli(cls, *args, input=None, check=True):
        return run(netns(NS_A, cls.sigil, *args, "--server", cls.admin_url, "--credentials",
                         cls.server_data / "admin"), input=input, check=check)

    @classmethod
    def _wait_ready(cls, peer: Peer, ready: Path, what: str) -> dict:
        return helpers.wait_ready_file(peer, ready, what, timeout=30)

    @classmethod
    def _start_server(cls) -> None:
        cls.server_data = cls.tmp / "server"
        ready = cls.tmp / "server.ready"
        peer = Peer(netns(NS_A, cls.sigil, "server", "--data-dir", cls.server_data,
                          "--trust-domain", TD, "--admin-listen", "127.0.0.1:0",
                          "--agent-listen", f"{IP_A}:0", "--metrics-listen", "off",
                          "--ready-file", ready), "sigil-server")
        cls.peers.append(peer)
        addr = cls._wait_ready(peer, ready, "server")
        cls.admin_url = "https://" + addr["admin"]
        cls.agent_api = addr["agent"]

    @classmethod
    def _start_agent(cls, name: str, ns: str, extra: list | None = None) -> Peer:
        token = cls.cli("token", "create", "--node", f"host-{name}").stdout
        m = re.search(r"SJT1\.[^\s]+", token)
        assert m, token
        token_file = cls.tmp / f"token-{name}"
        token_file.write_text(m.group(0) + "\n")
        os.chmod(token_file, 0o600)
        ready = cls.tmp / f"agent-{name}.ready"
        managed = f"sigil-e2e-{os.getpid()}-{name}"
        peer = Peer(netns(ns, cls.sigil, "agent", "--server", cls.agent_api,
                          "--join-token-file", token_file, "--data-dir", cls.tmp / f"agent-{name}",
                          "--socket", cls.tmp / f"agent-{name}.sock", "--node-name", f"host-{name}",
                          "--health-listen", "127.0.0.1:0", "--ready-file", ready,
                          "--dataplane", "--cgroup-root", cls.tmp / "cgroup2", "--pool-idle", "1",
                          "--creds-mount", "",
                          "--managed-cgroup", managed, *(extra or [])), f"sigil-agent-{name}")
        cls.peers.append(peer)
        addr = cls._wait_ready(peer, ready, f"agent {name}")
        peer.managed = managed
        cls.cleanup_dirs.append(cls.tmp / "cgroup2" / managed)
        peer.health = addr["health"]
        peer.socket = cls.tmp / f"agent-{name}.sock"
        peer.wait_for(r"dataplane\.intercept", timeout=10)
        return peer

    @classmethod
    def sigil_run(cls, ns: str, agent: Peer, *cmd: object) -> list[str]:
        return netns(ns, cls.sigil, "run", "--cgroup-root", cls.tmp / "cgroup2",
                     "--managed-cgroup", agent.managed, "--", *cmd)

    @staticmethod
    def _remove_cgroup_tree(d: Path) -> None:
        remove_cgroup_tree(d)

    @classmethod
    def _make_external_cgroup(cls) -> Path:
        """A cgroup outside the agent's managed tree (as a systemd service or a container would
        have), handed to agent A with --manage-cgroup."""
        # Our own cgroup2 mount: `ip netns exec` remounts /sys, so a mount under /sys/fs/cgroup
        # is not visible to the agents; this one is (the agents find it first).
        mount = cls.tmp / "cgroup2"
        mount.mkdir(exist_ok=True)
        sh("mount", "-t", "cgroup2", "none", mount)
        cls.unmount.append(mount)
        ext = mount / f"sigil-ext-{os.getpid()}"
        ext.mkdir()
        cls.cleanup_dirs.append(ext)
        return ext

    @classmethod
    def _partner_resources(cls) -> str:
        """An external HTTPS API in B (not managed) for `simple` mode, with its own CA, and a
        second Service pointing at the same server with a CA that did not sign it."""
        d = cls.tmp / "partner"
        d.mkdir()
        for ca in ("ca", "otherca"):
            sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
               "-nodes", "-keyout", d / f"{ca}.key", "-out", d / f"{ca}.pem", "-days", "1",
               "-subj", f"/CN=test {ca}")
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=api.partner.test")
        ext = d / "ext.cnf"
        ext.write_text("subjectAltName=DNS:api.partner.test\n")
        sh("openssl", "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem", "-CAkey",
           d / "ca.key", "-CAcreateserial", "-out", d / "server.pem", "-days", "1",
           "-extfile", ext)
        www = d / "www"
        www.mkdir()
        (www / "api.txt").write_text("partner api over tls\n")
        code = ("import http.server,ssl,functools,sys\n"
                "h=functools.partial(http.server.SimpleHTTPRequestHandler,directory=sys.argv[1])\n"
                f"s=http.server.HTTPServer(('{IP_B}',9443),h)\n"
                "c=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
                "c.load_cert_chain(sys.argv[2],sys.argv[3])\n"
                "s.socket=c.wrap_socket(s.socket,server_side=True)\n"
                "print('serving',flush=True)\ns.serve_forever()\n")
        partner = Peer(netns(NS_B, "/usr/bin/python3", "-c", code, www, d / "server.pem",
                             d / "server.key"), "partner")
        cls.peers.append(partner)
        partner.wait_for("serving", timeout=10)
        # A plain (unprotected) server in B, outside any managed cgroup.
        plain = Peer(netns(NS_B, "/usr/bin/python3", "-m", "http.server", "8081", "--bind", IP_B,
                           "--directory", www), "plain")
        cls.peers.append(plain)

        def block(pem: Path) -> str:
            return "".join("      " + line + "\n" for line in pem.read_text().splitlines())
        return f"""---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: partner}}
spec:
  mode: simple
  addresses: ["{IP_B}:9080"]
  tls:
    port: 9443
    sni: api.partner.test
    caBundle: |
{block(d / "ca.pem")}---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: partner-wrong-ca}}
spec:
  mode: simple
  addresses: ["{IP_B}:9081"]
  tls:
    port: 9443
    sni: api.partner.test
    caBundle: |
{block(d / "otherca.pem")}"""

    @classmethod
    def _start_web(cls) -> None:
        www = cls.tmp / "www"
        www.mkdir()
        (www / "hello.txt").write_bytes(b"hello through sigil\n")
        (www / "marker.txt").write_bytes(MARKER * 2000)
        big = www / "big.bin"
        with open(big, "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(256):
                f.write(block[i:] + block[:i])
        cls.big_sha = hashlib.sha256(big.read_bytes()).hexdigest()
        peer = Peer(cls.sigil_run(NS_B, cls.agent_b, PYTHON, "-m", "http.server", PORT,
                                  "--bind", IP_B, "--directory", www), "web")
        cls.peers.append(peer)
        legacy = Peer(cls.sigil_run(NS_B, cls.agent_b, PYTHON, "-m", "http.server", LEGACY_PORT,
                                    "--bind", IP_B, "--directory", www), "legacy")
        cls.peers.append(legacy)
        xfcc = Peer(cls.sigil_run(NS_B, cls.agent_b, PYTHON, "-c", XFCC_ECHO, IP_B, XFCC_PORT),
                    "xfcc-echo")
        cls.peers.append(xfcc)
        # Agent B finds the listener (bind record), attests it and holds the web SVID; poll
        # through the real path until a managed client gets an answer.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(cls.sigil_run(NS_A, cls.agent_a, CURL, "-sS", "--max-time", "5",
                                             f"http://{IP_B}:{PORT}/hello.txt"),
                               capture_output=True, timeout=30)
            if r.returncode == 0 and r.stdout == b"hello through sigil\n":
                return
            time.sleep(0.5)
        raise AssertionError(f"no answer through the mesh\nagent A:\n{cls.agent_a.output}\n"
                             f"agent B:\n{cls.agent_b.output}\nweb:\n{peer.output}")

    # --- tests -------------------------------------------------------------------------------

    def test_01_curl_through_mtls_and_server_sees_identity(self):
        r = run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "10",
                               f"http://{IP_B}:{PORT}/hello.txt"))
        self.assertEqual(r.stdout, "hello through sigil\n")
        self.agent_b.wait_for(r"dataplane\.inbound\.accepted.*spiffe://example\.org/client",
                              timeout=5)

    def test_02_no_plaintext_on_the_wire(self):
        # A raw AF_PACKET socket inside namespace A, bound to A's veth, in a subprocess.
        script = (
            "import os,socket,sys,time\n"
            "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(3))\n"
            f"s.bind(('{self.veth_a}',0));s.settimeout(0.2)\n"
            "print('ready',flush=True)\n"
            "out=open(sys.argv[1],'wb');end=time.monotonic()+20\n"
            "while time.monotonic()<end:\n"
            "  try: out.write(s.recv(65536))\n"
            "  except socket.timeout: pass\n"
            "  if os.path.exists(sys.argv[1]+'.stop'): break\n"
            "out.close()\n")
        dump = self.tmp / "capture.bin"
        cap = Peer(netns(NS_A, "/usr/bin/python3", "-c", script, dump), "capture")
        self.addCleanup(cap.kill)
        cap.wait_for("ready", timeout=10)
        r = subprocess.run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "10",
                                          f"http://{IP_B}:{PORT}/marker.txt"),
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, MARKER * 2000)
        Path(str(dump) + ".stop").write_text("")
        cap.proc.wait(timeout=10)
        data = dump.read_bytes()
        self.assertGreater(len(data), len(MARKER) * 2000, "the capture saw the transfer")
        self.assertNotIn(MARKER, data)
        self.assertNotIn(b"GET /marker.txt", data)

    def test_03_identity_without_policy_is_refused(self):
        # python in A holds spiffe://example.org/web, which no AccessPolicy lets reach "web".
        code = ("import socket\n"
                f"s=socket.create_connection(('{IP_B}',{PORT}),timeout=5)\n"
                "s.sendall(b'GET /hello.txt HTTP/1.0\\r\\n\\r\\n')\n"
                "try:\n  d=s.recv(100)\nexcept OSError as e:\n  d=b''\n"
                "print('GOT' if d else 'REFUSED')\n")
        r = subprocess.run(self.sigil_run(NS_A, self.agent_a, PYTHON, "-c", code),
                           capture_output=True, text=True, timeout=30)
        self.assertIn("REFUSED", r.stdout + r.stderr)
        self.agent_b.wait_for(r"dataplane\.inbound\.denied.*spiffe://example\.org/web", timeout=5)
        self.agent_a.wait_for(r"refused_by_peer.*403", timeout=5)
        # Both sides' denials are in the server's hash-chained audit trail, under each node.
        deadline = time.monotonic() + 10
        records = []
        while time.monotonic() < deadline:
            out = self.cli("audit", "--type", "dataplane.denied", "--json").stdout
            parsed = json.loads(out)
            records = parsed if isinstance(parsed, list) else parsed.get("records", [])
            records = [r.get("event", r) | {"details": r.get("details", r.get("event", {}).get(
                "details"))} for r in records]
            if {r.get("node") for r in records} >= {"host-a", "host-b"}:
                break
            time.sleep(0.3)
        by_node = {r["node"]: r for r in records}
        self.assertIn("host-a", by_node, records)
        self.assertIn("host-b", by_node, records)
        self.assertEqual(by_node["host-a"]["identity"], f"spiffe://{TD}/web")
        self.assertEqual(by_node["host-a"]["exe"], PYTHON)
        self.assertGreater(by_node["host-a"]["pid"], 0)
        self.assertEqual(by_node["host-b"]["identity"], f"spiffe://{TD}/web")
        self.assertIn("no AccessPolicy allows", json.dumps(by_node["host-b"]))
        self.cli("audit", "verify")

    def test_04_unmanaged_process_not_intercepted_and_plaintext_dropped(self):
        before = self.metrics(self.agent_a, NS_A)
        # Outside managed cgroups: not intercepted, so a plain server is reached directly...
        r = run(netns(NS_A, CURL, "-sS", "--max-time", "10", f"http://{IP_B}:8081/api.txt"))
        self.assertEqual(r.stdout, "partner api over tls\n")
        # ...but the protected port of a mutual Service drops plaintext from other hosts.
        r = subprocess.run(netns(NS_A, CURL, "-sS", "--max-time", "2",
                                 f"http://{IP_B}:{PORT}/hello.txt"),
                           capture_output=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, b"")
        self.agent_b.wait_for(r'dataplane\.enforce protected=\[[^]]*"web 10\.77\.0\.2:8080"',
                              timeout=5)
        after = self.metrics(self.agent_a, NS_A)
        self.assertEqual(after["sigil_dataplane_outbound_accepted_total"],
                         before["sigil_dataplane_outbound_accepted_total"])
        # On B itself (loopback path) the application is still reachable, e.g. by the agent.
        r = run(netns(NS_B, CURL, "-sS", "--max-time", "10", f"http://{IP_B}:{PORT}/hello.txt"))
        self.assertEqual(r.stdout, "hello through sigil\n")

    def test_11_simple_mode_originates_verified_tls(self):
        r = run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "10",
                               f"http://{IP_B}:9080/api.txt"))
        self.assertEqual(r.stdout, "partner api over tls\n")
        # The same server behind a Service whose CA did not sign it: refused, never relayed.
        r = subprocess.run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "10",
                                          f"http://{IP_B}:9081/api.txt"),
                           capture_output=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn(b"partner api", r.stdout)
        self.agent_a.wait_for(r"handshake_failed.*certificate verify failed.*partner-wrong-ca",
                              timeout=5)

    def test_05_foreign_ca_rejected_at_15008(self):
        # A client certificate with the right SPIFFE ID, from a CA outside the bundle.
        key = self.tmp / "foreign.key"
        crt = self.tmp / "foreign.crt"
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj", "/O=evil",
           "-addext", f"subjectAltName=URI:spiffe://{TD}/client")
        r = subprocess.run(netns(NS_A, "openssl", "s_client", "-connect", f"{IP_B}:15008",
                                 "-servername", f"{PORT}.sigil.invalid", "-alpn", "sigil/1",
                                 "-cert", crt, "-key", key, "-quiet"),
                           input=b"CONNECT 10.77.0.2:8080 SIGIL/1\r\nGET /hello.txt HTTP/1.0\r\n\r\n",
                           capture_output=True, timeout=30)
        self.assertNotIn(b"hello through sigil", r.stdout)
        self.agent_b.wait_for(r"dataplane\.inbound\.handshake_failed", timeout=5)

    def metrics(self, agent: Peer, ns: str) -> dict[str, float]:
        r = run(netns(ns, "curl", "-sS", "--max-time", "5", f"http://{agent.health}/metrics"))
        out = {}
        for line in r.stdout.splitlines():
            if line and not line.startswith("#"):
                k, v = line.split()
                out[k] = float(v)
        return out

    def test_06_openssl_client_with_workload_api_svid(self):
        stubs = self.tmp / "stubs"
        if not stubs.exists():
            helpers.require_modules()
            helpers.compile_proto(PROTO, stubs)
        out = self.tmp / "probe"
        out.mkdir(exist_ok=True)
        os.chown(out, PROBE_UID, PROBE_UID)

        r = subprocess.run(netns(NS_A, "/usr/bin/setpriv", f"--reuid={PROBE_UID}",
                                 f"--regid={PROBE_UID}", "--clear-groups", "/usr/bin/python3",
                                 ROOT / "tests" / "agent" / "wl_client.py", stubs,
                                 self.agent_a.socket, "x509-files", out, f"spiffe://{TD}/probe"),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(json.loads(r.stdout)["ok"], r.stdout)
        r = subprocess.run(netns(NS_A, "openssl", "s_client", "-connect", f"{IP_B}:15008",
                                 "-servername", f"{PORT}.sigil.invalid", "-alpn", "sigil/1",
                                 "-cert", out / "svid.pem", "-key", out / "key.pem",
                                 "-CAfile", out / "bundle.pem", "-verify_return_error",
                                 "-quiet"),
                           input=f"CONNECT {IP_B}:{PORT} SIGIL/1\r\n"
                                 "GET /hello.txt HTTP/1.0\r\n\r\n".encode(),
                           capture_output=True, timeout=30)
        self.assertIn(b"SIGIL/1 200 OK\r\n", r.stdout, r.stderr)
        self.assertIn(b"hello through sigil", r.stdout)
        self.agent_b.wait_for(r"dataplane\.inbound\.accepted.*spiffe://example\.org/probe",
                              timeout=5)

    def test_07_pooled_streams_and_resumed_sessions(self):
        # Workload connections ride as streams on pooled sigil/2 connections: many
        # connections, at most one TLS connection per loop. After the pool's idle close
        # (--pool-idle 1), the next pooled connection resumes the TLS session.
        before_a = self.metrics(self.agent_a, NS_A)
        before_b = self.metrics(self.agent_b, NS_B)
        def curl_three():
            for _ in range(3):
                run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "10",
                                   f"http://{IP_B}:{PORT}/hello.txt"))
        curl_three()
        time.sleep(2.5)  # every pooled connection idles out
        curl_three()
        after_a = self.metrics(self.agent_a, NS_A)
        after_b = self.metrics(self.agent_b, NS_B)
        delta = lambda after, before, name: after[name] - before[name]
        info = (f"{after_a}\nagent A:\n{self.agent_a.output[-3000:]}\n"
                f"agent B:\n{self.agent_b.output[-3000:]}")
        self.assertEqual(delta(after_a, before_a, "sigil_dataplane_pool_streams_total"), 6, info)
        self.assertEqual(delta(after_b, before_b, "sigil_dataplane_inbound_streams_total"), 6, info)
        opened = delta(after_a, before_a, "sigil_dataplane_pool_connections_total")
        self.assertGreaterEqual(opened, 2, info)  # one before and one after the idle close
        self.assertLessEqual(opened, 4, info)     # at most one per loop (2) each time
        self.assertEqual(delta(after_b, before_b, "sigil_dataplane_inbound_pooled_total"), opened)
        self.assertGreaterEqual(delta(after_a, before_a, "sigil_dataplane_outbound_resumed_total"),
                                1, info)
        self.assertGreaterEqual(delta(after_b, before_b, "sigil_dataplane_inbound_resumed_total"), 1)
        self.assertEqual(after_a["sigil_dataplane_outbound_failed_total"],
                         before_a["sigil_dataplane_outbound_failed_total"])
        # Both agents handed each TLS connection's records to their own record layer (the
        # OpenSSL connection object freed after the handshake).
        for before, after in ((before_a, after_a), (before_b, after_b)):
            self.assertGreaterEqual(delta(after, before, "sigil_dataplane_records_switched_total"),
                                    opened)
        self.agent_a.wait_for(r"dataplane\.outbound\.pooled_closed.*reason=\"idle\"", timeout=5)

    def test_08_large_transfer_intact(self):
        r = subprocess.run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "60",
                                          f"http://{IP_B}:{PORT}/big.bin"),
                           capture_output=True, timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout), 256 << 20)
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), self.big_sha)

    def test_09_parallel_connections(self):
        urls = [f"http://{IP_B}:{PORT}/hello.txt"] * 40
        r = subprocess.run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "30",
                                          "--parallel", "--parallel-max", "40", *urls),
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"hello through sigil\n" * 40)

    def test_10_half_close(self):
        code = ("import socket\n"
                f"s=socket.create_connection(('{IP_B}',{PORT}),timeout=10)\n"
                "s.sendall(b'GET /marker.txt HTTP/1.0\\r\\n\\r\\n')\n"
                "s.shutdown(socket.SHUT_WR)\n"
                "d=b''\n"
                "while True:\n"
                "  c=s.recv(65536)\n"
                "  if not c: break\n"
                "  d+=c\n"
                "print(len(d.split(b'\\r\\n\\r\\n',1)[1]))\n")
        # A python client holds the web identity, which policy denies; run it as the probe uid.
        r = subprocess.run(self.sigil_run(NS_A, self.agent_a, "/usr/bin/setpriv",
                                          f"--reuid={PROBE_UID}", f"--regid={PROBE_UID}",
                                          "--clear-groups", PYTHON, "-c", code),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(int(r.stdout.strip()), len(MARKER) * 2000)

    def test_12_existing_cgroup_managed_in_place(self):
        before = self.metrics(self.agent_a, NS_A)
        r = run(netns(NS_A, "sh", "-c",
                      f"echo $$ > {self.ext_cgroup}/cgroup.procs && "
                      f"exec {CURL} -sS --max-time 10 http://{IP_B}:{PORT}/hello.txt"))
        self.assertEqual(r.stdout, "hello through sigil\n")
        after = self.metrics(self.agent_a, NS_A)
        self.assertEqual(after["sigil_dataplane_outbound_mutual_total"]
                         - before["sigil_dataplane_outbound_mutual_total"], 1)

    def test_13_permissive_service_takes_mtls_and_plaintext(self):
        # A managed client is upgraded to sigil/1 (agent B serves the legacy port too)...
        deadline = time.monotonic() + 15
        while True:
            r = subprocess.run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "5",
                                              f"http://{IP_B}:{LEGACY_PORT}/hello.txt"),
                               capture_output=True, timeout=30)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # until agent B holds the certificate for the new listener
        self.assertEqual(r.stdout, b"hello through sigil\n", r.stderr)
        self.agent_b.wait_for(r'dataplane\.inbound\.accepted.*service="legacy"', timeout=5)
        # ...and a client outside Sigil still reaches the same port in plaintext: no drop rule.
        r = run(netns(NS_A, CURL, "-sS", "--max-time", "10",
                      f"http://{IP_B}:{LEGACY_PORT}/hello.txt"))
        self.assertEqual(r.stdout, "hello through sigil\n")
        rules = run(netns(NS_B, "nft", "list", "table", "inet", "sigil_enforce")).stdout
        self.assertIn(f"dport {PORT}", rules)
        self.assertNotIn(f"dport {LEGACY_PORT}", rules)

    def test_14_xfcc_header_carries_the_verified_identity(self):
        # Two requests on one keep-alive connection, each with a forged header: the
        # application sees exactly one x-forwarded-client-cert per request, written by
        # agent B from the verified client SVID.
        url = f"http://{IP_B}:{XFCC_PORT}/"
        deadline = time.monotonic() + 15
        while True:
            r = subprocess.run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "5",
                                              "-H", "x-forwarded-client-cert: URI=spiffe://evil",
                                              url, url),
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # until agent B holds the certificate for the new listener
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        for line in lines:
            self.assertRegex(line, rf"^By=spiffe://{TD}/web;Hash=[0-9a-f]{{64}};"
                                   rf"URI=spiffe://{TD}/client$")
        self.assertNotIn("evil", r.stdout)


if __name__ == "__main__":
    helpers.main()
