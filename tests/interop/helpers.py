"""Shared plumbing for the Sigil interop tests.

Every test here drives the real `sigil` binary (path in $SIGIL_BIN) and checks its output with
an independent peer: the openssl CLI, curl, Python's `cryptography` and PyJWT. Nothing is mocked.

Rules every test module follows:
  * hermetic: all files live in a per-test tempfile directory, servers bind 127.0.0.1 port 0;
  * bounded: every subprocess has a timeout and servers are killed in cleanups;
  * never skip: a missing tool or binary is a test ERROR, and `main()` turns any skip into a
    failing exit status, so ctest cannot go green on a machine that lacks a peer.

Run a module directly with /usr/bin/python3 (the Debian interpreter that has python3-cryptography
and python3-jwt), e.g.
  SIGIL_BIN=build/dev/apps/sigil/sigil /usr/bin/python3 tests/interop/test_openssl_verify.py
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from pathlib import Path
from typing import Iterable, Sequence

DEFAULT_TIMEOUT = 20.0  # seconds, for any one-shot subprocess
TRUST_DOMAIN = "example.org"

PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.DOTALL
)


# --------------------------------------------------------------------------------------------
# Environment checks (fail, never skip)
# --------------------------------------------------------------------------------------------

def sigil_bin() -> str:
    path = os.environ.get("SIGIL_BIN")
    if not path:
        raise AssertionError(
            "SIGIL_BIN is not set: point it at the built sigil binary "
            "(e.g. build/dev/apps/sigil/sigil); interop tests never skip"
        )
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise AssertionError(f"SIGIL_BIN={path!r} is not an executable file")
    return os.path.abspath(path)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"required interop peer {name!r} is not on PATH (install it; "
                             "interop tests never skip)")
    return path


# --------------------------------------------------------------------------------------------
# Subprocesses
# --------------------------------------------------------------------------------------------

class CommandError(AssertionError):
    def __init__(self, cmd: Sequence[str], proc: subprocess.CompletedProcess):
        self.cmd = list(cmd)
        self.proc = proc
        super().__init__(
            f"command failed (exit {proc.returncode}): {format_cmd(cmd)}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )


def format_cmd(cmd: Sequence[str]) -> str:
    return " ".join(str(c) for c in cmd)


def run(cmd: Sequence[object], *, check: bool = True, timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None, cwd: str | os.PathLike | None = None,
        ) -> subprocess.CompletedProcess:
    """Runs cmd to completion with a timeout; text mode. check=True raises CommandError."""
    argv = [str(c) for c in cmd]
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout, cwd=cwd,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"command timed out after {timeout}s: {format_cmd(argv)}\n"
                             f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}") from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc)
    return proc


class Sigil:
    """Thin wrapper over `sigil pki ...`; every method returns the CompletedProcess."""

    def __init__(self) -> None:
        self.bin = sigil_bin()

    def __call__(self, *args: object, check: bool = True,
                 timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
        return run([self.bin, "pki", *args], check=check, timeout=timeout)

    def keygen(self, out: Path, key_type: str | None = None) -> Path:
        args: list[object] = ["keygen", "--out", out]
        if key_type:
            args += ["--key-type", key_type]
        self(*args)
        return out

    def csr(self, key: Path, out: Path) -> Path:
        self("csr", "--key", key, "--out", out)
        return out

    def ca_init(self, ca_dir: Path, trust_domain: str = TRUST_DOMAIN, *,
                key_type: str | None = None, ttl: str | None = None,
                upstream_cert: Path | None = None, upstream_key: Path | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
        args: list[object] = ["ca-init", "--trust-domain", trust_domain, "--dir", ca_dir]
        if key_type:
            args += ["--key-type", key_type]
        if ttl:
            args += ["--ttl", ttl]
        if upstream_cert:
            args += ["--upstream-cert", upstream_cert]
        if upstream_key:
            args += ["--upstream-key", upstream_key]
        return self(*args, check=check)

    def issue(self, ca_dir: Path, csr: Path, spiffe_id: str, out: Path, *,
              dns: Iterable[str] = (), ttl: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
        args: list[object] = ["issue", "--dir", ca_dir, "--csr", csr, "--spiffe-id", spiffe_id]
        for name in dns:
            args += ["--dns", name]
        if ttl:
            args += ["--ttl", ttl]
        args += ["--out", out]
        return self(*args, check=check)

    def verify(self, bundle: Path, svid: Path, trust_domain: str = TRUST_DOMAIN, *,
               check: bool = True) -> subprocess.CompletedProcess:
        return self("verify", "--trust-domain", trust_domain, "--bundle", bundle,
                    "--svid", svid, check=check)

    def jwt_mint(self, ca_dir: Path, spiffe_id: str, audiences: Sequence[str],
                 ttl: str | None = None) -> str:
        args: list[object] = ["jwt-mint", "--dir", ca_dir, "--spiffe-id", spiffe_id]
        for a in audiences:
            args += ["--audience", a]
        if ttl:
            args += ["--ttl", ttl]
        return self(*args).stdout.strip()

    def jwt_validate(self, bundle: Path, audiences: Sequence[str], token: str,
                     trust_domain: str = TRUST_DOMAIN, *, check: bool = False,
                     via_file: Path | None = None) -> subprocess.CompletedProcess:
        args: list[object] = ["jwt-validate", "--trust-domain", trust_domain, "--bundle", bundle]
        for a in audiences:
            args += ["--audience", a]
        if via_file is not None:
            via_file.write_text(token)
            args += ["--token-file", via_file]
        else:
            args += ["--token", token]
        return self(*args, check=check)

    def bundle_add_jwt_key(self, bundle_in: Path, kid: str, public_key: Path, out: Path,
                           trust_domain: str = TRUST_DOMAIN) -> Path:
        self("bundle-add-jwt-key", "--trust-domain", trust_domain, "--bundle", bundle_in,
             "--kid", kid, "--public-key", public_key, "--out", out)
        return out


# --------------------------------------------------------------------------------------------
# Long-running peers (openssl s_server / s_client)
# --------------------------------------------------------------------------------------------

class Peer:
    """A subprocess with stdin kept open and stdout+stderr collected by a reader thread.

    Always used via `with` (or registered with addCleanup(peer.kill)) so it is killed even when
    an assertion fails mid-test.
    """

    def __init__(self, argv: Sequence[object], name: str) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, bufsize=0)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
            except OSError:
                chunk = b""
            with self._changed:
                if not chunk:
                    self._eof = True
                    self._changed.notify_all()
                    return
                self._buf += chunk
                self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._lock:
            return self._buf.decode("utf-8", "replace")

    def wait_for(self, pattern: str | re.Pattern, timeout: float = 10.0) -> re.Match:
        """Waits until the collected output matches `pattern`; AssertionError on timeout/EOF."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                m = rx.search(self._buf.decode("utf-8", "replace"))
                if m:
                    return m
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._changed.wait(min(remaining, 0.2))
        raise AssertionError(
            f"{self.name}: {'exited' if self._eof else 'timed out'} before output matched "
            f"{rx.pattern!r}\ncommand: {format_cmd(self.argv)}\n--- output ---\n{self.output}")

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout}s\n"
                                 f"--- output ---\n{self.output}") from None
        self._reader.join(timeout=5)
        return rc

    def send(self, text: str, *, may_have_exited: bool = False) -> None:
        """Writes to the peer's stdin. may_have_exited: a peer that already quit is fine."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            if not may_have_exited:
                raise AssertionError(f"{self.name} exited before we could send {text!r}\n"
                                     f"--- output ---\n{self.output}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        # The pipe reaches EOF once the process is gone; join before closing so the reader
        # never reads a closed (possibly reused) descriptor.
        self._reader.join(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def wait_ready_file(peer: "Peer", ready: Path, what: str, timeout: float = 30) -> dict:
    """Waits for a daemon's --ready-file (KEY=VALUE lines) and returns it as a dict; fails with
    the daemon's output if it exits or the timeout passes first."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if peer.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what} did not become ready\n{peer.output}")
        time.sleep(0.05)
    return dict(line.split("=", 1) for line in ready.read_text().split())


