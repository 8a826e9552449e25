"""Credential injection end to end (issue 6): a workload calls an external HTTPS API with plain
`curl http://...` and never holds the key; the agent adds it on the wire.

  host A (10.79.0.1): server, agent A (--dataplane), workloads under `sigil run`
  host B (10.79.0.2): "the external APIs": Python HTTPS servers (test CA, SAN api.test): :443
                     answers 200 only to `Authorization: Bearer <key>`, else 401; :8443
                     checks SigV4 with botocore

Checks, against the real binaries:
  * `sigil run -- curl http://10.79.0.2/...` gets 200 (agent A originates TLS to :443, verifies
    the test CA and api.test, adds the bearer key); the same request outside Sigil gets 401;
  * a forged Authorization header from the workload is replaced (the API sees exactly one);
  * pipelined keep-alive requests each get the key;
  * a Host the Service does not cover gets 403 from the agent, a header with a bare CR gets 400,
    both audited, nothing forwarded;
  * the key is not in a paused client's memory (/proc/PID/mem), environment or files, nor in
    any log of the agent or the server; each request is in the audit (dataplane.inject with
    binding, method, host, path without the query, pid, exe, identity);
  * a `sigv4` binding signs requests on the wire (temporary credentials, a query, a path
    needing encoding, an S3 upload with UNSIGNED-PAYLOAD), and an S3 stand-in accepts them
    only if botocore, re-signing the received request, computes the same Authorization;
  * for a service other than S3 (a DynamoDB-style JSON stand-in on :8444) the agent buffers
    the body and signs its hash: empty, small, exactly 64 KiB, chunked (re-framed) and
    Expect: 100-continue bodies are accepted by botocore's re-signing; 64 KiB + 1 gets 413
    from the agent (Content-Length and chunked), audited, nothing forwarded;
  * TLS interception (an `inject` Service with inject.terminateTls on :443): `sigil run --
    curl https://api.test/...` gets 200 with the key added (the workload trusts the node-local
    CA through the SSL_CERT_FILE/CURL_CA_BUNDLE that `sigil run` exports), the CA carries name
    constraints for the Service's names only, the same URL outside Sigil gets no key, a server
    name the Service does not cover (or none) is refused in the handshake and audited, and the
    key is not in the memory of a paused Python HTTPS client.
Run as root (namespaces, BPF, cgroup2); anything missing is a failure, not a skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "interop"))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402
from netns_topology import (delete_hosts, make_hosts, netns,  # noqa: E402
                            remove_cgroup_tree, sh)

TD = "example.org"
NS_A, NS_B = f"siA{os.getpid()}", f"siB{os.getpid()}"
IP_A, IP_B = "10.79.0.1", "10.79.0.2"
SECRET = "sk-test-" + os.urandom(12).hex()
PYTHON = os.path.realpath("/usr/bin/python3")
CURL = os.path.realpath(shutil.which("curl") or "/usr/bin/curl")

# The stand-in for an external API: HTTPS, keep-alive, 200 only with the right key. The body
# tells the test how many Authorization fields arrived and on which path.
API_SERVER = r"""
import http.server, ssl, sys
KEY = open(sys.argv[3]).read().strip()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        auth = self.headers.get_all('Authorization') or []
        ok = auth == ['Bearer ' + KEY]
        body = ('ok auth=%d path=%s\n' % (len(auth), self.path) if ok else 'unauthorized\n').encode()
        self.send_response(200 if ok else 401)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer((sys.argv[1], 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2] + '/api.pem', sys.argv[2] + '/api.key')
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"""

# An S3 stand-in that checks SigV4 the way AWS would, with botocore (Debian's python3-botocore):
# it re-signs the request it received (same method, URL, headers, and the X-Amz-Date it
# carries) and answers 200 only when the Authorization fields are identical.
AWS_SERVER = r"""
import datetime, http.server, ssl, sys, types
from unittest import mock
import botocore.auth, botocore.awsrequest, botocore.credentials
AKID, SECRET, TOKEN = open(sys.argv[3]).read().split()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def handle_any(self):
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n) if n else b''
        got = self.headers.get('Authorization', '')
        when = datetime.datetime.strptime(self.headers.get('X-Amz-Date', '19700101T000000Z'),
                                          '%Y%m%dT%H%M%SZ')
        drop = {'authorization', 'x-amz-date', 'x-amz-security-token', 'x-amz-content-sha256'}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
        req = botocore.awsrequest.AWSRequest(method=self.command,
                                             url='https://' + self.headers['Host'] + self.path,
                                             headers=headers, data=body)
        # S3 lets the client choose: a signed payload hash or UNSIGNED-PAYLOAD (then the body
        # is not covered). Tell botocore which one this request used.
        unsigned = self.headers.get('X-Amz-Content-SHA256') == 'UNSIGNED-PAYLOAD'
        req.context['client_config'] = types.SimpleNamespace(
            s3={'payload_signing_enabled': not unsigned})
        creds = botocore.credentials.Credentials(AKID, SECRET, TOKEN)
        with mock.patch.object(botocore.auth, 'datetime') as fake:
            fake.datetime.utcnow.return_value = when
            fake.datetime.strptime = datetime.datetime.strptime
            botocore.auth.S3SigV4Auth(creds, 's3', 'eu-west-1').add_auth(req)
        want = req.headers['Authorization']
        ok = got == want and self.headers.get('X-Amz-Security-Token') == TOKEN
        age = abs((datetime.datetime.utcnow() - when).total_seconds())
        out = ('sigv4 ok %s %d\n' % (self.path, len(body)) if ok and age < 300
               else 'sigv4 mismatch\n').encode()
        self.send_response(200 if ok and age < 300 else 403)
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_PUT = handle_any
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer((sys.argv[1], 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2] + '/api.pem', sys.argv[2] + '/api.key')
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"""
# A stand-in for an AWS JSON-protocol service (DynamoDB style: POST / with X-Amz-Target) whose
# payload is signed: it answers 200 only when X-Amz-Content-SHA256 is the hash of the body it
# received and botocore's SigV4Auth, re-signing the request with that hash, computes the same
# Authorization. The body tells the test what arrived.
JSON_SERVER = r"""
import datetime, hashlib, http.server, ssl, sys
from unittest import mock
import botocore.auth, botocore.awsrequest, botocore.credentials
AKID, SECRET, TOKEN = open(sys.argv[3]).read().split()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def handle_any(self):
        if self.headers.get('Transfer-Encoding'):
            self.send_error(411, 'the agent re-frames bodies with Content-Length')
            return
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n) if n else b''
        digest = hashlib.sha256(body).hexdigest()
        got = self.headers.get('Authorization', '')
        when = datetime.datetime.strptime(self.headers.get('X-Amz-Date', '19700101T000000Z'),
                                          '%Y%m%dT%H%M%SZ')
        drop = {'authorization', 'x-amz-date', 'x-amz-security-token', 'x-amz-content-sha256'}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
        # The hash of what arrived, not of what the client claims.
        headers['X-Amz-Content-SHA256'] = digest
        req = botocore.awsrequest.AWSRequest(method=self.command,
                                             url='https://' + self.headers['Host'] + self.path,
                                             headers=headers, data=body)
        creds = botocore.credentials.Credentials(AKID, SECRET, TOKEN)
        with mock.patch.object(botocore.auth, 'datetime') as fake:
            fake.datetime.utcnow.return_value = when
            fake.datetime.strptime = datetime.datetime.strptime
            botocore.auth.SigV4Auth(creds, 'dynamodb', 'eu-west-1').add_auth(req)
        ok = (got == req.headers['Authorization'] and
              self.headers.get('X-Amz-Content-SHA256') == digest and
              self.headers.get('X-Amz-Security-Token') == TOKEN and
              'x-amz-content-sha256' in got and
              abs((datetime.datetime.utcnow() - when).total_seconds()) < 300)
        out = ('dynamo ok %s %d %s expect=%s\n' % (self.path, len(body), digest,
                                                    self.headers.get('Expect', '-'))
               if ok else 'sigv4 mismatch\n').encode()
        self.send_response(200 if ok else 403)
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = handle_any
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer((sys.argv[1], 8444), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2] + '/api.pem', sys.argv[2] + '/api.key')
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"""

AWS_AKID = "AKIDEXAMPLE" + os.urandom(4).hex().upper()
AWS_SECRET = "aws-secret-" + os.urandom(12).hex()
AWS_TOKEN = "aws-token-" + os.urandom(12).hex()

# A workload that sends raw bytes (pipelined requests, a bare CR) and prints what came back.
RAW_CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=10)
s.sendall(sys.argv[2].encode().decode('unicode_escape').encode('latin-1'))
s.shutdown(socket.SHUT_WR)
out = b''
while True:
    b = s.recv(65536)
    if not b: break
    out += b
sys.stdout.write(out.decode('latin-1'))
"""

