"""openssl verify (RFC 5280 path validation, -x509_strict) accepts Sigil X.509-SVIDs.

Coverage (issue item 1): `openssl verify -x509_strict -purpose sslclient|sslserver` with the
bundle as -CAfile and the SVID's intermediates as -untrusted accepts SVIDs of a self-signed Sigil
CA and of a Sigil CA chained to an openssl-made upstream root (with and without an upstream
intermediate), for EC P-256/P-384 and RSA-2048; it rejects SVIDs of an unrelated CA of the same
trust domain. `sigil pki verify` must agree with openssl on every accept/reject.
"""

from __future__ import annotations

from pathlib import Path

import helpers
from helpers import TRUST_DOMAIN, InteropCase, SvidFiles, run

PURPOSES = ("sslclient", "sslserver")
WORKLOAD_ID = f"spiffe://{TRUST_DOMAIN}/ns/prod/sa/web"


def openssl_verify(ca_file: Path, svid: SvidFiles, purpose: str, *,
                   untrusted: Path | None | bool = True):
    """openssl verify of the SVID leaf. untrusted=True uses the SVID's own intermediates."""
    argv: list[object] = ["openssl", "verify", "-x509_strict", "-purpose", purpose,
                          "-CAfile", ca_file]
    if untrusted is True:
        untrusted = svid.intermediates
    if untrusted:
        argv += ["-untrusted", untrusted]
    argv.append(svid.leaf)
    return run(argv, check=False)


class VerifyAssertions(InteropCase):
    def assert_openssl_accepts(self, ca_file: Path, svid: SvidFiles) -> None:
        for purpose in PURPOSES:
            with self.subTest(purpose=purpose):
                r = openssl_verify(ca_file, svid, purpose)
                self.assertEqual(r.returncode, 0,
                                 f"openssl verify -purpose {purpose} rejected {svid.spiffe_id}:"
                                 f"\n{r.stdout}{r.stderr}")
                self.assertIn(": OK", r.stdout)

    def assert_openssl_rejects(self, ca_file: Path, svid: SvidFiles,
                               untrusted: Path | None | bool = True) -> None:
        for purpose in PURPOSES:
            with self.subTest(purpose=purpose):
                r = openssl_verify(ca_file, svid, purpose, untrusted=untrusted)
                self.assertNotEqual(r.returncode, 0,
                                    f"openssl verify -purpose {purpose} ACCEPTED a foreign "
                                    f"SVID:\n{r.stdout}{r.stderr}")
                self.assertRegex(r.stdout + r.stderr,
                                 r"unable to get (local )?issuer certificate|"
                                 r"certificate signature failure|unable to verify the first")

    def assert_sigil_accepts(self, ca_dir: Path, svid: SvidFiles) -> None:
        for bundle in (ca_dir / "bundle.pem", ca_dir / "bundle.jwks"):
            with self.subTest(sigil_verify_bundle=bundle.name):
                r = self.sigil.verify(bundle, svid.chain, check=False)
                self.assertEqual(r.returncode, 0, f"sigil pki verify rejected:\n{r.stderr}")
                self.assertEqual(r.stdout.strip(), svid.spiffe_id)

    def assert_sigil_rejects(self, ca_dir: Path, svid: SvidFiles,
                             trust_domain: str = TRUST_DOMAIN) -> None:
        for bundle in (ca_dir / "bundle.pem", ca_dir / "bundle.jwks"):
            with self.subTest(sigil_verify_bundle=bundle.name, trust_domain=trust_domain):
                r = self.sigil.verify(bundle, svid.chain, trust_domain, check=False)
                self.assertEqual(r.returncode, 1,
                                 f"sigil pki verify should exit 1:\n{r.stdout}{r.stderr}")
                self.assertNotIn(svid.spiffe_id, r.stdout)
                self.assertTrue(r.stderr.strip(), "rejection must explain itself on stderr")


