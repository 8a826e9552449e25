"""bundle.jwks is a well-formed SPIFFE bundle, read with nothing but Python's json + cryptography.

Coverage (issue item 5, rules from spiffe-reference.md sections 2-4): top-level `keys` and an
integer `spiffe_sequence` (and `spiffe_refresh_hint`, if present, integer seconds); every key
has `kty` and a known `use`; x509-svid keys carry an `x5c` of exactly one standard-base64 DER CA
certificate (the bundle.pem root) and no `kid`, and their key members match that certificate;
jwt-svid keys carry the `kid` from DIR/jwt-kid and the public half of DIR/jwt-key.pem; no key
leaks private members. `bundle-add-jwt-key` raises spiffe_sequence, keeps the existing keys,
leaves its input untouched and refuses a duplicate kid bound to another key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import helpers
from helpers import TRUST_DOMAIN, InteropCase

STD_B64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
B64URL_RE = re.compile(r"^[A-Za-z0-9_-]+$")
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
CURVES = {"P-256": ("secp256r1", 32), "P-384": ("secp384r1", 48), "P-521": ("secp521r1", 66)}


def b64url_uint(s: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")


def spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


class JwksCase(InteropCase):
    TOOLS = ()

    def load(self, path: Path) -> dict:
        doc = json.loads(path.read_text(encoding="utf-8"))
        self.assertIsInstance(doc, dict)
        return doc

    def assert_jwk_matches(self, jwk: dict, public_key) -> None:
        """Checks a JWK's key members (RFC 7518 section 6) against a cryptography key."""
        if jwk["kty"] == "EC":
            self.assertIsInstance(public_key, ec.EllipticCurvePublicKey)
            curve, size = CURVES[jwk["crv"]]
            self.assertEqual(public_key.curve.name, curve)
            nums = public_key.public_numbers()
            for member, value in (("x", nums.x), ("y", nums.y)):
                self.assertRegex(jwk[member], B64URL_RE)
                raw = base64.urlsafe_b64decode(jwk[member] + "=" * (-len(jwk[member]) % 4))
                self.assertEqual(len(raw), size, f"{member} must be the full coordinate length")
                self.assertEqual(int.from_bytes(raw, "big"), value)
        elif jwk["kty"] == "RSA":
            self.assertIsInstance(public_key, rsa.RSAPublicKey)
            nums = public_key.public_numbers()
            self.assertEqual(b64url_uint(jwk["n"]), nums.n)
            self.assertEqual(b64url_uint(jwk["e"]), nums.e)
        else:
            self.fail(f"unexpected kty {jwk['kty']!r}")

    def assert_spiffe_bundle(self, ca: Path) -> dict:
        doc = self.load(ca / "bundle.jwks")
        self.assertIn("keys", doc)
        self.assertIsInstance(doc["keys"], list)

        self.assertIn("spiffe_sequence", doc)
        seq = doc["spiffe_sequence"]
        self.assertTrue(isinstance(seq, int) and not isinstance(seq, bool),
                        f"spiffe_sequence must be a JSON integer, got {seq!r}")
        self.assertGreaterEqual(seq, 0)
        if "spiffe_refresh_hint" in doc:
            hint = doc["spiffe_refresh_hint"]
            self.assertTrue(isinstance(hint, int) and not isinstance(hint, bool) and hint > 0,
                            f"spiffe_refresh_hint must be positive integer seconds: {hint!r}")

        for i, key in enumerate(doc["keys"]):
            with self.subTest(key=i):
                self.assertIn("kty", key)
                self.assertIn(key.get("use"), ("x509-svid", "jwt-svid"))
                leaked = PRIVATE_MEMBERS & set(key)
                self.assertFalse(leaked, f"bundle key {i} leaks private members {leaked}")

        roots = helpers.load_certs(ca / "bundle.pem")
        x509_keys = [k for k in doc["keys"] if k["use"] == "x509-svid"]
        self.assertEqual(len(x509_keys), len(roots),
                         "one x509-svid key per X.509 authority in bundle.pem")
        from_jwks = []
        for key in x509_keys:
            self.assertNotIn("kid", key, "x509-svid keys MUST NOT have a kid")
            self.assertIsInstance(key.get("x5c"), list)
            self.assertEqual(len(key["x5c"]), 1, "x5c holds exactly one certificate")
            self.assertRegex(key["x5c"][0], STD_B64_RE, "x5c uses standard base64, not base64url")
            try:
                der = base64.b64decode(key["x5c"][0], validate=True)
            except binascii.Error as e:
                self.fail(f"x5c is not valid base64: {e}")
            cert = x509.load_der_x509_certificate(der)
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            self.assertTrue(bc.ca, "x5c must be a CA certificate")
            self.assertEqual(cert.subject, cert.issuer, "x5c SHOULD be self-signed (a root)")
            helpers.verify_signed_by(cert, cert)
            if {"x", "y", "n", "e"} & set(key):
                self.assert_jwk_matches(key, cert.public_key())
            from_jwks.append(cert)
        self.assertEqual(sorted(c.fingerprint(_sha256()) for c in from_jwks),
                         sorted(c.fingerprint(_sha256()) for c in roots),
                         "x5c certificates and bundle.pem must hold the same roots")
        self.assertEqual(helpers.load_certs(ca / "ca-chain.pem")[-1], roots[0],
                         "the bundle root is the last certificate of ca-chain.pem")

        jwt_keys = [k for k in doc["keys"] if k["use"] == "jwt-svid"]
        self.assertGreaterEqual(len(jwt_keys), 1, "ca-init publishes its JWT key")
        for key in jwt_keys:
            self.assertIsInstance(key.get("kid"), str)
            self.assertTrue(key["kid"], "jwt-svid keys MUST have a non-empty kid")
        kids = [k["kid"] for k in jwt_keys]
        self.assertEqual(len(kids), len(set(kids)), "kids are unique within a bundle")
        kid = (ca / "jwt-kid").read_text().strip()
        [own] = [k for k in jwt_keys if k["kid"] == kid]
        priv = serialization.load_pem_private_key((ca / "jwt-key.pem").read_bytes(), None)
        self.assert_jwk_matches(own, priv.public_key())
        return doc