# A workload that sends a request with Expect: 100-continue and its body only after the interim
# "100 Continue" (which the agent must answer itself, since it holds the request to sign the
# body); prints the interim line, then the final response.
EXPECT_CLIENT = r"""
import socket, sys
body = b'{"TableName": "expect"}'
s = socket.create_connection((sys.argv[1], 82), timeout=10)
s.sendall(b'POST / HTTP/1.1\r\nHost: ' + sys.argv[1].encode() + b':82\r\n'
          b'Content-Type: application/x-amz-json-1.0\r\nExpect: 100-continue\r\n'
          b'Content-Length: ' + str(len(body)).encode() + b'\r\nConnection: close\r\n\r\n')
interim = b''
while not interim.endswith(b'\r\n\r\n'):
    b = s.recv(1)
    if not b: break
    interim += b
print(interim.decode().strip(), flush=True)
s.sendall(body)
out = b''
while True:
    b = s.recv(65536)
    if not b: break
    out += b
sys.stdout.write(out.decode('latin-1'))
"""

# A workload that makes one request, then stops itself so the test can read its memory.
PAUSING_CLIENT = r"""
import os, signal, socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=10)
s.sendall(b'GET /mem HTTP/1.1\r\nHost: ' + sys.argv[1].encode() + b'\r\nConnection: close\r\n\r\n')
data = b''
while True:
    b = s.recv(65536)
    if not b: break
    data += b
print(data.decode().splitlines()[0], flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""

# The same over HTTPS to a Service whose TLS the agent terminates: Python's ssl trusts the
# node-local CA only through the SSL_CERT_FILE `sigil run` set.
PAUSING_TLS_CLIENT = r"""
import os, signal, socket, ssl, sys
ctx = ssl.create_default_context()
raw = socket.create_connection((sys.argv[1], 443), timeout=10)
s = ctx.wrap_socket(raw, server_hostname='api.test')
s.sendall(b'GET /mem-tls HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n')
data = b''
while True:
    b = s.recv(65536)
    if not b: break
    data += b
