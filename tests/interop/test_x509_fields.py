"""Python `cryptography` checks every X.509-SVID rule on Sigil's certificates, independently.

Coverage (issue item 3, rules from spiffe-reference.md section 2): exactly one URI SAN equal to
the requested ID, the requested DNS SANs, BasicConstraints cA=false (critical), KeyUsage
critical with digitalSignature and without keyCertSign/cRLSign, EKU serverAuth+clientAuth,
128-bit random serials (>= 2^64, < 2^128, distinct), notBefore backdated by at most 60 s,
notAfter = issuance + ttl and never past the CA's notAfter (also when the requested ttl outlives
the CA); the CA certificate is cA=true with keyCertSign and URI SAN spiffe://TD (no path).
Also: keys from `keygen` are PKCS#8 of the requested type, and `issue` takes the identity only
from --spiffe-id/--dns, never from SANs smuggled into an (openssl-made) CSR.
"""

from __future__ import annotations

import base64
import datetime
import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

import helpers
from helpers import TRUST_DOMAIN, InteropCase, run, utc, verify_signed_by

WORKLOAD_ID = f"spiffe://{TRUST_DOMAIN}/ns/prod/sa/web"
MAX_BACKDATE = 60  # seconds
CLOCK_SLACK = 2    # seconds of rounding between our clock reads and the cert's second precision


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


def spki(obj) -> bytes:
    return obj.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


