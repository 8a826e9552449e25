"""JWT-SVIDs interoperate with PyJWT in both directions.

Coverage (issue item 4, rules from spiffe-reference.md section 3):
  * PyJWT verifies a token from `sigil pki jwt-mint` with the public key it finds, by the
    token's kid, among the jwt-svid entries of our bundle.jwks, including the audience check;
  * `sigil pki jwt-validate` accepts tokens PyJWT minted (kid, sub, aud, exp) with keys we put in
    the bundle through `sigil pki bundle-add-jwt-key`;
  * and rejects: HS256 (also the RSA/EC public-key-as-HMAC-secret confusion), alg none, EdDSA,
    a wrong or missing audience, an expired token, a key not in the bundle (same or unknown kid),
    a tampered payload, a subject of another trust domain or not a SPIFFE ID, missing claims,
    a bad typ and unexpected JOSE headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import helpers
from helpers import TRUST_DOMAIN, InteropCase

SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/ns/prod/sa/web"
ALLOWED_ALGS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}
B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def jwt_entries(jwks_path: Path) -> list[dict]:
    doc = json.loads(jwks_path.read_text())
    return [k for k in doc["keys"] if k.get("use") == "jwt-svid"]


class JwtCase(InteropCase):
    TOOLS = ()

    def setUp(self) -> None:
        super().setUp()
        self.ca = self.new_ca()
        self.kid = (self.ca / "jwt-kid").read_text().strip()

    def pyjwt_key_for(self, token: str, jwks_path: Path):
        """The verification key, found the way a third party would: kid -> JWKS entry."""
        header = jwt.get_unverified_header(token)
        self.assertIn("kid", header, "JWT-SVID header must carry the kid of a bundle key")
        matches = [k for k in jwt_entries(jwks_path) if k.get("kid") == header["kid"]]
        self.assertEqual(len(matches), 1, f"kid {header['kid']!r} must match exactly one "
                                          "jwt-svid key of the bundle")
        return jwt.PyJWK(matches[0], algorithm=header["alg"]).key, header


class SigilMintsPyJwtVerifies(JwtCase):
    def test_pyjwt_verifies_sigil_token(self):
        t0 = int(time.time())
        token = self.sigil.jwt_mint(self.ca, SPIFFE_ID, ["spiffe://example.org/db"], ttl="5m")
        t1 = int(time.time())

        parts = token.split(".")
        self.assertEqual(len(parts), 3, "JWS compact serialisation")
        for p in parts:
            self.assertRegex(p, B64URL_RE, "unpadded base64url")
        self.assertTrue(parts[2], "signed token")

        key, header = self.pyjwt_key_for(token, self.ca / "bundle.jwks")
        self.assertIn(header["alg"], ALLOWED_ALGS)
        self.assertEqual(header["kid"], self.kid)
        self.assertLessEqual(set(header), {"alg", "kid", "typ"}, "no other JOSE headers")
        if "typ" in header:
            self.assertIn(header["typ"], ("JWT", "JOSE"))

        claims = jwt.decode(token, key, algorithms=[header["alg"]],
                            audience="spiffe://example.org/db",
                            options={"require": ["sub", "aud", "exp"]})
        self.assertEqual(claims["sub"], SPIFFE_ID)
        aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        self.assertEqual(aud, ["spiffe://example.org/db"])
        self.assertGreaterEqual(claims["exp"], t0 + 300 - 2)
        self.assertLessEqual(claims["exp"], t1 + 300 + 2)

        # Negative controls: PyJWT really checks the audience and the signature here.
        with self.assertRaises(jwt.InvalidAudienceError):
            jwt.decode(token, key, algorithms=[header["alg"]], audience="someone-else")
        stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
        with self.assertRaises(jwt.InvalidSignatureError):
            jwt.decode(token, stranger, algorithms=[header["alg"]],
                       audience="spiffe://example.org/db")

    def test_pyjwt_verifies_via_ec_algorithm_from_jwk(self):
        token = self.sigil.jwt_mint(self.ca, SPIFFE_ID, ["aud-1"])
        header = jwt.get_unverified_header(token)
        [entry] = [k for k in jwt_entries(self.ca / "bundle.jwks") if k["kid"] == header["kid"]]
        if entry["kty"] == "EC":
            key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(entry))
        else:
            key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(entry))
        claims = jwt.decode(token, key, algorithms=[header["alg"]], audience="aud-1")
        self.assertEqual(claims["sub"], SPIFFE_ID)
        # The bundle key is the public half of the CA's JWT signing key.
        priv = serialization.load_pem_private_key((self.ca / "jwt-key.pem").read_bytes(), None)
        self.assertEqual(public_pem(priv), key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def test_multiple_audiences_and_ttl(self):
        t0 = int(time.time())
        token = self.sigil.jwt_mint(self.ca, SPIFFE_ID, ["aud-a", "aud-b"], ttl="1h30m")
        key, header = self.pyjwt_key_for(token, self.ca / "bundle.jwks")
        for aud in ("aud-a", "aud-b"):
            with self.subTest(audience=aud):
                claims = jwt.decode(token, key, algorithms=[header["alg"]], audience=aud)
                self.assertEqual(sorted(claims["aud"]), ["aud-a", "aud-b"])
                self.assertAlmostEqual(claims["exp"], t0 + 5400, delta=5)
        # Sigil's own validator wants every expected audience (go-spiffe semantics).
        r = self.sigil.jwt_validate(self.ca / "bundle.jwks", ["aud-a", "aud-b"], token)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_ca_key_types(self):
        for key_type in ("ec-p384", "rsa-2048"):
            with self.subTest(key_type=key_type):
                ca = self.new_ca(f"ca-{key_type}", key_type=key_type)
                token = self.sigil.jwt_mint(ca, SPIFFE_ID, ["aud-1"])
                key, header = self.pyjwt_key_for(token, ca / "bundle.jwks")
                self.assertIn(header["alg"], ALLOWED_ALGS)
                claims = jwt.decode(token, key, algorithms=[header["alg"]], audience="aud-1")
                self.assertEqual(claims["sub"], SPIFFE_ID)

    def test_sigil_validates_its_own_token(self):
        token = self.sigil.jwt_mint(self.ca, SPIFFE_ID, ["aud-1"])
        for via_file in (None, self.path("token.jwt")):
            with self.subTest(token_file=via_file is not None):
                r = self.sigil.jwt_validate(self.ca / "bundle.jwks", ["aud-1"], token,
                                            via_file=via_file)
                self.assertEqual(r.returncode, 0, r.stderr)
                out = json.loads(r.stdout)
                self.assertEqual(out["spiffe_id"], SPIFFE_ID)
                self.assertEqual(out["claims"]["sub"], SPIFFE_ID)
        # A second CA of the same trust domain has other JWT keys: its bundle rejects the token.
        other = self.new_ca("other")
        r = self.sigil.jwt_validate(other / "bundle.jwks", ["aud-1"], token)
        self.assertEqual(r.returncode, 1, r.stdout)


    def test_jwt_mint_refuses_id_of_another_trust_domain(self):
        # A CA signs only for its own trust domain; `issue` already refuses such IDs
        # (test_x509_fields), and a JWT-SVID for spiffe://other.example signed with
        # example.org's key is the same mistake.
        r = self.sigil("jwt-mint", "--dir", self.ca, "--spiffe-id",
                       "spiffe://other.example/ns/prod/sa/web", "--audience", "aud-1",
                       check=False)
        self.assertNotEqual(r.returncode, 0,
                            f"jwt-mint signed a token for another trust domain:\n{r.stdout}")
        self.assertEqual(r.stdout.strip(), "")


class PyJwtMintsSigilValidates(JwtCase):
    """Tokens built by PyJWT (an independent JOSE implementation) against our validator."""

    KID = "pyjwt-es256"

    def setUp(self) -> None:
        super().setUp()
        self.key = ec.generate_private_key(ec.SECP256R1())
        pub = self.path("pyjwt.pub.pem")
        pub.write_bytes(public_pem(self.key))
        self.bundle = self.sigil.bundle_add_jwt_key(self.ca / "bundle.jwks", self.KID, pub,
                                                    self.path("bundle-plus.jwks"))

    def claims(self, **overrides):
        now = int(time.time())
        c = {"sub": SPIFFE_ID, "aud": "svc-a", "exp": now + 300, "iat": now}
        c.update(overrides)
        return {k: v for k, v in c.items() if v is not None}

    def mint(self, claims=None, *, key=None, alg="ES256", kid=KID, headers=None) -> str:
        h = {"kid": kid} if kid is not None else {}
        h.update(headers or {})
        return jwt.encode(self.claims() if claims is None else claims,
                          self.key if key is None else key, algorithm=alg, headers=h)

    def assert_accepted(self, token: str, audiences=("svc-a",), bundle: Path | None = None):
        r = self.sigil.jwt_validate(bundle or self.bundle, list(audiences), token)
        self.assertEqual(r.returncode, 0, f"jwt-validate rejected a valid token:\n{r.stderr}")
        return json.loads(r.stdout)

    def assert_rejected(self, token: str, audiences=("svc-a",), why: str = "") -> None:
        r = self.sigil.jwt_validate(self.bundle, list(audiences), token)
        self.assertEqual(r.returncode, 1, f"jwt-validate should reject ({why}), got exit "
                                          f"{r.returncode}:\n{r.stdout}{r.stderr}")
        self.assertNotIn("spiffe_id", r.stdout)
        self.assertTrue(r.stderr.strip(), "a rejection must say why on stderr")
        if len(token) > 16:
            self.assertNotIn(token, r.stderr, "error messages must not echo the token")

    # --- acceptance ----------------------------------------------------------------------

    def test_bundle_add_jwt_key_publishes_the_key(self):
        entries = {k["kid"]: k for k in jwt_entries(self.bundle)}
        self.assertIn(self.KID, entries)
        self.assertIn(self.kid, entries, "the CA's own JWT key must survive bundle-add-jwt-key")
        published = jwt.PyJWK(entries[self.KID]).key
        self.assertEqual(published.public_numbers(), self.key.public_key().public_numbers())

    def test_accepts_pyjwt_es256_token(self):
        claims = self.claims(jti="abc-123")
        out = self.assert_accepted(self.mint(claims))
        self.assertEqual(out["spiffe_id"], SPIFFE_ID)
        for name in ("sub", "aud", "exp", "iat", "jti"):
            self.assertEqual(out["claims"][name], claims[name], f"claim {name}")
        # Our own tokens still validate against the extended bundle.
        self.assert_accepted(self.sigil.jwt_mint(self.ca, SPIFFE_ID, ["svc-a"]))

    def test_accepts_audience_array_containing_ours(self):
        self.assert_accepted(self.mint(self.claims(aud=["svc-z", "svc-a"])))

    def test_accepts_other_allowed_algorithms(self):
        cases = (("ES384", ec.generate_private_key(ec.SECP384R1())),
                 ("ES512", ec.generate_private_key(ec.SECP521R1())),
                 ("RS256", rsa.generate_private_key(65537, 2048)),
                 ("PS256", rsa.generate_private_key(65537, 2048)))
        bundle = self.bundle
        for alg, key in cases:
            pub = self.path(f"{alg}.pub.pem")
            pub.write_bytes(public_pem(key))
            bundle = self.sigil.bundle_add_jwt_key(bundle, f"kid-{alg}", pub,
                                                   self.path(f"bundle-{alg}.jwks"))
        for alg, key in cases:
            with self.subTest(alg=alg):
                self.assert_accepted(self.mint(key=key, alg=alg, kid=f"kid-{alg}"),
                                     bundle=bundle)

    # --- rejection -----------------------------------------------------------------------

    def test_rejects_hs256(self):
        self.assert_rejected(self.mint(key=os.urandom(32), alg="HS256"), why="HS256")
        # Algorithm confusion: the bundle's public key used as the HMAC secret.
        header = b64url_json({"alg": "HS256", "kid": self.KID, "typ": "JWT"})
        payload = b64url_json(self.claims())
        for secret in (public_pem(self.key),
                       json.dumps([k for k in jwt_entries(self.bundle)
                                   if k["kid"] == self.KID][0]).encode()):
            mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            self.assert_rejected(f"{header}.{payload}.{b64url(mac)}", why="HS256 confusion")

    def test_rejects_alg_none(self):
        self.assert_rejected(jwt.encode(self.claims(), None, algorithm="none",
                                        headers={"kid": self.KID}), why="alg none")
        # A valid token whose header is rewritten to none, with and without the signature.
        h, p, s = self.mint().split(".")
        for alg in ("none", "None", "NONE"):
            forged = b64url_json({"alg": alg, "kid": self.KID, "typ": "JWT"})
            self.assert_rejected(f"{forged}.{p}.", why=f"alg {alg}")
            self.assert_rejected(f"{forged}.{p}.{s}", why=f"alg {alg} + signature")

    def test_rejects_eddsa(self):
        # EdDSA is not a JWT-SVID algorithm, even when signed by a real key.
        self.assert_rejected(self.mint(key=ed25519.Ed25519PrivateKey.generate(), alg="EdDSA"),
                             why="EdDSA")

    def test_rejects_wrong_audience(self):
        token = self.mint(self.claims(aud="svc-b"))
        self.assert_accepted(token, audiences=("svc-b",))  # control: only aud differs
        self.assert_rejected(token, audiences=("svc-a",), why="wrong audience")
        # Every expected audience must be present.
        self.assert_rejected(self.mint(), audiences=("svc-a", "svc-b"),
                             why="one expected audience missing")

    def test_rejects_expired(self):
        now = int(time.time())
        self.assert_rejected(self.mint(self.claims(exp=now - 600, iat=now - 900)),
                             why="expired 10 minutes ago")

    def test_rejects_key_not_in_bundle(self):
        stranger = ec.generate_private_key(ec.SECP256R1())
        self.assert_rejected(self.mint(key=stranger), why="same kid, other key")
        self.assert_rejected(self.mint(key=stranger, kid="not-in-bundle"), why="unknown kid")
        # The CA's kid, but our key: the signature must be checked against that kid's key.
        self.assert_rejected(self.mint(kid=self.kid), why="kid of another bundle key")

    def test_rejects_tampered_payload(self):
        h, _, s = self.mint().split(".")
        forged = b64url_json(self.claims(sub=f"spiffe://{TRUST_DOMAIN}/ns/prod/sa/admin"))
        self.assert_rejected(f"{h}.{forged}.{s}", why="payload changed after signing")

    def test_rejects_bad_subjects_and_missing_claims(self):
        for why, claims in (
                ("sub of another trust domain", self.claims(sub="spiffe://other.example/x")),
                ("sub not a SPIFFE ID", self.claims(sub="https://example.org/web")),
                ("missing sub", self.claims(sub=None)),
                ("missing exp", self.claims(exp=None)),
                ("missing aud", self.claims(aud=None)),
                ("empty aud array", self.claims(aud=[]))):
            with self.subTest(why=why):
                self.assert_rejected(self.mint(claims), why=why)

    def test_rejects_bad_headers(self):
        self.assert_rejected(self.mint(headers={"typ": "at+jwt"}), why="typ at+jwt")
        self.assert_rejected(self.mint(headers={"jku": "https://attacker.example/jwks"}),
                             why="unexpected jku header")

    def test_rejects_der_encoded_ecdsa_signature(self):
        # RFC 7518 section 3.4: an ES256 signature is R||S (64 bytes), not a DER SEQUENCE.
        header = b64url_json({"alg": "ES256", "kid": self.KID, "typ": "JWT"})
        payload = b64url_json(self.claims())
        der_sig = self.key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
        self.assert_rejected(f"{header}.{payload}.{b64url(der_sig)}", why="DER signature")

    def test_rejects_malformed(self):
        good = self.mint()
        for why, token in (("two segments", ".".join(good.split(".")[:2])),
                           ("four segments", good + ".AAAA"),
                           ("not base64url", good.replace(".", ".*", 1)),
                           ("empty", "")):
            with self.subTest(why=why):
                self.assert_rejected(token, why=why)


if __name__ == "__main__":
    helpers.main()
