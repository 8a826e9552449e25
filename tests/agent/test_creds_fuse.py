"""Credential files (`sigil agent --creds-mount DIR`) end to end: the real server and agent.

- Bindings with `delivery: file` (raw, env, aws-credentials, svid-pem) for identities that match
  on the reading program's path (`unix:path:/usr/bin/cat`, ...), all as uid 0, so the programs
  differ only by executable.
- The bound program reads <mount>/<binding>/<file> and gets the secret; an unbound program of
  the same uid gets EACCES; both are in the audit (credential.grant, credential.denied with
  pid, exe and identity), a second read served from the agent's cache as credential.use.
- Listing shows each caller only the bindings it may read.
- The AWS credentials file parses with Debian's botocore (configloader and a Session).
- The svid-pem file holds the reader's own SVID (its SPIFFE ID) and the matching key.
- Re-applying the CredentialSource with a new secret takes effect on the next read (Sync drops
  the cached grant).
- No secret in the agent's or the server's log.
- Clean stop unmounts; a SIGKILLed agent leaves no mount (auto_unmount); a dead mount (agent
  and its fusermount3 helper killed) is detached by the next start.

Needs root (FUSE mount with allow_other) and /dev/fuse; fails otherwise, never skips.
Run: SIGIL_BIN=build/release/apps/sigil/sigil /usr/bin/python3 tests/agent/test_creds_fuse.py
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
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

TD = "example.org"
NODE = "node-creds"
PY = os.path.realpath(sys.executable)


def exe(name: str) -> str:
    return os.path.realpath(helpers.require_tool(name))


CAT, HEAD, LS, DIR = exe("cat"), exe("head"), exe("ls"), exe("dir")

STATIC_SECRET = "sk-fuse-" + secrets.token_urlsafe(24)
ROTATED_SECRET = "sk-rotated-" + secrets.token_urlsafe(24)
AWS_KEY_ID = "AKIA" + secrets.token_hex(8).upper()
AWS_SECRET = "aws-secret-" + secrets.token_urlsafe(24)
AWS_TOKEN = "aws-token-" + secrets.token_urlsafe(32)


def static_source(value: str) -> str:
    return f"""\
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: app-key}}
spec: {{type: static, value: "{value}"}}
"""


RESOURCES = f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: cat}}
spec:
  spiffeId: spiffe://{TD}/creds/cat
  selectors: ["unix:uid:0", "unix:path:{CAT}"]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: ls}}
spec:
  spiffeId: spiffe://{TD}/creds/ls
  selectors: ["unix:uid:0", "unix:path:{LS}"]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: python}}
spec:
  spiffeId: spiffe://{TD}/creds/python
  selectors: ["unix:uid:0", "unix:path:{PY}"]
---
{static_source(STATIC_SECRET)}---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: aws-prod}}
spec:
  type: aws
  accessKeyId: {AWS_KEY_ID}
  secretAccessKey: "{AWS_SECRET}"
  sessionToken: "{AWS_TOKEN}"
  region: eu-west-1
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: app-raw}}
spec:
  source: app-key
  identities: [spiffe://{TD}/creds/cat, spiffe://{TD}/creds/ls]
  delivery: {{file: {{fileName: token}}}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: app-env}}
spec:
  source: app-key
  identities: [spiffe://{TD}/creds/cat]
  delivery: {{file: {{fileName: app.env, format: env, envName: APP_TOKEN}}}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: aws-file}}
spec:
  source: aws-prod
  identities: [spiffe://{TD}/creds/python]
  delivery: {{file: {{fileName: credentials, format: aws-credentials}}}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: cat-svid}}
spec:
  identities: ["spiffe://{TD}/creds/*"]
  delivery: {{file: {{fileName: svid.pem, format: svid-pem}}}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: nobody-reads}}
spec:
  source: app-key
  identities: [spiffe://{TD}/creds/someone-else]
  delivery: {{file: {{fileName: token}}}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: header-only}}
spec:
  source: app-key
  service: api
  identities: ["spiffe://{TD}/creds/*"]
  delivery: {{header: {{name: Authorization, template: "Bearer {{{{secret}}}}"}}}}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: api}}
spec: {{mode: inject, addresses: ["api.example.test:80"], tls: {{port: 443}}}}
"""