class X509Assertions(InteropCase):
    TOOLS = ("openssl",)

    def issue_timed(self, ca_dir: Path, spiffe_id: str, name: str, **kw):
        """Issues an SVID and returns (svid, t_before, t_after) bracketing the issuance."""
        t_before = now_utc()
        svid = self.new_svid(ca_dir, spiffe_id, name, **kw)
        t_after = now_utc()
        return svid, t_before, t_after

    def assert_leaf_is_x509_svid(self, leaf: x509.Certificate, spiffe_id: str,
                                 dns: list[str]) -> None:
        self.assertEqual(leaf.version, x509.Version.v3)

        san_ext = ext(leaf, x509.SubjectAlternativeName)
        uris = san_ext.value.get_values_for_type(x509.UniformResourceIdentifier)
        self.assertEqual(uris, [spiffe_id], "exactly one URI SAN, equal to the requested ID")
        self.assertEqual(sorted(san_ext.value.get_values_for_type(x509.DNSName)), sorted(dns))
        self.assertEqual(san_ext.value.get_values_for_type(x509.IPAddress), [])
        if len(leaf.subject) == 0:
            self.assertTrue(san_ext.critical, "empty Subject requires a critical SAN (RFC 5280)")

        bc = ext(leaf, x509.BasicConstraints)
        self.assertTrue(bc.critical, "BasicConstraints must be critical")
        self.assertFalse(bc.value.ca, "leaf must have cA=false")

        ku = ext(leaf, x509.KeyUsage)
        self.assertTrue(ku.critical, "KeyUsage must be critical")
        self.assertTrue(ku.value.digital_signature, "leaf must set digitalSignature")
        self.assertFalse(ku.value.key_cert_sign, "leaf must not set keyCertSign")
        self.assertFalse(ku.value.crl_sign, "leaf must not set cRLSign")

        eku = ext(leaf, x509.ExtendedKeyUsage).value
        self.assertIn(ExtendedKeyUsageOID.SERVER_AUTH, eku)
        self.assertIn(ExtendedKeyUsageOID.CLIENT_AUTH, eku)

        self.assertGreaterEqual(leaf.serial_number, 2 ** 64,
                                "serial must carry ~128 random bits (got a small serial)")
        self.assertLess(leaf.serial_number, 2 ** 128,
                        "serial must fit 128 bits (RFC 5280: at most 20 octets)")

    def assert_ca_cert(self, ca: x509.Certificate, trust_domain: str = TRUST_DOMAIN) -> None:
        bc = ext(ca, x509.BasicConstraints)
        self.assertTrue(bc.critical)
        self.assertTrue(bc.value.ca, "CA certificate must have cA=true")
        ku = ext(ca, x509.KeyUsage)
        self.assertTrue(ku.critical)
        self.assertTrue(ku.value.key_cert_sign, "CA certificate must set keyCertSign")
        uris = ext(ca, x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
        self.assertEqual(uris, [f"spiffe://{trust_domain}"],
                         "CA carries the trust domain's ID with no path")
        ext(ca, x509.SubjectKeyIdentifier)  # raises ExtensionNotFound if absent

    def assert_issued_by(self, leaf: x509.Certificate, ca: x509.Certificate) -> None:
        self.assertEqual(leaf.issuer, ca.subject)
        verify_signed_by(leaf, ca)
        akid = ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier
        self.assertEqual(akid, ext(ca, x509.SubjectKeyIdentifier).value.digest)


class LeafFieldsTest(X509Assertions):
    def test_leaf_extensions_and_identity(self):
        ca = self.new_ca()
        dns = ["localhost", "web.prod.svc.cluster.local"]
        svid, _, _ = self.issue_timed(ca, WORKLOAD_ID, "web", dns=dns)
        leaf = helpers.load_certs(svid.chain)[0]
        self.assert_leaf_is_x509_svid(leaf, WORKLOAD_ID, dns)
        self.assert_issued_by(leaf, helpers.load_certs(ca / "ca-chain.pem")[0])
        # The certified key is the one we generated.
        key = serialization.load_pem_private_key(svid.key.read_bytes(), None)
        self.assertEqual(spki(leaf), spki(key))

    def test_leaf_without_dns_has_only_the_uri_san(self):
        ca = self.new_ca()
        svid, _, _ = self.issue_timed(ca, WORKLOAD_ID, "nodns")
        leaf = helpers.load_certs(svid.chain)[0]
        self.assert_leaf_is_x509_svid(leaf, WORKLOAD_ID, [])
        san = ext(leaf, x509.SubjectAlternativeName).value
        self.assertEqual(len(list(san)), 1)

    def test_all_key_types(self):
        for key_type, check in (
                ("ec-p256", lambda k: isinstance(k, ec.EllipticCurvePublicKey)
                 and k.curve.name == "secp256r1"),
                ("ec-p384", lambda k: isinstance(k, ec.EllipticCurvePublicKey)
                 and k.curve.name == "secp384r1"),
                ("rsa-2048", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
                ("rsa-3072", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 3072),
                ("ed25519", lambda k: isinstance(k, ed25519.Ed25519PublicKey))):
            with self.subTest(key_type=key_type):
                key_path = self.sigil.keygen(self.path(f"{key_type}.key"), key_type)
                pem = key_path.read_bytes()
                self.assertTrue(pem.startswith(b"-----BEGIN PRIVATE KEY-----"),
                                "keygen writes unencrypted PKCS#8 PEM")
                self.assertEqual(stat.S_IMODE(os.stat(key_path).st_mode), 0o600)
                key = serialization.load_pem_private_key(pem, None)
                self.assertTrue(check(key.public_key()), f"wrong key type for {key_type}")
        ca = self.new_ca()
        for key_type in ("ec-p384", "rsa-2048", "ed25519"):
            with self.subTest(leaf_key_type=key_type):
                svid, _, _ = self.issue_timed(ca, f"{WORKLOAD_ID}/{key_type}",
                                              f"leaf-{key_type}", key_type=key_type)
                leaf = helpers.load_certs(svid.chain)[0]
                self.assert_leaf_is_x509_svid(leaf, f"{WORKLOAD_ID}/{key_type}", [])
                key = serialization.load_pem_private_key(svid.key.read_bytes(), None)
                self.assertEqual(spki(leaf), spki(key))

    def test_ed25519_leaf_key_usage(self):
        # RFC 8410 section 5: with an Ed25519 key, KeyUsage may only assert digitalSignature,
        # nonRepudiation, keyCertSign and cRLSign -- the key can neither encipher nor agree keys.
        ca = self.new_ca()
        svid, _, _ = self.issue_timed(ca, WORKLOAD_ID, "ed", key_type="ed25519")
        ku = ext(helpers.load_certs(svid.chain)[0], x509.KeyUsage).value
        self.assertTrue(ku.digital_signature)
        self.assertFalse(ku.key_encipherment, "keyEncipherment on an Ed25519 key")
        self.assertFalse(ku.key_agreement, "keyAgreement on an Ed25519 key")

    def test_serials_are_random_and_distinct(self):
        ca = self.new_ca()
        csr = self.sigil.csr(self.sigil.keygen(self.path("k.key")), self.path("k.csr"))
        serials = []
        for i in range(6):
            out = self.path(f"s{i}.pem")
            self.sigil.issue(ca, csr, f"{WORKLOAD_ID}/{i}", out)
            serials.append(helpers.load_certs(out)[0].serial_number)
        serials.append(helpers.load_certs(ca / "ca-chain.pem")[0].serial_number)
        self.assertEqual(len(set(serials)), len(serials), f"repeated serials: {serials}")
        for s in serials:
            self.assertGreaterEqual(s, 2 ** 64)
            self.assertLess(s, 2 ** 128)
        # 128 random bits: the top 64 bits of independent serials should differ too.
        self.assertEqual(len({s >> 64 for s in serials}), len(serials))

    def test_validity_window(self):
        ca = self.new_ca(ttl="24h")
        ca_cert = helpers.load_certs(ca / "ca-chain.pem")[0]
        svid, t0, t1 = self.issue_timed(ca, WORKLOAD_ID, "web", ttl="1h")
        leaf = helpers.load_certs(svid.chain)[0]
        nbf, naf = utc(leaf.not_valid_before), utc(leaf.not_valid_after)
        sec = datetime.timedelta(seconds=1)
        # Backdated (to tolerate clock skew between peers) but by a small amount.
        self.assertLessEqual(nbf, t0 - sec, f"notBefore {nbf} is not backdated (issued {t0})")
        self.assertGreaterEqual(nbf, t0 - MAX_BACKDATE * sec,
                                f"notBefore {nbf} is backdated more than {MAX_BACKDATE}s")
        # notAfter = issuance + 1h.
        self.assertGreaterEqual(naf, t0 + 3600 * sec - CLOCK_SLACK * sec)
        self.assertLessEqual(naf, t1 + 3600 * sec + CLOCK_SLACK * sec)
        self.assertLessEqual(naf, utc(ca_cert.not_valid_after))

    def test_ttl_forms(self):
        ca = self.new_ca(ttl="24h")
        for ttl, seconds in (("30s", 30), ("5m", 300), ("1h30m", 5400)):
            with self.subTest(ttl=ttl):
                svid, t0, t1 = self.issue_timed(ca, WORKLOAD_ID, f"ttl-{ttl}", ttl=ttl)
                naf = utc(helpers.load_certs(svid.chain)[0].not_valid_after)
                self.assertGreaterEqual(naf, t0 + datetime.timedelta(seconds=seconds - CLOCK_SLACK))
                self.assertLessEqual(naf, t1 + datetime.timedelta(seconds=seconds + CLOCK_SLACK))

    def test_leaf_ttl_capped_at_ca_not_after(self):
        ca = self.new_ca(ttl="2h")
        ca_cert = helpers.load_certs(ca / "ca-chain.pem")[0]
        ca_naf = utc(ca_cert.not_valid_after)
        svid, t0, _ = self.issue_timed(ca, WORKLOAD_ID, "long", ttl="5h")
        leaf = helpers.load_certs(svid.chain)[0]
        naf = utc(leaf.not_valid_after)
        self.assertLessEqual(naf, ca_naf, "leaf outlives its CA")
        self.assertGreaterEqual(naf, ca_naf - datetime.timedelta(seconds=CLOCK_SLACK),
                                "leaf should be capped AT the CA notAfter, not cut shorter")
        self.assertLess(naf, t0 + datetime.timedelta(hours=3))

    def test_identity_comes_from_flags_not_from_the_csr(self):
        # A CSR made by openssl (an independent peer) that asks for another identity.
        key = self.path("evil.key")
        csr = self.path("evil.csr")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-subj", "/CN=spiffe-admin/O=evil",
             "-addext", "subjectAltName=URI:spiffe://evil.example/admin,DNS:evil.example",
             "-addext", "basicConstraints=critical,CA:true", "-out", csr])
        ca = self.new_ca()
        out = self.path("evil.pem")
        self.sigil.issue(ca, csr, WORKLOAD_ID, out, dns=["localhost"])
        leaf = helpers.load_certs(out)[0]
        self.assert_leaf_is_x509_svid(leaf, WORKLOAD_ID, ["localhost"])
        self.assertNotIn("evil", leaf.subject.rfc4514_string())
        self.assertEqual(spki(leaf), spki(serialization.load_pem_private_key(
            key.read_bytes(), None)))

    def test_issue_refuses_csr_with_bad_signature(self):
        # The CSR is the proof of possession of the key: a CSR whose signature does not verify
        # (here: a valid CSR with one signature byte flipped, re-encoded by hand) is refused.
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .sign(key, hashes.SHA256()))
        der = bytearray(csr.public_bytes(serialization.Encoding.DER))
        der[-5] ^= 0x01  # inside the ECDSA signature's INTEGER s
        self.assertFalse(x509.load_der_x509_csr(bytes(der)).is_signature_valid)
        bad = self.path("bad.csr")
        bad.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\n" +
                        base64.encodebytes(bytes(der)) + b"-----END CERTIFICATE REQUEST-----\n")
        ca = self.new_ca()
        out = self.path("bad.pem")
        r = self.sigil.issue(ca, bad, WORKLOAD_ID, out, check=False)
        self.assertNotEqual(r.returncode, 0, "issued a certificate for an unproven key")
        self.assertFalse(out.exists() and out.stat().st_size > 0)

    def test_issue_accepts_openssl_csrs(self):
        # CSRs from an independent implementation, for key types keygen does not offer.
        ca = self.new_ca()
        for name, newkey in (("rsa4096", ["rsa:4096"]),
                             ("p521", ["ec", "-pkeyopt", "ec_paramgen_curve:P-521"])):
            with self.subTest(key=name):
                key, csr, out = (self.path(f"{name}.key"), self.path(f"{name}.csr"),
                                 self.path(f"{name}.pem"))
                run(["openssl", "req", "-new", "-newkey", *newkey, "-nodes", "-keyout", key,
                     "-subj", "/CN=ignored", "-out", csr], timeout=60)
                self.sigil.issue(ca, csr, f"{WORKLOAD_ID}/{name}", out)
                leaf = helpers.load_certs(out)[0]
                self.assert_leaf_is_x509_svid(leaf, f"{WORKLOAD_ID}/{name}", [])
                self.assertEqual(spki(leaf), spki(serialization.load_pem_private_key(
                    key.read_bytes(), None)))

    def test_issue_refuses_weak_rsa_csr(self):
        key, csr = self.path("weak.key"), self.path("weak.csr")
        run(["openssl", "req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", key,
             "-subj", "/CN=weak", "-out", csr])
        out = self.path("weak.pem")
        r = self.sigil.issue(self.new_ca(), csr, WORKLOAD_ID, out, check=False)
        self.assertNotEqual(r.returncode, 0, "issued an SVID for a 1024-bit RSA key")
        self.assertFalse(out.exists() and out.stat().st_size > 0)

    def test_issue_refuses_invalid_ids(self):
        ca = self.new_ca()
        csr = self.sigil.csr(self.sigil.keygen(self.path("k.key")), self.path("k.csr"))
        for bad in (f"spiffe://{TRUST_DOMAIN}",            # a leaf ID needs a path
                    "spiffe://other.example/ns/prod",        # another trust domain
                    f"https://{TRUST_DOMAIN}/web",           # wrong scheme
                    f"spiffe://{TRUST_DOMAIN}/a/../b"):      # dot segments are not allowed
            with self.subTest(spiffe_id=bad):
                out = self.path("bad.pem")
                r = self.sigil.issue(ca, csr, bad, out, check=False)
                self.assertNotEqual(r.returncode, 0, f"issued an SVID for {bad!r}")
                self.assertFalse(out.exists() and out.stat().st_size > 0,
                                 "a refused issuance must not leave a certificate behind")