def _sha256():
    from cryptography.hazmat.primitives import hashes
    return hashes.SHA256()


class BundleFormatTest(JwksCase):
    def test_self_signed_ca_bundle(self):
        for key_type in ("ec-p256", "ec-p384", "rsa-2048"):
            with self.subTest(key_type=key_type):
                ca = self.new_ca(f"ca-{key_type}", key_type=key_type)
                doc = self.assert_spiffe_bundle(ca)
                self.assertEqual(len([k for k in doc["keys"] if k["use"] == "x509-svid"]), 1)
                self.assertEqual(len([k for k in doc["keys"] if k["use"] == "jwt-svid"]), 1)

    def test_upstream_ca_bundle_holds_the_upstream_root(self):
        up = helpers.make_upstream_ca(self.path("up"), with_intermediate=True)
        ca = self.path("ca")
        ca.mkdir()
        self.sigil.ca_init(ca, upstream_cert=up.chain, upstream_key=up.key)
        doc = self.assert_spiffe_bundle(ca)
        [x5] = [k for k in doc["keys"] if k["use"] == "x509-svid"]
        der = base64.b64decode(x5["x5c"][0])
        self.assertEqual(x509.load_der_x509_certificate(der), helpers.load_certs(up.root)[0],
                         "the trust anchor is the upstream root, not the Sigil intermediate")

    def test_bundle_is_per_ca(self):
        a = self.new_ca("a")
        b = self.new_ca("b")
        ka = {k["kid"] for k in self.load(a / "bundle.jwks")["keys"] if k["use"] == "jwt-svid"}
        kb = {k["kid"] for k in self.load(b / "bundle.jwks")["keys"] if k["use"] == "jwt-svid"}
        self.assertFalse(ka & kb, "two CAs must not share JWT kids")
        self.assertNotEqual(helpers.load_certs(a / "bundle.pem"),
                            helpers.load_certs(b / "bundle.pem"))


class BundleAddJwtKeyTest(JwksCase):
    def test_add_key_bumps_sequence_and_keeps_keys(self):
        ca = self.new_ca()
        before_text = (ca / "bundle.jwks").read_text()
        before = self.assert_spiffe_bundle(ca)
        key = ec.generate_private_key(ec.SECP384R1())
        pub = self.path("new.pub.pem")
        pub.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        out = self.sigil.bundle_add_jwt_key(ca / "bundle.jwks", "added-1", pub,
                                            self.path("out.jwks"))
        self.assertEqual((ca / "bundle.jwks").read_text(), before_text, "input left untouched")
        after = self.load(out)
        self.assertGreater(after["spiffe_sequence"], before["spiffe_sequence"],
                           "spiffe_sequence must increase on every bundle update")
        for old in before["keys"]:
            self.assertIn(old, after["keys"], "existing keys must be kept unchanged")
        [new] = [k for k in after["keys"] if k.get("kid") == "added-1"]
        self.assertEqual(new["use"], "jwt-svid")
        self.assertFalse(PRIVATE_MEMBERS & set(new))
        self.assert_jwk_matches(new, key.public_key())
        self.assertEqual(len(after["keys"]), len(before["keys"]) + 1)

    def test_duplicate_kid_with_other_key_refused(self):
        ca = self.new_ca()
        kid = (ca / "jwt-kid").read_text().strip()
        pub = self.path("other.pub.pem")
        pub.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        out = self.path("out.jwks")
        r = self.sigil("bundle-add-jwt-key", "--trust-domain", TRUST_DOMAIN,
                       "--bundle", ca / "bundle.jwks", "--kid", kid, "--public-key", pub,
                       "--out", out, check=False)
        self.assertNotEqual(r.returncode, 0, "a kid must not be rebound to another key")
        self.assertTrue(r.stderr.strip())


