"""Real TLS peers (openssl s_server/s_client, curl) authenticate with Sigil X.509-SVIDs.

Coverage (issue item 2): a mutual-TLS handshake between `openssl s_server -Verify 1
-verify_return_error` and `openssl s_client -verify_return_error`, each presenting a Sigil SVID
and trusting the Sigil bundle, completes and carries data both ways; a client whose SVID comes
from another CA of the same trust domain (or that presents none) is refused, and so is a server
with a foreign SVID. curl, which also checks the host name, fetches https://localhost:PORT/ from
an `s_server -www` presenting a Sigil server SVID (DNS SAN localhost) while presenting a client
SVID. Everything listens on 127.0.0.1 port 0; servers are killed in cleanups.
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509

import helpers
from helpers import TRUST_DOMAIN, InteropCase, Peer, SvidFiles, run, start_s_server

SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/prod/sa/api"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/prod/sa/web"
PEER_TIMEOUT = 10.0
PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)


def uri_sans(pem: str) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


class TlsCase(InteropCase):
    def server(self, svid: SvidFiles, ca_file: Path, *extra: object,
               name: str = "s_server") -> tuple[Peer, int]:
        peer, port = start_s_server(svid.leaf, svid.key, ca_file, chain=svid.intermediates,
                                    extra=extra, name=name)
        self.addCleanup(peer.kill)
        return peer, port

    def client(self, port: int, ca_file: Path, svid: SvidFiles | None, *extra: object) -> Peer:
        argv: list[object] = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                              "-servername", "localhost", "-verify_hostname", "localhost",
                              "-CAfile", ca_file, "-verify_return_error"]
        if svid is not None:
            argv += ["-cert", svid.leaf, "-key", svid.key]
            if svid.intermediates:
                argv += ["-cert_chain", svid.intermediates]
        argv += list(extra)
        peer = Peer(argv, "s_client")
        self.addCleanup(peer.kill)
        return peer


class MutualTlsTest(TlsCase):
    def _mtls_roundtrip(self, server_svid: SvidFiles, client_svid: SvidFiles, ca_file: Path,
                        *tls_opts: str) -> None:
        server, port = self.server(server_svid, ca_file, "-Verify", "1", "-verify_return_error",
                                   "-naccept", "1", *tls_opts)
        client = self.client(port, ca_file, client_svid, *tls_opts)

        # Client side: the server's chain verified against our bundle, host name included.
        client.wait_for(r"Verify return code: 0 \(ok\)", PEER_TIMEOUT)
        client.wait_for(r"Verified peername: localhost", PEER_TIMEOUT)
        m = client.wait_for(r"(?s)Server certificate\n(-----BEGIN CERTIFICATE-----.*?"
                            r"-----END CERTIFICATE-----)", PEER_TIMEOUT)
        self.assertEqual(uri_sans(m.group(1)), [server_svid.spiffe_id])

        # Server side: it demanded, verified and printed the client's SVID.
        m = server.wait_for(r"(?s)Client certificate\n(-----BEGIN CERTIFICATE-----.*?"
                            r"-----END CERTIFICATE-----)", PEER_TIMEOUT)
        self.assertEqual(uri_sans(m.group(1)), [client_svid.spiffe_id])
        server.wait_for(r"CIPHER is \S+", PEER_TIMEOUT)

        # Application data in both directions over the authenticated channel.
        client.send("hello-from-the-client\n")
        server.wait_for(r"hello-from-the-client", PEER_TIMEOUT)
        server.send("hello-from-the-server\n")
        client.wait_for(r"hello-from-the-server", PEER_TIMEOUT)

        # Orderly close: the client exits on stdin EOF, then the one-shot server reports stats.
        assert client.proc.stdin is not None
        client.proc.stdin.close()
        client.wait_exit(PEER_TIMEOUT)
        server.wait_exit(PEER_TIMEOUT)
        self.assertRegex(server.output, r"\b1 server accepts that finished")
        self.assertNotRegex(server.output + client.output, r"verify error")

    def test_mtls_self_signed_ca(self):
        ca = self.new_ca()
        srv = self.new_svid(ca, SERVER_ID, "server", dns=["localhost"])
        cli = self.new_svid(ca, CLIENT_ID, "client")
        for opts in ((), ("-tls1_2",)):
            with self.subTest(tls=opts or "default (1.3)"):
                self._mtls_roundtrip(srv, cli, ca / "bundle.pem", *opts)

    def test_mtls_upstream_chain(self):
        up = helpers.make_upstream_ca(self.path("upstream"), with_intermediate=True)
        ca = self.path("ca")
        ca.mkdir()
        self.sigil.ca_init(ca, upstream_cert=up.chain, upstream_key=up.key)
        srv = self.new_svid(ca, SERVER_ID, "server", dns=["localhost"])
        cli = self.new_svid(ca, CLIENT_ID, "client")
        self.assertIsNotNone(srv.intermediates)
        # Both peers trust only the upstream root; the intermediates travel in the handshake.
        self._mtls_roundtrip(srv, cli, up.root)

    def test_mtls_mixed_key_types(self):
        ca = self.new_ca(key_type="ec-p384")
        srv = self.new_svid(ca, SERVER_ID, "server", dns=["localhost"], key_type="rsa-2048")
        cli = self.new_svid(ca, CLIENT_ID, "client", key_type="ec-p256")
        self._mtls_roundtrip(srv, cli, ca / "bundle.pem")

    def _assert_client_refused(self, server: Peer, client: Peer, server_error: str) -> None:
        server.wait_for(server_error, PEER_TIMEOUT)
        client.send("must-not-arrive\n", may_have_exited=True)
        # The client learns of the refusal through a TLS alert and gives up.
        client.wait_for(r"alert|error", PEER_TIMEOUT)
        client.wait_exit(PEER_TIMEOUT)
        server.wait_exit(PEER_TIMEOUT)
        self.assertRegex(server.output, r"\b0 server accepts that finished")
        self.assertNotIn("must-not-arrive", server.output)

    def test_client_with_svid_of_other_ca_rejected(self):
        ca = self.new_ca("ca")
        other = self.new_ca("other")
        srv = self.new_svid(ca, SERVER_ID, "server", dns=["localhost"])
        foreign = self.new_svid(other, CLIENT_ID, "foreign")
        server, port = self.server(srv, ca / "bundle.pem", "-Verify", "1",
                                   "-verify_return_error", "-naccept", "1")
        # The client trusts both CAs, so only the server's verdict on the client matters.
        both = helpers.write_certs(self.path("both.pem"),
                                   helpers.split_pem_certs((ca / "bundle.pem").read_bytes()) +
                                   helpers.split_pem_certs((other / "bundle.pem").read_bytes()))
        client = self.client(port, both, foreign)
        self._assert_client_refused(server, client,
                                    r"unable to get local issuer certificate|"
                                    r"certificate verify failed")

    def test_client_without_certificate_rejected(self):
        ca = self.new_ca()
        srv = self.new_svid(ca, SERVER_ID, "server", dns=["localhost"])
        server, port = self.server(srv, ca / "bundle.pem", "-Verify", "1",
                                   "-verify_return_error", "-naccept", "1")
        client = self.client(port, ca / "bundle.pem", None)
        self._assert_client_refused(server, client, r"peer did not return a certificate")

    def test_server_with_svid_of_other_ca_rejected_by_client(self):
        ca = self.new_ca("ca")
        other = self.new_ca("other")
        foreign_srv = self.new_svid(other, SERVER_ID, "server", dns=["localhost"])
        cli = self.new_svid(ca, CLIENT_ID, "client")
        server, port = self.server(foreign_srv, other / "bundle.pem", "-naccept", "1")
        client = self.client(port, ca / "bundle.pem", cli)
        client.wait_for(r"verify error:num=(19|20):|unable to get local issuer certificate",
                        PEER_TIMEOUT)
        rc = client.wait_exit(PEER_TIMEOUT)
        self.assertNotEqual(rc, 0)
        self.assertNotRegex(client.output, r"Verify return code: 0 \(ok\)")


class CurlTest(TlsCase):
    TOOLS = ("openssl", "curl")

    def curl(self, port: int, ca_file: Path, svid: SvidFiles | None):
        argv: list[object] = ["curl", "-sS", "--max-time", "10",
                              "--resolve", f"localhost:{port}:127.0.0.1",
                              "--cacert", ca_file]
        if svid is not None:
            # curl loads the whole PEM file as the client chain (leaf + intermediates).
            argv += ["--cert", svid.chain, "--key", svid.key]
        argv.append(f"https://localhost:{port}/")
        return run(argv, check=False, timeout=15)

    def www_server(self, svid: SvidFiles, ca_file: Path) -> int:
        _, port = self.server(svid, ca_file, "-www", "-Verify", "1", "-verify_return_error",
                              name="s_server -www")
        return port

    def _assert_fetch_ok(self, port: int, ca_file: Path, client: SvidFiles) -> None:
        r = self.curl(port, ca_file, client)
        self.assertEqual(r.returncode, 0, f"curl failed:\n{r.stderr}")
        self.assertIn("Verify return code: 0 (ok)", r.stdout)
        # s_server -www echoes the client certificate it verified: it must be our client leaf.
        m = PEM_RE.search(r.stdout[r.stdout.index("Client certificate"):])
        self.assertIsNotNone(m, "s_server saw no client certificate")
        self.assertEqual(uri_sans(m.group(0)), [client.spiffe_id])
        self.assertEqual(x509.load_pem_x509_certificate(m.group(0).encode()),
                         helpers.load_certs(client.leaf)[0])

    def test_curl_mtls_self_signed_ca(self):
        ca = self.new_ca()
        srv = self.new_svid(ca, SERVER_ID, "server", dns=["localhost"])
        cli = self.new_svid(ca, CLIENT_ID, "client")
        port = self.www_server(srv, ca / "bundle.pem")
        self._assert_fetch_ok(port, ca / "bundle.pem", cli)

    def test_curl_mtls_upstream_chain(self):
        up = helpers.make_upstream_ca(self.path("upstream"), with_intermediate=True)
        ca = self.path("ca")
        ca.mkdir()
        self.sigil.ca_init(ca, upstream_cert=up.chain, upstream_key=up.key)
        srv = self.new_svid(ca, SERVER_ID, "server", dns=["localhost"])
        cli = self.new_svid(ca, CLIENT_ID, "client")
        port = self.www_server(srv, ca / "bundle.pem")
        self._assert_fetch_ok(port, ca / "bundle.pem", cli)

    def test_curl_rejects_server_of_other_ca(self):
        ca = self.new_ca("ca")
        other = self.new_ca("other")
        srv = self.new_svid(ca, SERVER_ID, "server", dns=["localhost"])
        cli = self.new_svid(ca, CLIENT_ID, "client")
        port = self.www_server(srv, ca / "bundle.pem")
        self._assert_fetch_ok(port, ca / "bundle.pem", cli)  # positive control
        r = self.curl(port, other / "bundle.pem", cli)
        self.assertEqual(r.returncode, 60, f"expected CURLE_PEER_FAILED_VERIFICATION:\n{r.stderr}")

    def test_curl_checks_dns_san(self):
        # Same CA, but the server SVID has no DNS SAN: curl's host name check must fail, which
        # shows the positive tests pass because of the --dns localhost SAN we asked for.
        ca = self.new_ca()
        srv = self.new_svid(ca, SERVER_ID, "server-no-dns")
        cli = self.new_svid(ca, CLIENT_ID, "client")
        port = self.www_server(srv, ca / "bundle.pem")
        r = self.curl(port, ca / "bundle.pem", cli)
        self.assertEqual(r.returncode, 60, r.stderr)
        self.assertRegex(r.stderr, r"(?i)subject|name|match")

    def test_server_rejects_curl_with_foreign_or_missing_client_svid(self):
        ca = self.new_ca("ca")
        other = self.new_ca("other")
        srv = self.new_svid(ca, SERVER_ID, "server", dns=["localhost"])
        foreign = self.new_svid(other, CLIENT_ID, "foreign")
        port = self.www_server(srv, ca / "bundle.pem")
        for client in (foreign, None):
            with self.subTest(client="foreign SVID" if client else "no certificate"):
                r = self.curl(port, ca / "bundle.pem", client)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertNotIn("Ciphers supported", r.stdout)
                self.assertRegex(r.stderr, r"alert (unknown ca|certificate required)|"
                                           r"alert bad certificate|handshake failure")


if __name__ == "__main__":
    helpers.main()