class CaFieldsTest(X509Assertions):
    def test_self_signed_ca(self):
        t0 = now_utc()
        ca = self.new_ca(ttl="24h")
        chain = helpers.load_certs(ca / "ca-chain.pem")
        self.assertEqual(len(chain), 1)
        root = chain[0]
        self.assert_ca_cert(root)
        self.assertEqual(root.subject, root.issuer)
        verify_signed_by(root, root)
        self.assertEqual(helpers.load_certs(ca / "bundle.pem"), [root])
        naf = utc(root.not_valid_after)
        self.assertAlmostEqual(naf.timestamp(), t0.timestamp() + 24 * 3600, delta=5)
        self.assertLessEqual(utc(root.not_valid_before), t0)
        self.assertGreaterEqual(root.serial_number, 2 ** 64)
        for secret in ("ca-key.pem", "jwt-key.pem"):
            with self.subTest(secret=secret):
                self.assertEqual(stat.S_IMODE(os.stat(ca / secret).st_mode), 0o600)
        key = serialization.load_pem_private_key((ca / "ca-key.pem").read_bytes(), None)
        self.assertEqual(spki(root), spki(key))
        self.assertEqual((ca / "trust-domain").read_text().strip(), TRUST_DOMAIN)

    def test_upstream_intermediate(self):
        for with_intermediate in (False, True):
            with self.subTest(upstream_intermediate=with_intermediate):
                up = helpers.make_upstream_ca(self.path(f"up-{with_intermediate}"),
                                              with_intermediate=with_intermediate)
                ca = self.path(f"ca-{with_intermediate}")
                ca.mkdir()
                self.sigil.ca_init(ca, upstream_cert=up.chain, upstream_key=up.key)
                chain = helpers.load_certs(ca / "ca-chain.pem")
                signer = helpers.load_certs(up.chain)[0]
                sigil_ca = chain[0]
                self.assert_ca_cert(sigil_ca)
                self.assert_issued_by(sigil_ca, signer)
                self.assertLessEqual(utc(sigil_ca.not_valid_after), utc(signer.not_valid_after))
                svid, _, _ = self.issue_timed(ca, WORKLOAD_ID, f"web-{with_intermediate}")
                leaf = helpers.load_certs(svid.chain)[0]
                self.assert_leaf_is_x509_svid(leaf, WORKLOAD_ID, [])
                self.assert_issued_by(leaf, sigil_ca)

    def test_upstream_lifetime_caps_sigil_ca(self):
        # Upstream root valid for 1 day; ask Sigil for a 30-day intermediate.
        up = helpers.make_upstream_ca(self.path("up"), with_intermediate=False, days=1)
        ca = self.path("ca")
        ca.mkdir()
        self.sigil.ca_init(ca, ttl="720h", upstream_cert=up.chain, upstream_key=up.key)
        up_naf = utc(helpers.load_certs(up.root)[0].not_valid_after)
        sigil_ca = helpers.load_certs(ca / "ca-chain.pem")[0]
        self.assertLessEqual(utc(sigil_ca.not_valid_after), up_naf)
        svid, _, _ = self.issue_timed(ca, WORKLOAD_ID, "web", ttl="48h")
        self.assertLessEqual(utc(helpers.load_certs(svid.chain)[0].not_valid_after), up_naf)

    def test_ca_init_refuses_unusable_upstream(self):
        # Upstream signers under which no valid SVID could exist: ca-init must fail up front
        # and leave no CA material behind.
        for profile in ("v3_intermediate_pathlen0", "v3_not_ca", "v3_ca_without_keycertsign"):
            with self.subTest(upstream=profile):
                up = helpers.make_upstream_ca(self.path(f"up-{profile}"), with_intermediate=True,
                                              intermediate_profile=profile)
                ca = self.path(f"ca-{profile}")
                r = self.sigil.ca_init(ca, upstream_cert=up.chain, upstream_key=up.key,
                                       check=False)
                self.assertNotEqual(r.returncode, 0, f"ca-init accepted upstream {profile}")
                self.assertTrue(r.stderr.strip())
                for name in ("ca-chain.pem", "ca-key.pem", "bundle.pem", "bundle.jwks"):
                    self.assertFalse((ca / name).exists(), f"{name} left behind")

    def test_ca_init_refuses_upstream_key_mismatch(self):
        up = helpers.make_upstream_ca(self.path("up"), with_intermediate=True)
        other = helpers.make_upstream_ca(self.path("other"), with_intermediate=False)
        ca = self.path("ca")
        ca.mkdir()
        r = self.sigil.ca_init(ca, upstream_cert=up.chain, upstream_key=other.key, check=False)
        self.assertNotEqual(r.returncode, 0, "ca-init accepted a key that does not match "
                                             "the upstream certificate")
        self.assertTrue(r.stderr.strip())


if __name__ == "__main__":
    helpers.main()