BOTOCORE_CHECK = r"""
import json, os, sys
import botocore.configloader
import botocore.session
path = sys.argv[1]
raw = botocore.configloader.raw_config_parse(path)
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = path
os.environ["AWS_CONFIG_FILE"] = os.devnull
for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(k, None)
creds = botocore.session.Session().get_credentials()
print(json.dumps({"raw": raw, "method": creds.method, "access_key": creds.access_key,
                  "secret_key": creds.secret_key, "token": creds.token}))
"""


class CredsFuseTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._td = tempfile.TemporaryDirectory(prefix="sigil-creds-test-")
        cls.tmp = Path(cls._td.name)
        cls.peers: list[Peer] = []
        cls.mount = cls.tmp / "creds"
        try:
            if os.geteuid() != 0:
                raise AssertionError("test_creds_fuse needs root (FUSE mount with allow_other)")
            if not os.path.exists("/dev/fuse"):
                raise AssertionError("/dev/fuse is missing (modprobe fuse)")
            cls.mods = helpers.require_modules((("cryptography", "python3-cryptography"),
                                                ("botocore", "python3-botocore")))
            cls.sigil = helpers.sigil_bin()
            cls.server_data = cls.tmp / "server"
            cls._start_server()
            cls.cli("apply", "-f", "-", input=RESOURCES)
            token = cls.cli("token", "create", "--node", NODE).stdout
            m = re.search(r"SJT1\.[^\s]+", token)
            assert m, token
            cls.token_file = cls.tmp / "token"
            cls.token_file.write_text(m.group(0) + "\n")
            os.chmod(cls.token_file, 0o600)
            cls.agent_data = cls.tmp / "agent"
            cls.agent = cls._start_agent(join=True)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for p in reversed(cls.peers):
            p.kill()
        # A killed agent leaves a dead mount behind: detach it before removing the directory.
        for _ in range(4):
            if subprocess.run(["umount", "-l", str(cls.mount)], capture_output=True).returncode:
                break
        cls._td.cleanup()

    @classmethod
    def cli(cls, *args, input=None, check=True):
        return run([cls.sigil, *args, "--server", cls.admin_url, "--credentials",
                    cls.server_data / "admin"], input=input, check=check)

    @classmethod
    def _start_server(cls) -> None:
        ready = cls.tmp / "server.ready"
        peer = Peer([cls.sigil, "server", "--data-dir", cls.server_data, "--trust-domain", TD,
                     "--admin-listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0",
                     "--metrics-listen", "off", "--ready-file", ready], "sigil-server")
        cls.peers.append(peer)
        addr = helpers.wait_ready_file(peer, ready, "server", timeout=20)
        cls.admin_url = "https://" + addr["admin"]
        cls.agent_api = addr["agent"]
        cls.server = peer

    @classmethod
    def _start_agent(cls, join: bool) -> Peer:
        ready = cls.tmp / "agent.ready"
        if ready.exists():
            ready.unlink()
        argv = [cls.sigil, "agent", "--server", cls.agent_api, "--data-dir", cls.agent_data,
                "--socket", cls.tmp / "agent.sock", "--node-name", NODE,
                "--health-listen", "127.0.0.1:0", "--creds-mount", cls.mount,
                "--ready-file", ready]
        if join:
            argv += ["--join-token-file", cls.token_file]
        peer = Peer(argv, "sigil-agent")
        cls.peers.append(peer)
        addr = helpers.wait_ready_file(peer, ready, "agent", timeout=20)
        if addr.get("creds_mount") != str(cls.mount):
            raise AssertionError(f"agent ready file lacks creds_mount={cls.mount}: {addr}\n"
                                 f"{peer.output}")
        cls.wait_listing(peer)
        return peer

    @classmethod
    def wait_listing(cls, peer: Peer) -> None:
        """Waits until the agent synced the bindings (ls, bound to app-raw, sees it)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = subprocess.run([LS, "-1", str(cls.mount)], capture_output=True, text=True,
                               timeout=20)
            if r.returncode == 0 and "app-raw" in r.stdout.split():
                return
            time.sleep(0.2)
        raise AssertionError(f"the credential mount never listed app-raw\n{peer.output}")

    # --- helpers ---------------------------------------------------------------------------

    def read_with(self, program: str, path: Path, *args: str) -> tuple[int, str, str, int]:
        """Runs `program [args] path`; returns (exit code, stdout, stderr, pid)."""
        p = subprocess.Popen([program, *args, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=30)
        return p.returncode, out, err, p.pid

    def audit(self, **filters) -> list[dict]:
        args = ["audit", "--json"]
        for k, v in filters.items():
            args += [f"--{k}", str(v)]
        return json.loads(self.cli(*args).stdout)

    def wait_audit(self, what: str, timeout: float = 15, **filters) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            records = self.audit(**filters)
            if records or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        self.assertTrue(records, f"no audit record for {what} ({filters})\n{self.agent.output}")
        return records

    def assert_no_secret_in_logs(self) -> None:
        for secret in (STATIC_SECRET, ROTATED_SECRET, AWS_SECRET, AWS_TOKEN):
            self.assertNotIn(secret, self.agent.output, "a credential secret in the agent's log")
            self.assertNotIn(secret, self.server.output, "a credential secret in the server's log")
            self.assertNotIn(secret, self.cli("audit").stdout, "a credential secret in the audit")

    # --- tests -----------------------------------------------------------------------------

    def test_01_bound_reads_unbound_gets_eacces_both_audited(self):
        path = self.mount / "app-raw" / "token"
        rc, out, err, cat_pid = self.read_with(CAT, path)
        self.assertEqual(rc, 0, f"cat {path}: {err}\n{self.agent.output}")
        self.assertEqual(out, STATIC_SECRET)

        rc, out, err, head_pid = self.read_with(HEAD, path, "-c", "4096")
        self.assertNotEqual(rc, 0, "head (no identity) read the credential")
        self.assertIn("Permission denied", err)
        self.assertEqual(out, "")
        # The same uid from Python: it holds creds/python, which app-raw does not allow.
        with self.assertRaises(PermissionError) as ctx:
            path.read_bytes()
        self.assertEqual(ctx.exception.errno, errno.EACCES)

        grants = self.wait_audit("cat's grant", type="credential.grant", pid=cat_pid)
        g = grants[-1]
        self.assertEqual(g["identity"], f"spiffe://{TD}/creds/cat")
        self.assertEqual(g["exe"], CAT)
        self.assertEqual(g["node"], NODE)
        self.assertEqual(g["details"]["binding"], "app-raw")

        denied = self.wait_audit("head's refusal", type="credential.denied", pid=head_pid)
        self.assertEqual(denied[-1]["exe"], HEAD)
        self.assertEqual(denied[-1]["details"]["binding"], "app-raw")
        denied_py = self.wait_audit("python's refusal", type="credential.denied", pid=os.getpid())
        self.assertEqual(denied_py[-1]["identity"], f"spiffe://{TD}/creds/python")
        self.assertEqual(denied_py[-1]["exe"], PY)

        # A second read within the grant's lifetime comes from the agent's cache: the agent
        # reports that use (credential.use) with the new reader's pid.
        rc, out, err, cat2 = self.read_with(CAT, path)
        self.assertEqual((rc, out), (0, STATIC_SECRET), err)
        use = self.wait_audit("the cached use", type="credential.use", pid=cat2)
        self.assertEqual(use[-1]["identity"], f"spiffe://{TD}/creds/cat")
        self.assertEqual(use[-1]["exe"], CAT)
        self.assertEqual(use[-1]["details"]["binding"], "app-raw")
        self.assertFalse(self.audit(type="credential.grant", pid=cat2),
                         "the cached read went to the server")
        self.assertIn("ok", self.cli("audit", "verify").stdout)

    def test_02_env_format_and_stat(self):
        path = self.mount / "app-env" / "app.env"
        rc, out, err, _ = self.read_with(CAT, path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, f"APP_TOKEN={STATIC_SECRET}\n")
        st = os.stat(path)  # by path: no content, no fetch
        self.assertEqual(st.st_mode & 0o777, 0o400)
        self.assertEqual(st.st_size, 0)
        self.assertEqual(st.st_uid, os.getuid())

    def test_03_listing_shows_only_readable_bindings(self):
        r = subprocess.run([LS, "-1", str(self.mount)], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(r.stdout.split()), ["app-raw", "cat-svid"])
        r = subprocess.run([LS, "-1", str(self.mount / "app-raw")], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.stdout.split(), ["token"])
        r = subprocess.run([LS, "-1", str(self.mount / "app-env")], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), [], "ls may not read app-env but its file is listed")
        # `dir` (same uid, no identity) sees nothing; Python sees its own bindings.
        r = subprocess.run([DIR, "-1", str(self.mount)], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), [])
        self.assertEqual(sorted(os.listdir(self.mount)), ["aws-file", "cat-svid"])
        # Header bindings and bindings nobody here may use never appear; unknown names are ENOENT.
        self.assertFalse((self.mount / "header-only").exists())
        self.assertTrue((self.mount / "nobody-reads").is_dir())  # known binding: stat works
        with self.assertRaises(PermissionError):
            (self.mount / "nobody-reads" / "token").read_bytes()
        self.assertFalse((self.mount / "no-such-binding").exists())
        self.assertFalse((self.mount / "app-raw" / "other-file").exists())

    def test_04_aws_credentials_parse_with_botocore(self):
        path = self.mount / "aws-file" / "credentials"
        # The reader is Python (identity creds/python), as a child process.
        r = subprocess.run([PY, "-c", BOTOCORE_CHECK, str(path)], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, f"{r.stderr}\n{self.agent.output}")
        got = json.loads(r.stdout)
        self.assertEqual(got["raw"], {"default": {"aws_access_key_id": AWS_KEY_ID,
                                                  "aws_secret_access_key": AWS_SECRET,
                                                  "aws_session_token": AWS_TOKEN}})
        self.assertEqual(got["method"], "shared-credentials-file")
        self.assertEqual((got["access_key"], got["secret_key"], got["token"]),
                         (AWS_KEY_ID, AWS_SECRET, AWS_TOKEN))
        rc, _, err, _ = self.read_with(CAT, path)
        self.assertNotEqual(rc, 0, "cat read the AWS credentials bound to python only")
        self.assertIn("Permission denied", err)

    def test_05_svid_pem_is_the_readers_own(self):
        x509 = self.mods["cryptography"]
        from cryptography import x509 as cx509
        from cryptography.hazmat.primitives import serialization
        rc, out, err, cat_pid = self.read_with(CAT, self.mount / "cat-svid" / "svid.pem")
        self.assertEqual(rc, 0, f"{err}\n{self.agent.output}")
        self.assertIn("-----BEGIN PRIVATE KEY-----", out)
        certs = helpers.split_pem_certs(out)
        self.assertGreaterEqual(len(certs), 1)
        leaf = cx509.load_pem_x509_certificate(certs[0])
        san = leaf.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(cx509.UniformResourceIdentifier),
                         [f"spiffe://{TD}/creds/cat"])
        key_pem = out[out.index("-----BEGIN PRIVATE KEY-----"):].encode()
        key = serialization.load_pem_private_key(key_pem, password=None)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        self.assertEqual(key.public_key().public_bytes(serialization.Encoding.DER, spki),
                         leaf.public_key().public_bytes(serialization.Encoding.DER, spki))
        # Python reads its own (another identity, another key).
        mine = (self.mount / "cat-svid" / "svid.pem").read_text()
        leaf2 = cx509.load_pem_x509_certificate(helpers.split_pem_certs(mine)[0])
        san2 = leaf2.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
        self.assertEqual(san2.get_values_for_type(cx509.UniformResourceIdentifier),
                         [f"spiffe://{TD}/creds/python"])
        use = self.wait_audit("the svid-pem read", type="credential.use", pid=cat_pid)
        self.assertEqual(use[-1]["details"]["binding"], "cat-svid")
        del x509
        # head holds no identity: refused, and the server recorded it.
        rc, _, _, head_pid = self.read_with(HEAD, self.mount / "cat-svid" / "svid.pem")
        self.assertNotEqual(rc, 0)
        self.wait_audit("head's svid-pem refusal", type="credential.denied", pid=head_pid)

    def test_06_descriptor_passed_to_another_process_is_refused(self):
        # Python (bound to aws-file) opens the file and hands the descriptor to `head` as its
        # stdin: head's reads are refused, Python's own reads of the same descriptor work.
        with open(self.mount / "aws-file" / "credentials", "rb") as f:
            p = subprocess.Popen([HEAD, "-c", "4096"], stdin=f, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            out, err = p.communicate(timeout=30)
            self.assertNotEqual(p.returncode, 0, "head read through Python's descriptor")
            self.assertEqual(out, "")
            self.assertIn("Permission denied", err)
            f.seek(0)
            self.assertIn(AWS_SECRET.encode(), f.read())
        refused = self.wait_audit("the passed-descriptor refusal", type="credential.refused",
                                  pid=p.pid)
        self.assertEqual(refused[-1]["exe"], HEAD)
        self.assertEqual(refused[-1]["details"]["binding"], "aws-file")
        self.assertIn("opened", refused[-1]["details"]["reason"])

    def test_07_rotation_takes_effect_on_next_read(self):
        # `sigil credential rotate` commits a new CredentialSource version; the Sync delta names
        # the source and the agent drops the grant it held (cached for minutes otherwise).
        path = self.mount / "app-raw" / "token"
        rc, out, _, _ = self.read_with(CAT, path)
        self.assertEqual((rc, out), (0, STATIC_SECRET))
        self.cli("credential", "rotate", "app-key", "--from-stdin", input=ROTATED_SECRET)
        deadline = time.monotonic() + 10
        while True:
            rc, out, err, _ = self.read_with(CAT, path)
            if out == ROTATED_SECRET or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual((rc, out), (0, ROTATED_SECRET),
                         f"the rotated secret was not served within 10 s\n{self.agent.output}")
        # Re-applying the source with a secret is a change too (back to the first secret).
        self.cli("apply", "-f", "-", input=static_source(STATIC_SECRET))
        deadline = time.monotonic() + 10
        while True:
            rc, out, err, _ = self.read_with(CAT, path)
            if out == STATIC_SECRET or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual((rc, out), (0, STATIC_SECRET), "re-applied secret not served")

    def test_08_no_secret_in_logs(self):
        self.assert_no_secret_in_logs()

    def mounted(self) -> bool:
        return f" {self.mount} " in Path("/proc/self/mountinfo").read_text()

    def fusermount_helpers(self) -> list[int]:
        """The fusermount3 processes the agent started to auto-unmount our mount."""
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"fusermount3") and str(self.mount).encode() in argv:
                pids.append(int(d.name))
        return pids

    def test_97_killed_agent_leaves_no_mount(self):
        # auto_unmount: fusermount3 unmounts when the agent's end of its socket closes.
        self.assertTrue(self.mounted())
        self.agent.proc.send_signal(signal.SIGKILL)
        self.agent.wait_exit(15)
        deadline = time.monotonic() + 10
        while self.mounted() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(self.mounted(), "a SIGKILLed agent left its credential mount behind")
        type(self).agent = self._start_agent(join=False)
        rc, out, err, _ = self.read_with(CAT, self.mount / "app-raw" / "token")
        self.assertEqual((rc, out), (0, STATIC_SECRET), err)

    def test_98_dead_mount_is_detached_at_start(self):
        # The agent and its fusermount3 helper both killed (e.g. the whole cgroup): the mount
        # stays, dead (ENOTCONN); the next agent detaches it and mounts afresh.
        helpers_ = self.fusermount_helpers()
        self.assertTrue(helpers_, "no fusermount3 auto-unmount helper for our mount")
        for pid in helpers_:
            os.kill(pid, signal.SIGKILL)
        self.agent.proc.send_signal(signal.SIGKILL)
        self.agent.wait_exit(15)
        with self.assertRaises(OSError) as ctx:
            os.stat(self.mount / "app-raw")
        self.assertEqual(ctx.exception.errno, errno.ENOTCONN)
        type(self).agent = self._start_agent(join=False)
        self.assertIn("creds.mount.stale", self.agent.output)
        rc, out, err, _ = self.read_with(CAT, self.mount / "app-raw" / "token")
        self.assertEqual((rc, out), (0, STATIC_SECRET), err)

    def test_99_clean_stop_unmounts(self):
        self.agent.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.agent.wait_exit(20), 0, self.agent.output)
        mounts = Path("/proc/self/mountinfo").read_text()
        self.assertNotIn(f" {self.mount} ", mounts, "the credential mount survived agent stop")
        deadline = time.monotonic() + 10
        while self.fusermount_helpers() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(self.fusermount_helpers(), "the fusermount3 helper outlived the agent")
        self.assertIn("creds.unmount", self.agent.output)
        self.assert_no_secret_in_logs()


if __name__ == "__main__":
    helpers.main()
