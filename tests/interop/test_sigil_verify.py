"""`sigil pki verify` judges certificates made by other tools the way the X509-SVID standard says.

The certificates here are built by independent code (Python `cryptography`, the openssl CLI)
and signed with the Sigil CA's own key, so RFC 5280 path validation succeeds for all of them
(openssl verify confirms this for every case) and only the SPIFFE-specific leaf checks of
spiffe-reference.md section 2 (and the SPIFFE ID grammar of section 1) can tell them apart:
  * a well-formed foreign-made SVID is accepted and its ID printed;
  * two URI SANs, no URI SAN, a non-spiffe URI, an ID of another trust domain, a malformed ID,
    cA=true, keyCertSign or cRLSign on the leaf, an expired or not-yet-valid leaf and a forged
    signature are all rejected (exit 1, reason on stderr).
"""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import helpers
from helpers import TRUST_DOMAIN, InteropCase, SvidFiles, run

WORKLOAD_ID = f"spiffe://{TRUST_DOMAIN}/ns/prod/sa/web"
HOUR = datetime.timedelta(hours=1)


class CraftedLeafTest(InteropCase):
    def setUp(self) -> None:
        super().setUp()
        self.ca_dir = self.new_ca()
        self.ca_cert = helpers.load_certs(self.ca_dir / "ca-chain.pem")[0]
        self.ca_key = serialization.load_pem_private_key(
            (self.ca_dir / "ca-key.pem").read_bytes(), None)
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.n = 0

    def craft(self, *, uris=(WORKLOAD_ID,), dns=(), ca=False, key_cert_sign=False,
              crl_sign=False, not_before=None, not_after=None, signer=None) -> SvidFiles:
        """A leaf signed by the Sigil CA key (or `signer`), written like `sigil pki issue`."""
        now = datetime.datetime.utcnow()
        san = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "crafted")]))
             .issuer_name(self.ca_cert.subject)
             .public_key(self.leaf_key.public_key())
             .serial_number(int.from_bytes(os.urandom(16), "big") | (1 << 120))
             .not_valid_before(not_before or now - datetime.timedelta(seconds=30))
             .not_valid_after(not_after or now + HOUR)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                          key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, key_cert_sign=key_cert_sign,
                                          crl_sign=crl_sign, encipher_only=False,
                                          decipher_only=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                 self.leaf_key.public_key()), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                 self.ca_cert.extensions.get_extension_for_class(
                     x509.SubjectKeyIdentifier).value), critical=False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = b.sign(signer or self.ca_key, hashes.SHA256())
        self.n += 1
        chain = self.path(f"crafted-{self.n}.pem")
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key = self.path(f"crafted-{self.n}.key")
        key.write_bytes(self.leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return SvidFiles(chain, key, uris[0] if uris else "")

    def openssl_path_ok(self, svid: SvidFiles, *, at_time: bool = True) -> None:
        """RFC 5280 path validation by openssl (no purpose): the chain itself is fine."""
        argv = ["openssl", "verify", "-CAfile", self.ca_dir / "bundle.pem"]
        if not at_time:
            argv.append("-no_check_time")
        run(argv + [svid.leaf])

    def assert_accepted(self, svid: SvidFiles) -> None:
        for bundle in ("bundle.pem", "bundle.jwks"):
            with self.subTest(bundle=bundle):
                r = self.sigil.verify(self.ca_dir / bundle, svid.chain, check=False)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), svid.spiffe_id)

    def assert_rejected(self, svid: SvidFiles, why: str) -> None:
        for bundle in ("bundle.pem", "bundle.jwks"):
            with self.subTest(why=why, bundle=bundle):
                r = self.sigil.verify(self.ca_dir / bundle, svid.chain, check=False)
                self.assertEqual(r.returncode, 1,
                                 f"sigil pki verify accepted a leaf with {why}:\n{r.stdout}")
                self.assertEqual(r.stdout.strip(), "")
                self.assertTrue(r.stderr.strip(), "rejection must explain itself on stderr")

    # --- accepted ------------------------------------------------------------------------

    def test_accepts_svid_made_by_cryptography(self):
        svid = self.craft(dns=["localhost"])
        self.openssl_path_ok(svid)
        self.assert_accepted(svid)

    def test_accepts_svid_made_by_openssl_cli(self):
        key = self.path("o.key")
        csr = self.path("o.csr")
        ext = self.path("o.ext")
        out = self.path("o.pem")
        ext.write_text("basicConstraints = critical, CA:false\n"
                       "keyUsage = critical, digitalSignature\n"
                       "extendedKeyUsage = serverAuth, clientAuth\n"
                       f"subjectAltName = URI:{WORKLOAD_ID}\n"
                       "subjectKeyIdentifier = hash\n"
                       "authorityKeyIdentifier = keyid\n")
        run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-subj", "/O=openssl", "-out", csr])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca_dir / "ca-chain.pem",
             "-CAkey", self.ca_dir / "ca-key.pem", "-set_serial",
             "0x" + os.urandom(16).hex(), "-days", "1", "-sha256", "-extfile", ext, "-out", out])
        svid = SvidFiles(out, key, WORKLOAD_ID)
        self.openssl_path_ok(svid)
        self.assert_accepted(svid)

    # --- rejected ------------------------------------------------------------------------

    def test_rejects_two_uri_sans(self):
        svid = self.craft(uris=(WORKLOAD_ID, f"spiffe://{TRUST_DOMAIN}/admin"))
        self.openssl_path_ok(svid)
        self.assert_rejected(svid, "two URI SANs")

    def test_rejects_missing_or_foreign_uri(self):
        for why, uris in (("no URI SAN", ()),
                          ("an https URI", (f"https://{TRUST_DOMAIN}/web",)),
                          ("an ID of another trust domain", ("spiffe://other.example/web",))):
            svid = self.craft(uris=uris, dns=["localhost"])
            self.openssl_path_ok(svid)
            self.assert_rejected(svid, why)

    def test_rejects_malformed_spiffe_ids(self):
        for bad in (f"spiffe://{TRUST_DOMAIN.upper()}/web",     # uppercase trust domain
                    f"spiffe://{TRUST_DOMAIN}/a//b",            # empty segment
                    f"spiffe://{TRUST_DOMAIN}/a/../b",          # dot segment
                    f"spiffe://{TRUST_DOMAIN}/web/",            # trailing slash
                    f"spiffe://{TRUST_DOMAIN}/w%65b",           # percent-encoding
                    f"spiffe://{TRUST_DOMAIN}/web?x=1",         # query
                    f"spiffe://{TRUST_DOMAIN}/web#frag",        # fragment
                    f"spiffe://user@{TRUST_DOMAIN}/web",        # userinfo
                    f"spiffe://{TRUST_DOMAIN}:8443/web"):       # port
            svid = self.craft(uris=(bad,))
            self.assert_rejected(svid, f"malformed ID {bad!r}")

    def test_rejects_ca_leaf_and_signing_usages(self):
        for why, kw in (("cA=true", {"ca": True}),
                        ("keyCertSign", {"key_cert_sign": True}),
                        ("cRLSign", {"crl_sign": True})):
            svid = self.craft(**kw)
            self.openssl_path_ok(svid)
            self.assert_rejected(svid, why)

    def test_rejects_outside_validity(self):
        now = datetime.datetime.utcnow()
        for why, nb, na in (("an expired leaf", now - 3 * HOUR, now - 2 * HOUR),
                            ("a not-yet-valid leaf", now + 2 * HOUR, now + 3 * HOUR)):
            svid = self.craft(not_before=nb, not_after=na)
            self.openssl_path_ok(svid, at_time=False)
            self.assert_rejected(svid, why)

    def test_rejects_forged_signature(self):
        # Same issuer name and AKID as the Sigil CA, but signed by an impostor key.
        impostor = ec.generate_private_key(ec.SECP256R1())
        svid = self.craft(signer=impostor)
        r = run(["openssl", "verify", "-CAfile", self.ca_dir / "bundle.pem", svid.leaf],
                check=False)
        self.assertNotEqual(r.returncode, 0, "openssl must reject the forgery too")
        self.assert_rejected(svid, "a forged signature")


if __name__ == "__main__":
    helpers.main()
