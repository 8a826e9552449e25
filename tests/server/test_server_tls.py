"""The server's own TLS identity, end to end through the real binary.

`sigil server --server-cert-ttl 6s --server-name localhost,sigil.test`: both listeners (admin API,
OpenSSL certificate callback; agent API, gRPC re-reading DATA/tls/) must
- present spiffe://TD/sigil/server with the configured DNS names and a chain that ends with the
  root (what join tokens pin), validating with `openssl verify` against the bundle;
- renew the certificate at half-life without a restart: new handshakes see a new serial, and
  after the first certificate has expired, new handshakes still validate and the CLI still works;
- keep the key file 0600 and audit every issuance (server.credential.create).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "interop"))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402

TD = "example.org"
TTL = 6  # seconds: renewal at ~3 s


class ServerTlsTest(helpers.InteropCase):
    def setUp(self) -> None:
        super().setUp()
        self.openssl = helpers.require_tool("openssl")
        self.data = self.tmp / "data"
        ready = self.tmp / "ready"
        argv = [self.sigil.bin, "server", "--data-dir", self.data, "--trust-domain", TD,
                "--admin-listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0",
                "--metrics-listen", "off", "--ready-file", ready,
                "--server-cert-ttl", f"{TTL}s", "--server-name", "localhost,sigil.test"]
        self.server = Peer(argv, "sigil-server")
        self.addCleanup(self.server.kill)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if self.server.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not become ready\n{self.server.output}")
            time.sleep(0.05)
        self.addr = dict(line.split("=", 1) for line in ready.read_text().split())
        self.bundle = self.data / "admin" / "bundle.pem"

    def presented(self, which: str) -> list[bytes]:
        """The chain the listener presents, fetched without trusting anything."""
        host, port = self.addr[which].rsplit(":", 1)
        argv = [self.openssl, "s_client", "-connect", f"{host}:{port}", "-servername", "localhost",
                "-showcerts", "-cert", self.data / "admin" / "cert.pem",
                "-key", self.data / "admin" / "key.pem"]
        if which == "agent":
            argv += ["-alpn", "h2"]
        proc = subprocess.run([str(a) for a in argv], input=b"", capture_output=True, timeout=15)
        certs = helpers.split_pem_certs(proc.stdout)
        self.assertTrue(certs, f"{which}: no certificate presented\n{proc.stderr.decode()}")
        return certs

    def describe(self, pem: bytes) -> str:
        return run([self.openssl, "x509", "-noout", "-serial", "-ext", "subjectAltName"],
                   input=pem.decode()).stdout

    def verify(self, certs: list[bytes]) -> None:
        leaf = self.path("leaf.pem")
        leaf.write_bytes(certs[0])
        untrusted = self.path("untrusted.pem")
        untrusted.write_bytes(b"".join(certs[1:]) or certs[0])
        run([self.openssl, "verify", "-x509_strict", "-CAfile", self.bundle,
             "-untrusted", untrusted, leaf])

    def serial(self, which: str) -> str:
        m = re.search(r"serial=([0-9A-F]+)", self.describe(self.presented(which)[0]))
        self.assertIsNotNone(m)
        return m.group(1)

    def test_identity_chain_and_renewal(self):
        roots = helpers.split_pem_certs(self.bundle.read_bytes())
        first = {}
        for which in ("admin", "agent"):
            certs = self.presented(which)
            text = self.describe(certs[0])
            self.assertIn(f"URI:spiffe://{TD}/sigil/server", text)
            self.assertIn("DNS:localhost", text)
            self.assertIn("DNS:sigil.test", text)
            # The chain ends with the root that join tokens pin.
            self.assertGreaterEqual(len(certs), 2, f"{which}: chain lacks the root")
            self.assertIn(certs[-1].strip(), [r.strip() for r in roots])
            self.verify(certs)
            first[which] = re.search(r"serial=([0-9A-F]+)", text).group(1)
        key = self.data / "tls" / "server.key"
        self.assertEqual(key.stat().st_mode & 0o777, 0o600)

        # Renewal at half-life (3 s), picked up by both listeners without a restart.
        deadline = time.monotonic() + 20
        renewed = {}
        while time.monotonic() < deadline and len(renewed) < 2:
            for which in ("admin", "agent"):
                if which not in renewed and self.serial(which) != first[which]:
                    renewed[which] = True
            time.sleep(0.5)
        self.assertEqual(len(renewed), 2, f"not renewed within 20 s: {renewed}\n"
                         f"{self.server.output}")

        # Past the first certificate's expiry, new handshakes still validate and the CLI works.
        time.sleep(TTL + 1)
        for which in ("admin", "agent"):
            self.verify(self.presented(which))
        out = run([self.sigil.bin, "audit", "--server", "https://" + self.addr["admin"],
                   "--credentials", self.data / "admin"]).stdout
        self.assertGreaterEqual(out.count("server.credential.create"), 3, out)
        self.assertIn("server.credential.renew", self.server.output)
        self.assertEqual(self.server.proc.poll(), None, "server exited")


if __name__ == "__main__":
    unittest.main()