print(data.decode().splitlines()[0], flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""




class InjectTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._td = tempfile.TemporaryDirectory(prefix="sigil-inject-test-")
        cls.tmp = Path(cls._td.name)
        os.chmod(cls.tmp, 0o755)
        cls.peers: list[Peer] = []
        cls.cleanup_dirs: list[Path] = []
        cls.mounted: Path | None = None
        cls.made_ns = False
        try:
            cls.sigil = helpers.sigil_bin()
            for tool in ("ip", "curl", "openssl"):
                helpers.require_tool(tool)
            cls._make_hosts()
            cls._mount_cgroup2()
            cls._make_pki()
            cls._start_api()
            cls._start_server()
            cls.cli("apply", "-f", "-", input=cls._resources())
            cls.agent = cls._start_agent()
            cls._wait_through()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for p in reversed(cls.peers):
            p.kill()
        for d in cls.cleanup_dirs:
            cls._remove_cgroup_tree(d)
        if cls.mounted is not None:
            subprocess.run(["umount", "-l", str(cls.mounted)], capture_output=True)
        if cls.made_ns:
            delete_hosts(NS_A, NS_B)
        cls._td.cleanup()

    # --- setup -------------------------------------------------------------------------------

    @classmethod
    def _make_hosts(cls) -> None:
        cls.made_ns = True
        make_hosts(NS_A, IP_A, NS_B, IP_B, f"i{os.getpid() % 100000}")

    @classmethod
    def _mount_cgroup2(cls) -> None:
        mount = cls.tmp / "cgroup2"
        mount.mkdir()
        sh("mount", "-t", "cgroup2", "none", mount)
        cls.mounted = mount

    @classmethod
    def _make_pki(cls) -> None:
        pki = cls.tmp / "pki"
        pki.mkdir()
        cls.pki = pki
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-keyout", pki / "ca.key", "-out", pki / "ca.pem", "-days", "2",
           "-subj", "/CN=inject test CA")
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", pki / "api.key", "-out", pki / "api.csr", "-subj", "/CN=api.test")
        (pki / "ext").write_text(f"subjectAltName=DNS:api.test,IP:{IP_B}\n")
        sh("openssl", "x509", "-req", "-in", pki / "api.csr", "-CA", pki / "ca.pem",
           "-CAkey", pki / "ca.key", "-CAcreateserial", "-out", pki / "api.pem", "-days", "2",
           "-extfile", pki / "ext")
        (cls.tmp / "key").write_text(SECRET + "\n")
        (cls.tmp / "aws").write_text(f"{AWS_AKID} {AWS_SECRET} {AWS_TOKEN}\n")

    @classmethod
    def _start_api(cls) -> None:
        api = Peer(netns(NS_B, PYTHON, "-c", API_SERVER, IP_B, cls.pki, cls.tmp / "key"), "api")
        cls.peers.append(api)
        aws = Peer(netns(NS_B, PYTHON, "-c", AWS_SERVER, IP_B, cls.pki, cls.tmp / "aws"), "aws")
        cls.peers.append(aws)
        dynamo = Peer(netns(NS_B, PYTHON, "-c", JSON_SERVER, IP_B, cls.pki, cls.tmp / "aws"),
                      "dynamo")
        cls.peers.append(dynamo)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(netns(NS_A, CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                     "--cacert", cls.pki / "ca.pem", f"https://{IP_B}/"),
                               capture_output=True, text=True, timeout=10)
            r2 = subprocess.run(netns(NS_A, CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                      "--cacert", cls.pki / "ca.pem", f"https://{IP_B}:8443/"),
                                capture_output=True, text=True, timeout=10)
            r3 = subprocess.run(netns(NS_A, CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                      "--cacert", cls.pki / "ca.pem", f"https://{IP_B}:8444/"),
                                capture_output=True, text=True, timeout=10)
            if r.stdout == "401" and r2.stdout == "403" and r3.stdout == "403":
                return
            time.sleep(0.2)
        raise AssertionError(f"the test API did not come up\n{api.output}")

    @classmethod
    def _resources(cls) -> str:
        ca = (cls.pki / "ca.pem").read_text().strip().replace("\n", "\n      ")
        return f"""
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: client}}
spec:
  spiffeId: spiffe://{TD}/client
  selectors: ["unix:path:{CURL}"]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: py-client}}
spec:
  spiffeId: spiffe://{TD}/py-client
  selectors: ["unix:path:{PYTHON}"]
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: api}}
spec:
  mode: inject
  addresses: ["{IP_B}:80", "api.test:80"]
  tls:
    port: 443
    sni: api.test
    caBundle: |
      {ca}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: api-key}}
spec: {{type: static, value: {SECRET}}}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: s3}}
spec:
  mode: inject
  addresses: ["{IP_B}:81"]
  tls:
    port: 8443
    sni: api.test
    caBundle: |
      {ca}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: aws-key}}
spec:
  type: aws
  accessKeyId: {AWS_AKID}
  secretAccessKey: {AWS_SECRET}
  sessionToken: {AWS_TOKEN}
  region: eu-west-1
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: s3-sign}}
spec:
  source: aws-key
  identities: [spiffe://{TD}/client]
  service: s3
  delivery: {{sigv4: {{region: eu-west-1, service: s3}}}}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: dynamo}}
spec:
  mode: inject
  addresses: ["{IP_B}:82"]
  tls:
    port: 8444
    sni: api.test
    caBundle: |
      {ca}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: dynamo-sign}}
spec:
  source: aws-key
  identities: [spiffe://{TD}/client, spiffe://{TD}/py-client]
  service: dynamo
  delivery: {{sigv4: {{region: eu-west-1, service: dynamodb}}}}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: api-tls}}
spec:
  mode: inject
  addresses: ["{IP_B}:443", "api.test:443"]
  tls:
    port: 443
    sni: api.test
    caBundle: |
      {ca}
  inject: {{terminateTls: true}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: api-tls-bearer}}
spec:
  source: api-key
  identities: [spiffe://{TD}/client, spiffe://{TD}/py-client]
  service: api-tls
  delivery:
    header: {{name: Authorization, template: "Bearer {{{{secret}}}}"}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: api-bearer}}
spec:
  source: api-key
  identities: [spiffe://{TD}/client, spiffe://{TD}/py-client]
  service: api
  delivery:
    header: {{name: Authorization, template: "Bearer {{{{secret}}}}"}}
"""

    @classmethod
    def cli(cls, *args, input=None, check=True):
        return run(netns(NS_A, cls.sigil, *args, "--server", cls.admin_url, "--credentials",
                         cls.server_data / "admin"), input=input, check=check)

    @classmethod
    def _start_server(cls) -> None:
        cls.server_data = cls.tmp / "server"
        ready = cls.tmp / "server.ready"
        peer = Peer(netns(NS_A, cls.sigil, "server", "--data-dir", cls.server_data,
                          "--trust-domain", TD, "--admin-listen", "127.0.0.1:0",
                          "--agent-listen", f"{IP_A}:0", "--metrics-listen", "off",
                          "--ready-file", ready), "sigil-server")
        cls.peers.append(peer)
        cls.server = peer
        addr = helpers.wait_ready_file(peer, ready, "server", timeout=30)
        cls.admin_url = "https://" + addr["admin"]
        cls.agent_api = addr["agent"]

    @classmethod
    def _start_agent(cls) -> Peer:
        token = cls.cli("token", "create", "--node", "host-a").stdout
        m = re.search(r"SJT1\.[^\s]+", token)
        assert m, token
        token_file = cls.tmp / "token-a"
        token_file.write_text(m.group(0) + "\n")
        os.chmod(token_file, 0o600)
        ready = cls.tmp / "agent-a.ready"
        managed = f"sigil-inject-{os.getpid()}"
        cls.cleanup_dirs.append(cls.tmp / "cgroup2" / managed)
        peer = Peer(netns(NS_A, cls.sigil, "agent", "--server", cls.agent_api,
                          "--join-token-file", token_file, "--data-dir", cls.tmp / "agent-a",
                          "--socket", cls.tmp / "agent-a.sock", "--node-name", "host-a",
                          "--health-listen", "127.0.0.1:0", "--ready-file", ready,
                          "--dataplane", "--cgroup-root", cls.tmp / "cgroup2",
                          "--managed-cgroup", managed, "--inject-ca-dir", cls.tmp / "run-sigil",
                          *cls._creds_flags()), "sigil-agent")
        cls.peers.append(peer)
        addr = helpers.wait_ready_file(peer, ready, "agent", timeout=30)
        peer.managed = managed
        peer.health = addr["health"]
        peer.wait_for(r"dataplane\.intercept ", timeout=10)
        return peer

    @classmethod
    def _creds_flags(cls) -> list[str]:
        # The credential mount is not what this test is about; keep it out of /run.
        r = subprocess.run([cls.sigil, "agent", "--help"], capture_output=True, text=True)
        return ["--creds-mount", ""] if "--creds-mount" in r.stdout + r.stderr else []

    @classmethod
    def sigil_run(cls, *cmd: object) -> list[str]:
        return netns(NS_A, cls.sigil, "run", "--cgroup-root", cls.tmp / "cgroup2",
                     "--managed-cgroup", cls.agent.managed, "--inject-ca-dir",
                     cls.tmp / "run-sigil", "--", *cmd)

    @classmethod
    def _wait_through(cls) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(cls.sigil_run(CURL, "-sS", "--max-time", "5",
                                             f"http://{IP_B}/ready"),
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0 and r.stdout.startswith("ok"):
                return
            time.sleep(0.5)
        raise AssertionError(f"no answer through the agent: {r.stdout!r} {r.stderr!r}\n"
                             f"agent:\n{cls.agent.output}")

    @staticmethod
    def _remove_cgroup_tree(d: Path) -> None:
        remove_cgroup_tree(d)

    def audit(self, type_: str) -> list[dict]:
        r = self.cli("audit", "--type", type_, "--json")
        return json.loads(r.stdout)

    # --- tests -------------------------------------------------------------------------------

    def test_01_plain_curl_gets_through_with_the_key(self):
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10", f"http://{IP_B}/v1/models?x=1"))
        self.assertEqual(r.stdout, "ok auth=1 path=/v1/models?x=1\n")
        # The same request outside Sigil (straight to the API over TLS): no key, 401.
        r = run(netns(NS_A, CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                      self.pki / "ca.pem", "--resolve", f"api.test:443:{IP_B}",
                      "https://api.test/v1/models"))
        self.assertEqual(r.stdout, "401")

    def test_02_forged_credential_header_is_replaced(self):
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10", "-H",
                               "Authorization: Bearer stolen-or-wrong", f"http://{IP_B}/forged"))
        self.assertEqual(r.stdout, "ok auth=1 path=/forged\n")

    def test_03_pipelined_requests_each_get_the_key(self):
        reqs = "".join(f"GET /p{i} HTTP/1.1\\r\\nHost: {IP_B}\\r\\n\\r\\n" for i in range(3))
        r = run(self.sigil_run(PYTHON, "-c", RAW_CLIENT, IP_B, reqs))
        self.assertEqual(r.stdout.count("HTTP/1.1 200"), 3, r.stdout)
        for i in range(3):
            self.assertIn(f"ok auth=1 path=/p{i}\n", r.stdout)

    def test_04_uncovered_host_and_header_injection_refused(self):
        before = len(self.audit("dataplane.denied")) + len(self.audit("dataplane.refused"))
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10", "-H", "Host: evil.example",
                               "-w", "%{http_code}", "-o", self.tmp / "body403",
                               f"http://{IP_B}/x"))
        self.assertEqual(r.stdout, "403")
        self.assertIn("not covered by Service api", (self.tmp / "body403").read_text())
        r = run(self.sigil_run(PYTHON, "-c", RAW_CLIENT, IP_B,
                               f"GET /y HTTP/1.1\\r\\nHost: {IP_B}\\r\\nX-A: one\\rtwo\\r\\n\\r\\n"))
        self.assertTrue(r.stdout.startswith("HTTP/1.1 400"), r.stdout)
        # A Host that is not even UTF-8: refused and audited like any other, and the agent goes
        # on serving.
        r = run(self.sigil_run(PYTHON, "-c", RAW_CLIENT, IP_B,
                               "GET /z HTTP/1.1\\r\\nHost: \\xff\\xfeevil\\r\\n\\r\\n"))
        self.assertTrue(r.stdout.startswith("HTTP/1.1 400"), r.stdout)
        self.assertIn("invalid Host value", r.stdout)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = len(self.audit("dataplane.denied")) + len(self.audit("dataplane.refused"))
            if after >= before + 3:
                break
            time.sleep(0.3)
        self.assertGreaterEqual(after, before + 3)
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10", f"http://{IP_B}/after"))
        self.assertEqual(r.stdout, "ok auth=1 path=/after\n")

    def scan_paused_client(self, script: str, control: bytes) -> None:
        """Runs `script` (which makes one request, prints the status line and stops itself)
        under `sigil run`, then reads all of the stopped process's memory: the key must not be
        in it, while `control` (the response it received) must, proving the scan reads it."""
        client = subprocess.Popen(self.sigil_run(PYTHON, "-u", "-c", script, IP_B),
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = client.stdout.readline()
            self.assertEqual(line.strip(), "HTTP/1.1 200 OK")
            # Find the stopped python (a child of `sigil run`) and read all of its memory.
            pid = None
            deadline = time.monotonic() + 10
            while pid is None and time.monotonic() < deadline:
                for p in Path("/proc").iterdir():
                    if not p.name.isdigit():
                        continue
                    try:
                        stat = (p / "stat").read_text()
                        cmd = (p / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if b"PAUSING" not in cmd and b"SIGSTOP" in cmd and ") T " in stat:
                        pid = int(p.name)
                time.sleep(0.1)
            self.assertIsNotNone(pid, "the paused client was not found")
            secret = SECRET.encode()
            found = seen_control = False
            with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
                for m in maps:
                    addr, perms = m.split()[:2]
                    if "r" not in perms:
                        continue
                    lo, hi = (int(x, 16) for x in addr.split("-"))
                    try:
                        mem.seek(lo)
                        chunk = mem.read(hi - lo)
                        found = found or secret in chunk
                        seen_control = seen_control or control in chunk
                    except OSError:
                        continue
            self.assertTrue(seen_control, "the memory scan did not see the response it read")
            self.assertFalse(found, "the key is in the workload's memory")
            self.assertNotIn(secret, Path(f"/proc/{pid}/environ").read_bytes())
            os.kill(pid, signal.SIGKILL)
        finally:
            client.kill()
            client.wait(timeout=10)
            client.stdout.close()
        for peer in (self.agent, self.server):
            self.assertNotIn(SECRET, peer.output)

    def test_05_secret_never_in_the_workload_nor_in_logs(self):
        self.scan_paused_client(PAUSING_CLIENT, b"ok auth=1 path=/mem")

    def test_06_each_request_is_audited(self):
        # Three requests on one keep-alive connection: each is in the audit with its own time,
        # method, host and path (no query), in the connection's dataplane.inject record(s).
        paths = ["/audited", "/audited/2", "/audited/3"]
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10",
                               *(f"http://{IP_B}{p}?q=secret-q" for p in paths)))
        self.assertEqual(r.stdout, "".join(f"ok auth=1 path={p}?q=secret-q\n" for p in paths))
        deadline = time.monotonic() + 10
        found: dict[str, tuple[dict, dict]] = {}
        while len(found) < len(paths) and time.monotonic() < deadline:
            for rec in self.audit("dataplane.inject"):
                d = rec.get("details", {})
                if isinstance(d, str):
                    d = json.loads(d)
                for req in d.get("requests", []):
                    if req.get("path") in paths:
                        found[req["path"]] = (rec, d, req)
            time.sleep(0.3)
        self.assertEqual(sorted(found), sorted(paths), "injected requests missing from the audit")
        times = []
        for path, (rec, d, req) in found.items():
            self.assertEqual(d["binding"], "api-bearer")
            self.assertEqual(d["service"], "api")
            self.assertEqual(req["method"], "GET")
            self.assertEqual(req["host"], IP_B)
            self.assertNotIn("secret-q", json.dumps(rec))
            self.assertEqual(rec["identity"], f"spiffe://{TD}/client")
            self.assertEqual(rec["exe"], CURL)
            times.append(req["time_unix_ms"])
        self.assertEqual(times, sorted(times))
        self.assertLess(abs(times[0] / 1000 - time.time()), 60)
        # One connection, one process.
        self.assertEqual(len({found[p][0]["pid"] for p in paths}), 1)
        # `sigil audit --binding` answers "which process used it, when, against what": a line
        # per request.
        text = self.cli("audit", "--binding", "api-bearer").stdout
        for p in paths:
            line = next((ln for ln in text.splitlines() if ln.endswith(f"GET {IP_B}{p}\t-")),
                        None)
            self.assertIsNotNone(line, text)
            cols = line.split("\t")
            self.assertEqual(cols[1], "dataplane.inject")
            self.assertEqual(cols[4], CURL)
            self.assertEqual(cols[5], f"spiffe://{TD}/client")
            self.assertRegex(cols[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_07_sigv4_signed_on_the_wire_checked_by_botocore(self):
        # GET with a query and a path needing encoding, then a PUT with a body (S3: unsigned
        # payload); the stand-in re-signs each with botocore and compares.
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10", "-H", "Authorization: forged",
                               f"http://{IP_B}:81/bucket/a%20key?list-type=2&prefix=x"))
        self.assertEqual(r.stdout, "sigv4 ok /bucket/a%20key?list-type=2&prefix=x 0\n")
        body = self.tmp / "upload.bin"
        body.write_bytes(os.urandom(3000))
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10", "-T", body,
                               f"http://{IP_B}:81/bucket/upload.bin"))
        self.assertEqual(r.stdout, "sigv4 ok /bucket/upload.bin 3000\n")
        for peer in (self.agent, self.server):
            self.assertNotIn(AWS_SECRET, peer.output)
            self.assertNotIn(AWS_TOKEN, peer.output)

    # --- SigV4 over a buffered body (services other than S3) ---------------------------------

    def dynamo(self, *curl_args: object) -> subprocess.CompletedProcess:
        return run(self.sigil_run(CURL, "-sS", "--max-time", "20", "-H",
                                  "Content-Type: application/x-amz-json-1.0", "-H",
                                  "X-Amz-Target: DynamoDB_20120810.ListTables", *curl_args),
                   check=False)

    def test_08_sigv4_body_hash_for_a_json_service(self):
        sizes = {"empty": b"", "small": b'{"TableName": "t", "Limit": 10}',
                 "exact": b"[" + b" " * (64 * 1024 - 2) + b"]"}
        self.assertEqual(len(sizes["exact"]), 65536)
        for name, body in sizes.items():
            with self.subTest(name):
                f = self.tmp / f"ddb-{name}.json"
                f.write_bytes(body)
                r = self.dynamo("-X", "POST", "--data-binary", f"@{f}",
                                f"http://{IP_B}:82/")
                digest = hashlib.sha256(body).hexdigest()
                self.assertEqual(r.stdout, f"dynamo ok / {len(body)} {digest} expect=-\n",
                                 r.stderr)
        # A GET without a body: the hash of the empty string.
        r = self.dynamo(f"http://{IP_B}:82/?Action=Describe")
        self.assertEqual(r.stdout, f"dynamo ok /?Action=Describe 0 "
                         f"{hashlib.sha256(b'').hexdigest()} expect=-\n", r.stderr)
        # Chunked from the workload: decoded, hashed and re-framed with Content-Length (the
        # stand-in refuses Transfer-Encoding), for small and exactly-64-KiB bodies.
        for name in ("small", "exact"):
            with self.subTest("chunked " + name):
                f = self.tmp / f"ddb-{name}.json"
                r = self.dynamo("-X", "POST", "-H", "Transfer-Encoding: chunked",
                                "--data-binary", f"@{f}", f"http://{IP_B}:82/chunked")
                body = f.read_bytes()
                self.assertEqual(r.stdout, f"dynamo ok /chunked {len(body)} "
                                 f"{hashlib.sha256(body).hexdigest()} expect=-\n", r.stderr)
        for peer in (self.agent, self.server):
            self.assertNotIn(AWS_SECRET, peer.output)
            self.assertNotIn(AWS_TOKEN, peer.output)

    def test_09_expect_continue_is_answered_by_the_agent(self):
        r = run(self.sigil_run(PYTHON, "-c", EXPECT_CLIENT, IP_B))
        lines = r.stdout.split("\n", 1)
        self.assertEqual(lines[0], "HTTP/1.1 100 Continue", r.stdout)
        body = b'{"TableName": "expect"}'
        self.assertTrue(lines[1].startswith("HTTP/1.1 200"), r.stdout)
        # The upstream never saw the Expect: the agent answered it and sent the body at once.
        self.assertIn(f"dynamo ok / {len(body)} {hashlib.sha256(body).hexdigest()} expect=-",
                      r.stdout)

    def refusals(self) -> list[dict]:
        """The details of every dataplane.refused audit record."""
        return [json.loads(d) if isinstance(d, str) else d for d in
                (x.get("details", {}) for x in self.audit("dataplane.refused"))]

    def test_10_body_over_64_kib_is_refused_with_413(self):
        big = self.tmp / "ddb-big.json"
        big.write_bytes(b"x" * (64 * 1024 + 1))
        for framing in ([], ["-H", "Transfer-Encoding: chunked"]):
            with self.subTest(framing=framing):
                r = self.dynamo("-X", "POST", *framing, "--data-binary", f"@{big}",
                                "-o", self.tmp / "body413", "-w", "%{http_code}",
                                f"http://{IP_B}:82/big")
                self.assertEqual(r.stdout, "413", r.stderr)
                self.assertIn("65536 bytes", (self.tmp / "body413").read_text())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            big_ones = [d for d in self.refusals() if d.get("code") == 413]
            if len(big_ones) >= 2:
                break
            time.sleep(0.3)
        self.assertEqual(len(big_ones), 2, big_ones)  # only this test sends such bodies
        self.assertEqual({d["binding"] for d in big_ones}, {"dynamo-sign"})

    # --- TLS interception ----------------------------------------------------------------------

    def bundle(self) -> Path:
        """The node-local CA bundle, once the agent has published it (it needs the synced
        api-tls Service)."""
        path = self.tmp / "run-sigil" / "inject-ca-bundle.pem"
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertTrue(path.exists(), f"no {path}\n{self.agent.output}")
        return path

    def test_11_https_workload_through_the_node_ca(self):
        self.bundle()
        r = run(self.sigil_run(CURL, "-sS", "-v", "--max-time", "10", "--resolve",
                               f"api.test:443:{IP_B}", "https://api.test/v1/tls?x=1"))
        self.assertEqual(r.stdout, "ok auth=1 path=/v1/tls?x=1\n")
        # The workload verified the node-local CA's leaf for api.test (curl -v names it).
        self.assertIn("Sigil node-local interception CA", r.stderr)
        self.assertIn("subject: O=Sigil; CN=api.test", r.stderr)
        # A forged key from the workload is replaced, as in plaintext.
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10", "--resolve",
                               f"api.test:443:{IP_B}", "-H", "Authorization: Bearer wrong",
                               "https://api.test/forged-tls"))
        self.assertEqual(r.stdout, "ok auth=1 path=/forged-tls\n")
        # `sigil run` told the workload where the bundle is.
        r = run(self.sigil_run("/usr/bin/env"))
        self.assertIn(f"SSL_CERT_FILE={self.bundle()}\n", r.stdout)
        self.assertIn(f"CURL_CA_BUNDLE={self.bundle()}\n", r.stdout)

    def test_12_node_ca_is_constrained_to_the_service_names(self):
        ca = self.tmp / "run-sigil" / "inject-ca.pem"
        self.bundle()
        text = run(["openssl", "x509", "-in", ca, "-noout", "-text"]).stdout
        self.assertIn("X509v3 Name Constraints: critical", text)
        self.assertIn("DNS:api.test", text)
        self.assertIn("IP:0.0.0.0/0.0.0.0", text)  # excluded: every IPv4 address
        self.assertIn("CA:TRUE, pathlen:0", text)
        not_before = run(["openssl", "x509", "-in", ca, "-noout", "-startdate"]).stdout
        not_after = run(["openssl", "x509", "-in", ca, "-noout", "-enddate"]).stdout

        def parse(line: str) -> float:
            return time.mktime(time.strptime(line.split("=", 1)[1].strip(),
                                             "%b %d %H:%M:%S %Y %Z"))

        self.assertLessEqual(parse(not_after) - parse(not_before), 24 * 3600 + 60)
        # The bundle is the system roots followed by the node CA.
        bundle = self.bundle().read_text()
        self.assertTrue(bundle.endswith(ca.read_text()))
        self.assertGreater(bundle.count("BEGIN CERTIFICATE"), 10)
        self.assertNotIn("PRIVATE KEY", bundle)

    def test_13_same_url_outside_sigil_gets_no_key(self):
        # Straight to the API: its own certificate (not the node CA's) and no key.
        r = run(netns(NS_A, CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                      self.bundle(), "--resolve", f"api.test:443:{IP_B}",
                      "https://api.test/v1/tls"), check=False)
        self.assertEqual(r.returncode, 60, r.stderr)  # the node CA does not vouch for it
        r = run(netns(NS_A, CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                      self.pki / "ca.pem", "--resolve", f"api.test:443:{IP_B}",
                      "https://api.test/v1/tls"))
        self.assertEqual(r.stdout, "401")

    def test_14_uncovered_server_name_is_refused_and_audited(self):
        self.bundle()
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10", "--resolve",
                               f"evil.test:443:{IP_B}", "https://evil.test/x"), check=False)
        self.assertEqual(r.returncode, 35, r.stderr)  # TLS handshake failed
        self.assertIn("unrecognized name", r.stderr)
        # No server name at all (an IP URL): refused too.
        r = run(self.sigil_run(CURL, "-sS", "--max-time", "10", "-k", f"https://{IP_B}/x"),
                check=False)
        self.assertEqual(r.returncode, 35, r.stderr)
        deadline = time.monotonic() + 10
        found = []
        while time.monotonic() < deadline:
            # Only this test makes handshakes the agent refuses.
            found = [d for d in self.refusals() if d.get("tls") == "intercepted"]
            if len(found) >= 2:
                break
            time.sleep(0.3)
        self.assertEqual(len(found), 2, found)
        evil = [d for d in found if d.get("sni") == "evil.test"]
        self.assertEqual(len(evil), 1, found)
        self.assertIn("not covered by Service api-tls", evil[0]["reason"])
        self.assertTrue(any("no TLS server name" in d["reason"] for d in found), found)

    def test_15_secret_not_in_an_https_workload(self):
        self.bundle()
        self.scan_paused_client(PAUSING_TLS_CLIENT, b"ok auth=1 path=/mem-tls")


if __name__ == "__main__":
    helpers.main()