class SelfSignedCaTest(VerifyAssertions):
    def test_default_key_type_accepted_for_client_and_server(self):
        ca = self.new_ca()
        self.assertEqual(len(helpers.load_certs(ca / "ca-chain.pem")), 1,
                         "a self-signed CA's ca-chain.pem holds exactly its own certificate")
        svid = self.new_svid(ca, WORKLOAD_ID, "web", dns=["localhost"])
        self.assertEqual(svid.n_certs, 1, "SVID of a self-signed CA must not include the root")
        self.assert_openssl_accepts(ca / "bundle.pem", svid)
        self.assert_sigil_accepts(ca, svid)

    def test_key_types(self):
        for key_type in ("ec-p256", "ec-p384", "rsa-2048"):
            with self.subTest(key_type=key_type):
                ca = self.new_ca(f"ca-{key_type}", key_type=key_type)
                svid = self.new_svid(ca, f"{WORKLOAD_ID}/{key_type}", f"svid-{key_type}",
                                     key_type=key_type)
                self.assert_openssl_accepts(ca / "bundle.pem", svid)
                self.assert_sigil_accepts(ca, svid)

    def test_leaf_key_type_differs_from_ca_key_type(self):
        ca = self.new_ca("ca-p256", key_type="ec-p256")
        rsa_ca = self.new_ca("ca-rsa", key_type="rsa-2048")
        for ca_dir, key_type in ((ca, "rsa-2048"), (ca, "ec-p384"), (ca, "ed25519"),
                                 (rsa_ca, "ec-p256")):
            with self.subTest(ca=ca_dir.name, leaf_key_type=key_type):
                svid = self.new_svid(ca_dir, f"{WORKLOAD_ID}/{key_type}",
                                     f"{ca_dir.name}-{key_type}", key_type=key_type)
                self.assert_openssl_accepts(ca_dir / "bundle.pem", svid)

    def test_svid_of_other_ca_in_same_trust_domain_rejected(self):
        ca = self.new_ca("ca")
        other = self.new_ca("other")
        good = self.new_svid(ca, WORKLOAD_ID, "good")
        foreign = self.new_svid(other, WORKLOAD_ID, "foreign")
        # Positive control first, so the rejection below cannot be a broken setup.
        self.assert_openssl_accepts(ca / "bundle.pem", good)
        self.assert_openssl_rejects(ca / "bundle.pem", foreign)
        self.assert_sigil_rejects(ca, foreign)
        # ...and symmetrically the other CA's bundle does not trust ours.
        self.assert_openssl_rejects(other / "bundle.pem", good)

    def test_sigil_verify_requires_bundle_of_the_ids_trust_domain(self):
        ca = self.new_ca()
        svid = self.new_svid(ca, WORKLOAD_ID, "web")
        # The same roots presented as the bundle of another trust domain do not vouch for an
        # ID of example.org (bundles are per trust domain; spiffe-reference.md section 2).
        self.assert_sigil_rejects(ca, svid, trust_domain="other.example")