def start_s_server(cert: Path, key: Path, ca_file: Path, *, chain: Path | None = None,
                   extra: Sequence[object] = (), name: str = "s_server") -> tuple[Peer, int]:
    """Starts `openssl s_server` on 127.0.0.1:0 and returns (peer, bound port)."""
    argv: list[object] = [require_tool("openssl"), "s_server", "-accept", "127.0.0.1:0",
                          "-cert", cert, "-key", key, "-CAfile", ca_file]
    if chain is not None:
        argv += ["-cert_chain", chain]
    argv += list(extra)
    peer = Peer(argv, name)
    try:
        m = peer.wait_for(r"ACCEPT 127\.0\.0\.1:(\d+)", timeout=10)
    except BaseException:
        peer.kill()
        raise
    return peer, int(m.group(1))


# --------------------------------------------------------------------------------------------
# PEM / certificate helpers
# --------------------------------------------------------------------------------------------

def split_pem_certs(data: bytes | str) -> list[bytes]:
    if isinstance(data, str):
        data = data.encode()
    return [m.group(0) if m.group(0).endswith(b"\n") else m.group(0) + b"\n"
            for m in PEM_CERT_RE.finditer(data)]


def load_certs(path: Path) -> list:
    from cryptography import x509
    return [x509.load_pem_x509_certificate(p) for p in split_pem_certs(path.read_bytes())]