class BundleConsumerTest(JwksCase):
    """Bundles written by Python's json (not by Sigil) exercise the consumer rules of
    spiffe-reference.md sections 2 and 4 through `sigil pki verify` and `jwt-validate`."""

    SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/ns/prod/sa/web"

    def setUp(self) -> None:
        super().setUp()
        self.ca = self.new_ca()
        self.other = self.new_ca("other")
        self.svid = self.new_svid(self.ca, self.SPIFFE_ID, "web")
        self.foreign = self.new_svid(self.other, self.SPIFFE_ID, "foreign")
        self.token = self.sigil.jwt_mint(self.ca, self.SPIFFE_ID, ["aud-1"])
        self.doc = self.load(self.ca / "bundle.jwks")
        self.x509_entry = next(k for k in self.doc["keys"] if k["use"] == "x509-svid")
        self.jwt_entry = next(k for k in self.doc["keys"] if k["use"] == "jwt-svid")
        self.other_x509_entry = next(k for k in self.load(self.other / "bundle.jwks")["keys"]
                                     if k["use"] == "x509-svid")
        self.other_x5c = self.other_x509_entry["x5c"][0]
        self.n = 0

    def write(self, doc: dict) -> Path:
        self.n += 1
        path = self.path(f"crafted-{self.n}.jwks")
        path.write_text(json.dumps(doc))
        return path

    def x509_ok(self, bundle: Path, svid=None) -> bool:
        r = self.sigil.verify(bundle, (svid or self.svid).chain, check=False)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        return r.returncode == 0

    def jwt_ok(self, bundle: Path) -> bool:
        r = self.sigil.jwt_validate(bundle, ["aud-1"], self.token)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        return r.returncode == 0

    def test_unknown_members_uses_and_key_types_are_skipped(self):
        doc = {
            "keys": [
                {"kty": "EC", "use": "enc", "crv": "P-256", "x": self.jwt_entry["x"],
                 "y": self.jwt_entry["y"]},                            # unknown use
                {"kty": "EC", "crv": "P-256", "x": self.jwt_entry["x"],
                 "y": self.jwt_entry["y"], "kid": "no-use"},           # missing use
                {"kty": "oct", "use": "jwt-svid", "kid": "sym", "k": "c2VjcmV0"},  # unknown kty
                self.x509_entry,
                self.jwt_entry,
            ],
            "spiffe_sequence": 7,
            "spiffe_refresh_hint": 60,
            "x-vendor-extension": {"anything": [1, 2, 3]},             # unknown member
        }
        bundle = self.write(doc)
        self.assertTrue(self.x509_ok(bundle), "skippable entries must not poison the bundle")
        self.assertTrue(self.jwt_ok(bundle))

    def test_optional_members_may_be_absent(self):
        bundle = self.write({"keys": [self.x509_entry, self.jwt_entry]})
        self.assertTrue(self.x509_ok(bundle), "spiffe_sequence/refresh_hint are only SHOULD")
        self.assertTrue(self.jwt_ok(bundle))

    def test_empty_key_set_trusts_nothing(self):
        bundle = self.write({"keys": [], "spiffe_sequence": 2})
        self.assertFalse(self.x509_ok(bundle))
        self.assertFalse(self.jwt_ok(bundle))

    def test_authorities_are_per_use(self):
        only_jwt = self.write({"keys": [self.jwt_entry], "spiffe_sequence": 2})
        self.assertFalse(self.x509_ok(only_jwt), "no x509-svid entry: no X.509 authority")
        self.assertTrue(self.jwt_ok(only_jwt))
        only_x509 = self.write({"keys": [self.x509_entry], "spiffe_sequence": 2})
        self.assertTrue(self.x509_ok(only_x509))
        self.assertFalse(self.jwt_ok(only_x509), "no jwt-svid entry: JWT-SVIDs unsupported")

    def test_x509_entries_without_x5c_are_skipped(self):
        no_x5c = {k: v for k, v in self.x509_entry.items() if k != "x5c"}
        empty_x5c = dict(no_x5c, x5c=[])
        bundle = self.write({"keys": [no_x5c, empty_x5c, self.x509_entry], "spiffe_sequence": 2})
        self.assertTrue(self.x509_ok(bundle))

    def test_union_of_x509_entries_and_only_x5c0(self):
        # Two x509-svid entries: the union of their authorities is trusted.
        union = self.write({"keys": [self.x509_entry, self.other_x509_entry]})
        self.assertTrue(self.x509_ok(union, self.svid))
        self.assertTrue(self.x509_ok(union, self.foreign))
        # Only x5c[0] of an entry is an authority: the other CA hidden in x5c[1] is not.
        hidden = self.write({"keys": [dict(self.x509_entry,
                                           x5c=self.x509_entry["x5c"] + [self.other_x5c])]})
        self.assertTrue(self.x509_ok(hidden, self.svid))
        self.assertFalse(self.x509_ok(hidden, self.foreign), "x5c[1] must not be trusted")


if __name__ == "__main__":
    helpers.main()