class UpstreamCaTest(VerifyAssertions):
    def _check_upstream(self, *, with_intermediate: bool, upstream_alg: str = "ec-p256",
                        sigil_key_type: str | None = None, leaf_key_type: str | None = None,
                        prefix: str = ""):
        up = helpers.make_upstream_ca(self.path(prefix + "upstream"),
                                      with_intermediate=with_intermediate, key_alg=upstream_alg)
        # Sanity of the fixture itself: openssl accepts its own upstream chain strictly.
        if up.intermediate:
            run(["openssl", "verify", "-x509_strict", "-CAfile", up.root, up.intermediate])

        ca = self.path(prefix + "ca")
        ca.mkdir()
        self.sigil.ca_init(ca, key_type=sigil_key_type, upstream_cert=up.chain,
                           upstream_key=up.key)
        up_root = helpers.load_certs(up.root)[0]
        bundle = helpers.load_certs(ca / "bundle.pem")
        self.assertEqual(bundle, [up_root], "bundle.pem must hold exactly the upstream root")

        chain = helpers.load_certs(ca / "ca-chain.pem")
        expected_tail = helpers.load_certs(up.chain)
        self.assertEqual(len(chain), 1 + len(expected_tail),
                         "ca-chain.pem = Sigil signing cert + the whole upstream chain")
        self.assertEqual(chain[1:], expected_tail)

        # The Sigil intermediate itself is a valid CA under the upstream root.
        sigil_inter = self.path(prefix + "sigil-inter.pem")
        sigil_inter.write_bytes(helpers.split_pem_certs((ca / "ca-chain.pem").read_bytes())[0])
        argv = ["openssl", "verify", "-x509_strict", "-CAfile", up.root]
        if up.intermediate:
            argv += ["-untrusted", up.intermediate]
        run(argv + [sigil_inter])

        svid = self.new_svid(ca, WORKLOAD_ID, prefix + "web", dns=["localhost"],
                             key_type=leaf_key_type)
        self.assertEqual(svid.n_certs, 3 if with_intermediate else 2,
                         "SVID chain = leaf + Sigil intermediate (+ upstream intermediate), "
                         "never the root")
        presented = helpers.load_certs(svid.chain)
        self.assertNotIn(up_root, presented, "the upstream root must not be in the SVID chain")
        self.assertEqual(presented[1:], chain[:-1])

        self.assert_openssl_accepts(up.root, svid)
        self.assert_openssl_accepts(ca / "bundle.pem", svid)
        self.assert_sigil_accepts(ca, svid)
        # Without the intermediates the leaf cannot chain to the root: proves -untrusted is
        # really what makes the positive result above pass.
        self.assert_openssl_rejects(up.root, svid, untrusted=None)
        return up, ca, svid

    def test_upstream_root_only(self):
        self._check_upstream(with_intermediate=False)

    def test_upstream_root_and_intermediate(self):
        self._check_upstream(with_intermediate=True)

    def test_upstream_key_types(self):
        for upstream_alg, sigil_kt, leaf_kt in (("rsa-2048", "ec-p256", "ec-p256"),
                                                 ("ec-p384", "ec-p384", "rsa-2048"),
                                                 ("ec-p256", "rsa-2048", "ec-p384")):
            with self.subTest(upstream=upstream_alg, sigil=sigil_kt, leaf=leaf_kt):
                self._check_upstream(with_intermediate=True, upstream_alg=upstream_alg,
                                     sigil_key_type=sigil_kt, leaf_key_type=leaf_kt,
                                     prefix=f"{upstream_alg}-{sigil_kt}-{leaf_kt}/")

    def test_svid_of_other_ca_in_same_trust_domain_rejected(self):
        up, ca, svid = self._check_upstream(with_intermediate=True)
        # A self-signed Sigil CA of the same trust domain is not trusted by the upstream root.
        rogue = self.new_ca("rogue")
        foreign = self.new_svid(rogue, WORKLOAD_ID, "foreign")
        self.assert_openssl_rejects(up.root, foreign)
        self.assert_sigil_rejects(ca, foreign)
        # Nor is a Sigil CA chained to a different upstream root.
        other_up = helpers.make_upstream_ca(self.path("other-upstream"), with_intermediate=True)
        other_ca = self.path("other-ca")
        other_ca.mkdir()
        self.sigil.ca_init(other_ca, upstream_cert=other_up.chain, upstream_key=other_up.key)
        foreign2 = self.new_svid(other_ca, WORKLOAD_ID, "foreign2")
        self.assert_openssl_accepts(other_up.root, foreign2)  # positive control
        self.assert_openssl_rejects(up.root, foreign2)
        self.assert_sigil_rejects(ca, foreign2)
        # And our SVID is rejected by the self-signed CA's bundle.
        self.assert_openssl_rejects(rogue / "bundle.pem", svid)

    def test_second_sigil_ca_under_same_upstream_is_trusted(self):
        # The trust anchor is the upstream root: a second Sigil CA minted under it (e.g. another
        # server of the same trust domain) issues SVIDs the first CA's bundle accepts.
        up, ca, _ = self._check_upstream(with_intermediate=True)
        peer_ca = self.path("peer-ca")
        peer_ca.mkdir()
        self.sigil.ca_init(peer_ca, upstream_cert=up.chain, upstream_key=up.key)
        svid = self.new_svid(peer_ca, WORKLOAD_ID, "peer")
        self.assert_openssl_accepts(ca / "bundle.pem", svid)
        self.assert_sigil_accepts(ca, svid)


if __name__ == "__main__":
    helpers.main()