def write_certs(path: Path, pems: Sequence[bytes]) -> Path:
    path.write_bytes(b"".join(pems))
    return path


def utc(dt: datetime.datetime) -> datetime.datetime:
    """cryptography 38 returns naive UTC datetimes."""
    return dt.replace(tzinfo=datetime.timezone.utc) if dt.tzinfo is None else dt


def verify_signed_by(cert, issuer) -> None:
    """Checks cert's signature with issuer's public key (cryptography 38 has no helper)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, ed448, padding, rsa
    pub = issuer.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                   cert.signature_hash_algorithm)
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        pub.verify(cert.signature, cert.tbs_certificate_bytes,
                   ec.ECDSA(cert.signature_hash_algorithm))
    elif isinstance(pub, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        pub.verify(cert.signature, cert.tbs_certificate_bytes)
    else:
        raise AssertionError(f"unexpected issuer key type {type(pub)}")


# --------------------------------------------------------------------------------------------
# Test fixtures
# --------------------------------------------------------------------------------------------

class SvidFiles:
    """An issued SVID split for tools that want leaf and intermediates separately."""

    def __init__(self, chain: Path, key: Path, spiffe_id: str) -> None:
        self.chain = chain  # leaf first, then intermediates (sigil pki issue output)
        self.key = key
        self.spiffe_id = spiffe_id
        pems = split_pem_certs(chain.read_bytes())
        if not pems:
            raise AssertionError(f"{chain} contains no PEM certificate")
        self.leaf = write_certs(chain.with_suffix(".leaf.pem"), pems[:1])
        self.intermediates = (write_certs(chain.with_suffix(".inter.pem"), pems[1:])
                              if len(pems) > 1 else None)
        self.n_certs = len(pems)


class InteropCase(unittest.TestCase):
    """Base class: checks the environment once, gives each test a private temp dir."""

    TOOLS: Sequence[str] = ("openssl",)

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sigil = Sigil()
        for tool in cls.TOOLS:
            require_tool(tool)

    def setUp(self) -> None:
        super().setUp()
        self._tmp = tempfile.TemporaryDirectory(prefix="sigil-interop-")
        self.addCleanup(self._tmp.cleanup)
        self.tmp = Path(self._tmp.name)

    def path(self, *parts: str) -> Path:
        p = self.tmp.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # --- sigil fixtures -----------------------------------------------------------------

    def new_ca(self, name: str = "ca", trust_domain: str = TRUST_DOMAIN, **kw) -> Path:
        ca_dir = self.path(name)
        ca_dir.mkdir(exist_ok=True)
        self.sigil.ca_init(ca_dir, trust_domain, **kw)
        return ca_dir

    def new_svid(self, ca_dir: Path, spiffe_id: str, name: str, *, dns: Iterable[str] = (),
                 key_type: str | None = None, ttl: str | None = None) -> SvidFiles:
        key = self.sigil.keygen(self.path(f"{name}.key"), key_type)
        csr = self.sigil.csr(key, self.path(f"{name}.csr"))
        out = self.path(f"{name}.pem")
        self.sigil.issue(ca_dir, csr, spiffe_id, out, dns=dns, ttl=ttl)
        return SvidFiles(out, key, spiffe_id)


# --------------------------------------------------------------------------------------------
# An upstream CA made with the openssl CLI only
# --------------------------------------------------------------------------------------------

_OPENSSL_CA_CONF = textwrap.dedent("""\
    [req]
    distinguished_name = dn
    prompt = no
    [dn]
    CN = unused
    [v3_root]
    basicConstraints = critical, CA:true
    keyUsage = critical, keyCertSign, cRLSign
    subjectKeyIdentifier = hash
    authorityKeyIdentifier = keyid:always
    [v3_intermediate]
    basicConstraints = critical, CA:true
    keyUsage = critical, keyCertSign, cRLSign
    subjectKeyIdentifier = hash
    authorityKeyIdentifier = keyid:always
    # Deliberately unusable upstream intermediates (ca-init must refuse them):
    [v3_intermediate_pathlen0]
    basicConstraints = critical, CA:true, pathlen:0
    keyUsage = critical, keyCertSign, cRLSign
    subjectKeyIdentifier = hash
    authorityKeyIdentifier = keyid:always
    [v3_not_ca]
    basicConstraints = critical, CA:false
    keyUsage = critical, digitalSignature
    subjectKeyIdentifier = hash
    authorityKeyIdentifier = keyid:always
    [v3_ca_without_keycertsign]
    basicConstraints = critical, CA:true
    keyUsage = critical, digitalSignature
    subjectKeyIdentifier = hash
    authorityKeyIdentifier = keyid:always
    """)


class UpstreamCa:
    """Paths of an openssl-made upstream PKI.

    chain: the signer's certificate first ... root last (what --upstream-cert takes);
    key: the signer's private key; root: the self-signed root alone.
    """

    def __init__(self, root: Path, chain: Path, key: Path, intermediate: Path | None) -> None:
        self.root = root
        self.chain = chain
        self.key = key
        self.intermediate = intermediate


def _openssl_key(out: Path, key_alg: str) -> None:
    if key_alg == "ec-p256":
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-pkeyopt", "ec_param_enc:named_curve", "-out", out])
    elif key_alg == "ec-p384":
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384",
             "-pkeyopt", "ec_param_enc:named_curve", "-out", out])
    elif key_alg == "rsa-2048":
        run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", out])
    else:
        raise ValueError(key_alg)


def make_upstream_ca(directory: Path, *, with_intermediate: bool, key_alg: str = "ec-p256",
                     days: int = 30, root_cn: str = "Upstream Root CA",
                     intermediate_profile: str = "v3_intermediate") -> UpstreamCa:
    """Creates an upstream root (and optionally an intermediate) with the openssl CLI.

    intermediate_profile names a section of _OPENSSL_CA_CONF for the intermediate's extensions.
    """
    require_tool("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "openssl.cnf"
    conf.write_text(_OPENSSL_CA_CONF)
    root_key = directory / "root.key"
    root = directory / "root.pem"
    _openssl_key(root_key, key_alg)
    run(["openssl", "req", "-new", "-x509", "-config", conf, "-key", root_key, "-sha256",
         "-days", days, "-subj", f"/O=Upstream/CN={root_cn}", "-extensions", "v3_root",
         "-set_serial", "0x" + os.urandom(16).hex(), "-out", root])
    if not with_intermediate:
        chain = directory / "chain.pem"
        chain.write_bytes(root.read_bytes())
        return UpstreamCa(root=root, chain=chain, key=root_key, intermediate=None)

    inter_key = directory / "intermediate.key"
    inter_csr = directory / "intermediate.csr"
    inter = directory / "intermediate.pem"
    _openssl_key(inter_key, key_alg)
    run(["openssl", "req", "-new", "-config", conf, "-key", inter_key,
         "-subj", "/O=Upstream/CN=Upstream Intermediate CA", "-out", inter_csr])
    run(["openssl", "x509", "-req", "-in", inter_csr, "-CA", root, "-CAkey", root_key,
         "-set_serial", "0x" + os.urandom(16).hex(), "-days", days, "-sha256",
         "-extfile", conf, "-extensions", intermediate_profile, "-out", inter])
    chain = directory / "chain.pem"
    chain.write_bytes(inter.read_bytes() + root.read_bytes())
    return UpstreamCa(root=root, chain=chain, key=inter_key, intermediate=inter)


# --------------------------------------------------------------------------------------------
# Runner: a skip is a failure
# --------------------------------------------------------------------------------------------

def main() -> None:
    prog = unittest.main(verbosity=2, exit=False)
    result = prog.result
    if result.skipped:
        print(f"FAILED: {len(result.skipped)} test(s) skipped; interop tests must not skip",
              file=sys.stderr)
        sys.exit(1)
    if result.testsRun == 0:
        print("FAILED: no tests ran", file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if result.wasSuccessful() else 1)


# --------------------------------------------------------------------------------------------
# gRPC clients in Python (agent API, Workload API)
# --------------------------------------------------------------------------------------------

GRPC_MODULES = (("grpc", "python3-grpcio"), ("cryptography", "python3-cryptography"),
                ("jwt", "python3-jwt"), ("grpc_tools.protoc", "python3-grpc-tools"))


def require_modules(pairs=GRPC_MODULES) -> dict:
    """Imports each (module, Debian package); a missing one FAILS naming the package."""
    import importlib
    mods, missing = {}, []
    for mod, pkg in pairs:
        try:
            mods[mod] = importlib.import_module(mod)
        except ImportError as e:
            missing.append(f"{mod} ({pkg}): {e}")
    if missing:
        raise AssertionError(f"{sys.executable} lacks required modules (tests never skip): "
                             + "; ".join(missing))
    return mods


def compile_proto(proto: Path, out: Path):
    """Compiles `proto` with grpc_tools.protoc (well-known types included) into `out` and
    returns its (<name>_pb2, <name>_pb2_grpc) modules."""
    import importlib
    import grpc_tools
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    r = run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}", f"-I{well_known}",
             f"--python_out={out}", f"--grpc_python_out={out}", proto], check=False, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"grpc_tools.protoc failed on {proto} (exit {r.returncode}):\n"
                             f"{r.stdout}\n{r.stderr}")
    sys.path.insert(0, str(out))
    names = (proto.stem + "_pb2", proto.stem + "_pb2_grpc")
    for name in names:
        sys.modules.pop(name, None)
    return importlib.import_module(names[0]), importlib.import_module(names[1])


def split_der_chain(blob: bytes) -> list[bytes]:
    """Concatenated DER certificates -> list of DER (each an ASN.1 SEQUENCE)."""
    out, i = [], 0
    while i < len(blob):
        if blob[i] != 0x30:
            raise AssertionError(f"DER chain byte {i}: expected a SEQUENCE, got {blob[i]:#x}")
        n = blob[i + 1]
        if n < 0x80:
            length, hdr = n, 2
        else:
            k = n & 0x7F
            length, hdr = int.from_bytes(blob[i + 2:i + 2 + k], "big"), 2 + k
        out.append(blob[i:i + hdr + length])
        i += hdr + length
    return out
