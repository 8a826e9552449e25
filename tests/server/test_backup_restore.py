"""Backup and restore of the store (issue 7), for the embedded SQLite store and PostgreSQL.

The procedure of docs/operations.md ("Backup and restore"), end to end with the real binaries:

1. A server with state: resources applied with `sigil apply` (a WorkloadIdentity, a static
   CredentialSource with a secret, a Service and a CredentialBinding), a joined agent serving an
   X.509-SVID over the Workload API (Python grpcio client), audit records.
2. The backup is taken while the server runs and a writer keeps applying resources:
   `sigil server backup` (SQLite's online backup API) or `pg_dump --format=custom`.
3. After the backup: another WorkloadIdentity, a join token, a binding revocation. Then the
   server stops.
4. Negative cases: `sigil server restore` and `sigil server` with a wrong or missing KEK fail
   with an error naming the KEK file and both key ids, and leave nothing behind.
5. Restore into a NEW data directory and a new file / database (`sigil server restore --from`,
   or `pg_restore` into a fresh database and `sigil server restore --store`), with a copy of the
   KEK; a new server on it.
6. Checks: same CA fingerprint and bundle; the resources from before the backup (and only a
   prefix of the writer's, i.e. one consistent snapshot); the credential secret opens (a gRPC
   FetchCredential with the agent's own node SVID returns it); `sigil audit verify` passes and
   the chain continues from the backup's head with a `store.restore` record; the revision moved
   forward by the bump; what the backup did not have is gone (the later identity, token and
   revocation). The agent, kept running through the restore behind a TCP relay, reconnects
   with its stored node credential, takes a fresh snapshot (the later identity's SVID is no
   longer served) and serves SVIDs; restarted without a token, it does the same.

Run: SIGIL_BIN=build/release/apps/sigil/sigil /usr/bin/python3 tests/server/test_backup_restore.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "interop"))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402
from pg_cluster import PgCluster  # noqa: E402

TD = "example.org"
NODE = "node-bk"
MD = (("workload.spiffe.io", "true"),)
TLS_NAME = "localhost"
BUMP = 1_000_000_000  # `sigil server restore`'s default
KEEP_ID = f"spiffe://{TD}/test/keep"
LATER_ID = f"spiffe://{TD}/test/later"
SECRET = "sk-backup-e2e-" + os.urandom(6).hex()
KEY_ID_RE = r"[0-9a-f]{8}"

RESOURCES = f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: keep}}
spec:
  spiffeId: {KEEP_ID}
  selectors: ["unix:uid:0"]
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: backup-key}}
spec: {{type: static, value: {SECRET}}}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: backup-api}}
spec:
  mode: inject
  addresses: ["api.backup.example:80"]
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: backup}}
spec:
  source: backup-key
  service: backup-api
  identities: ["spiffe://{TD}/test/*"]
  delivery:
    header: {{name: Authorization, template: "Bearer {{{{secret}}}}"}}
"""

LATER = f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: later}}
spec:
  spiffeId: {LATER_ID}
  selectors: ["unix:uid:0"]
"""


def churn_doc(i: int) -> str:
    """A resource per write of the background writer; uid 12345 so no SVID changes."""
    return (f"apiVersion: sigil.dev/v1alpha1\nkind: WorkloadIdentity\n"
            f"metadata: {{name: churn-{i:04d}}}\nspec:\n  spiffeId: spiffe://{TD}/churn/{i}\n"
            f"  selectors: [\"unix:uid:12345\"]\n")


class Relay:
    """TCP relay on 127.0.0.1 to a target that can change: the agent keeps one --server address
    while the server behind it is replaced by the restored one."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def retarget(self, target: str) -> None:
        with self.lock:
            self.target = target

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                target = self.target
            host, port = target.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass


class BackupRestoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._td = tempfile.TemporaryDirectory(prefix="sigil-backup-test-")
        cls.root = Path(cls._td.name)
        try:
            cls.mods = helpers.require_modules()
            cls.grpc = cls.mods["grpc"]
            cls.sigil = helpers.sigil_bin()
            cls.wl_pb, cls.wl_grpc = helpers.compile_proto(ROOT / "src/proto/workload.proto",
                                                           cls.root / "stubs-workload")
            cls.ag_pb, cls.ag_grpc = helpers.compile_proto(ROOT / "src/proto/agent.proto",
                                                           cls.root / "stubs-agent")
        except BaseException:
            cls._td.cleanup()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls._td.cleanup()

    # --- plumbing -----------------------------------------------------------------------

    def setUp(self) -> None:
        self.peers: list[Peer] = []
        self.addCleanup(self._kill_peers)

    def _kill_peers(self) -> None:
        for p in reversed(self.peers):
            p.kill()

    def peer(self, argv: list, name: str) -> Peer:
        p = Peer(argv, name)
        self.peers.append(p)
        return p

    def start_server(self, tmp: Path, data: Path, store: str | None, name: str,
                     extra: list | None = None) -> dict:
        ready = tmp / f"{name}.ready"
        if ready.exists():
            ready.unlink()
        argv = [self.sigil, "server", "--data-dir", data, "--trust-domain", TD,
                "--admin-listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0",
                "--metrics-listen", "off", "--log-format", "json", "--ready-file", ready]
        if store:
            argv += ["--store", store]
        p = self.peer(argv + list(extra or []), name)
        addr = helpers.wait_ready_file(p, ready, name, timeout=30)
        return {"peer": p, "admin": "https://" + addr["admin"], "agent": addr["agent"],
                "data": data}

    def stop(self, p: Peer) -> None:
        p.proc.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(20), 0, p.output[-3000:])

    def cli(self, server: dict, *args, input=None, check=True):
        return run([self.sigil, *args, "--server", server["admin"], "--credentials",
                    server["data"] / "admin"], input=input, check=check, timeout=30)

    def audit(self, server: dict, **filters) -> list[dict]:
        args: list = ["audit", "--json", "--limit", "10000"]
        for k, v in filters.items():
            args += [f"--{k}", v]
        records = json.loads(self.cli(server, *args).stdout)
        for r in records:
            if isinstance(r.get("details"), str):
                r["details"] = json.loads(r["details"])
        return records

    def resource_names(self, server: dict, kind: str) -> set[str]:
        items = json.loads(self.cli(server, "get", kind, "-o", "json").stdout)
        return {i["metadata"]["name"] for i in items}

    def ca_fingerprints(self, server: dict) -> list[str]:
        status = json.loads(self.cli(server, "ca", "status", "--json").stdout)
        return sorted(g["caSha256"] for g in status["generations"])

    def start_agent(self, tmp: Path, server_addr: str, token_file: Path | None,
                    name: str) -> dict:
        ready = tmp / f"{name}.ready"
        if ready.exists():
            ready.unlink()
        argv = [self.sigil, "agent", "--server", server_addr, "--data-dir", tmp / "agent",
                "--socket", tmp / "run" / "agent.sock", "--node-name", NODE,
                "--health-listen", "127.0.0.1:0", "--log-format", "json", "--ready-file", ready,
                "--creds-mount", ""]
        if token_file is not None:
            argv += ["--join-token-file", token_file]
        p = self.peer(argv, name)
        addr = helpers.wait_ready_file(p, ready, name, timeout=30)
        return {"peer": p, "health": addr["health"], "socket": tmp / "run" / "agent.sock",
                "data": tmp / "agent"}

    def health(self, agent: dict) -> dict:
        try:
            with urllib.request.urlopen(f"http://{agent['health']}/healthz", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def wait_health(self, agent: dict, what: str, pred, timeout: float = 45) -> dict:
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            try:
                last = self.health(agent)
                if pred(last):
                    return last
            except OSError as e:
                last = {"error": str(e)}
            time.sleep(0.2)
        raise AssertionError(f"agent: {what} not within {timeout} s (last /healthz {last})\n"
                             f"{agent['peer'].output[-4000:]}")

    def svids(self, agent: dict) -> dict:
        """SPIFFE ID -> leaf certificate, as the Workload API serves this process (uid 0)."""
        from cryptography import x509
        channel = self.grpc.insecure_channel(f"unix:{agent['socket']}")
        try:
            stub = self.wl_grpc.SpiffeWorkloadAPIStub(channel)
            stream = stub.FetchX509SVID(self.wl_pb.X509SVIDRequest(), metadata=MD, timeout=20)
            first = next(iter(stream))
            stream.cancel()
        finally:
            channel.close()
        return {s.spiffe_id: x509.load_der_x509_certificate(
                    helpers.split_der_chain(s.x509_svid)[0]) for s in first.svids}

    def wait_svids(self, agent: dict, what: str, pred, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = self.svids(agent)
                if pred(last):
                    return last
            except self.grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
            time.sleep(0.3)
        raise AssertionError(f"Workload API: {what} not within {timeout} s (last: {last})\n"
                             f"{agent['peer'].output[-4000:]}")

    def fetch_credential(self, agent_api: str, agent: dict, bundle: Path, pid: int) -> bytes:
        """FetchCredential over the agent API with the agent's own node SVID (its files)."""
        creds = self.grpc.ssl_channel_credentials(
            root_certificates=bundle.read_bytes(),
            private_key=(agent["data"] / "node.key").read_bytes(),
            certificate_chain=(agent["data"] / "node.crt").read_bytes())
        channel = self.grpc.secure_channel(
            agent_api, creds, options=[("grpc.ssl_target_name_override", TLS_NAME)])
        try:
            stub = self.ag_grpc.AgentServiceStub(channel)
            process = self.ag_pb.AttestedProcess(
                pid=pid, uid=0, gid=0, exe_path="/usr/bin/backup-test", exe_sha256="ab" * 32,
                cgroup="/system.slice/backup-test.service", selectors=["unix:uid:0"])
            return stub.FetchCredential(
                self.ag_pb.FetchCredentialRequest(binding="backup", process=process),
                timeout=15).secret
        finally:
            channel.close()

    def assert_kek_refused(self, r, kek_path: Path, what: str) -> None:
        self.assertEqual(r.returncode, 1, f"{what}: exit {r.returncode}\n{r.stdout}{r.stderr}")
        self.assertRegex(r.stderr, rf"kek: {re.escape(str(kek_path))} ", what)
        self.assertRegex(r.stderr, rf"sealed under KEK {KEY_ID_RE}", what)

    # --- the scenario -------------------------------------------------------------------

    def scenario(self, tmp: Path, backend: str) -> None:
        tmp.mkdir()
        pg: PgCluster | None = None
        if backend == "postgres":
            # The cluster runs as the postgres user, which must reach its directory.
            os.chmod(self.root, 0o755)
            os.chmod(tmp, 0o755)
            pg = PgCluster(tmp / "pg")
            self.addCleanup(lambda: (self._kill_peers(), pg.stop()))
            store_a = pg.start("sigil")
        else:
            store_a = None  # DIR/sigil.db
        data_a = tmp / "server-a"
        a = self.start_server(tmp, data_a, store_a, "server-a")
        self.cli(a, "apply", "-f", "-", input=RESOURCES)
        token = re.search(r"SJT1\.\S+", self.cli(a, "token", "create", "--node", NODE).stdout)
        self.assertIsNotNone(token)
        token_file = tmp / "token"
        token_file.write_text(token.group(0) + "\n")
        os.chmod(token_file, 0o600)
        relay = Relay(a["agent"])
        self.addCleanup(relay.close)
        agent = self.start_agent(tmp, relay.address, token_file, "agent")
        self.wait_health(agent, "synced", lambda h: h.get("synced"))
        before = self.wait_svids(agent, "the keep SVID", lambda s: KEEP_ID in s)
        self.assertEqual(self.fetch_credential(a["agent"], agent, data_a / "admin" / "bundle.pem",
                                               pid=51001), SECRET.encode())
        fingerprints = self.ca_fingerprints(a)
        bundle_a = sorted(helpers.split_pem_certs((data_a / "admin" / "bundle.pem").read_bytes()))

        # The backup, taken while the server runs and a writer keeps committing.
        applied: list[int] = []
        stop = threading.Event()
        errors: list[str] = []

        def writer() -> None:
            i = 0
            while not stop.is_set():
                r = self.cli(a, "apply", "-f", "-", input=churn_doc(i), check=False)
                if r.returncode != 0:
                    errors.append(r.stderr)
                    return
                applied.append(i)
                i += 1

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while len(applied) < 5:
            self.assertLess(time.monotonic(), deadline, f"the writer is stuck: {errors}")
            time.sleep(0.05)
        applied_before_backup = len(applied)
        if backend == "sqlite":
            backup = tmp / "backups" / "sigil-backup.db"
            backup.parent.mkdir(mode=0o700)
            out = run([self.sigil, "server", "backup", "--data-dir", data_a, "--out", backup],
                      timeout=60).stdout
            self.assertRegex(out, rf"audit chain verified \(\d+ records\)")
            self.assertRegex(out, rf"secrets sealed under KEK {KEY_ID_RE}: this backup is useless "
                                  "without that key file")
            self.assertEqual(backup.stat().st_mode & 0o777, 0o600)
            backup_seq = int(re.search(r"audit head seq (\d+)", out).group(1))
        else:
            backup = pg.dir / "sigil.dump"
            pg.run(["pg_dump", "--format=custom", "--file", str(backup), "-h", str(pg.dir),
                    "-U", "postgres", "sigil"], 120)
            backup_seq = None
        # Keep writing for a moment after the backup, then stop.
        target = len(applied) + 3
        deadline = time.monotonic() + 30
        while len(applied) < target and thread.is_alive():
            self.assertLess(time.monotonic(), deadline, f"the writer is stuck: {errors}")
            time.sleep(0.05)
        stop.set()
        thread.join(30)
        self.assertEqual(errors, [])
        churn_total = len(applied)

        # After the backup: what a restore will not have.
        self.cli(a, "apply", "-f", "-", input=LATER)
        self.wait_svids(agent, "the later SVID", lambda s: LATER_ID in s)
        late_token = re.search(r"SJT1\.\S+",
                               self.cli(a, "token", "create", "--node", "node-late").stdout)
        self.assertIsNotNone(late_token)
        self.cli(a, "revoke", "binding", "backup", "--reason", "after the backup")
        with self.assertRaises(self.grpc.RpcError) as denied:
            self.fetch_credential(a["agent"], agent, data_a / "admin" / "bundle.pem", pid=51002)
        self.assertEqual(denied.exception.code(), self.grpc.StatusCode.PERMISSION_DENIED)
        head_a = self.audit(a)[-1]["seq"]
        self.stop(a["peer"])

        # --- restore into a new data directory and a new file / database ---------------
        data_b = tmp / "server-b"
        data_b.mkdir(mode=0o700)
        store_b = None
        restore_args: list = ["--data-dir", data_b]
        if backend == "sqlite":
            restore_args += ["--from", backup]
            store_b_path = data_b / "sigil.db"
        else:
            pg.createdb("restored")
            pg.run(["pg_restore", "--exit-on-error", "--no-owner", "-h", str(pg.dir), "-U",
                    "postgres", "--dbname", "restored", str(backup)], 120)
            store_b = pg.url("restored")
            restore_args += ["--store", store_b]
            pg_state = "SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM meta"
            restored_meta = pg.psql(pg_state, "restored")

        # Wrong KEK, then missing KEK: refused with the KEK named, nothing left behind.
        wrong = tmp / "wrong.kek"
        wrong.write_bytes(os.urandom(32))
        os.chmod(wrong, 0o600)
        r = run([self.sigil, "server", "restore", *restore_args, "--kek-file", wrong],
                check=False, timeout=60)
        self.assert_kek_refused(r, wrong, "restore with a wrong KEK")
        self.assertRegex(r.stderr, rf"holds KEK {KEY_ID_RE}, but this store's secrets are "
                                   rf"sealed under KEK {KEY_ID_RE}")
        r = run([self.sigil, "server", "restore", *restore_args], check=False, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"kek: {data_b / 'kek'} does not exist", r.stderr)
        self.assertFalse((data_b / "kek").exists(), "a KEK was created")
        if backend == "sqlite":
            self.assertFalse(store_b_path.exists(), "a refused restore left its copy behind")
        else:
            self.assertEqual(pg.psql(pg_state, "restored"), restored_meta)
            self.assertEqual(pg.psql("SELECT count(*) FROM audit WHERE type = 'store.restore'",
                                     "restored").strip(), "0")

        # The right KEK, copied beside the new data directory's store.
        shutil.copy2(data_a / "kek", data_b / "kek")
        os.chmod(data_b / "kek", 0o600)
        out = run([self.sigil, "server", "restore", *restore_args], timeout=60).stdout
        m = re.search(r"revision (\d+) -> (\d+)", out)
        self.assertIsNotNone(m, out)
        previous_revision, revision = int(m.group(1)), int(m.group(2))
        self.assertEqual(revision, previous_revision + BUMP)
        restored_seq = int(re.search(r"store\.restore recorded after seq (\d+)", out).group(1))
        if backup_seq is not None:
            self.assertEqual(restored_seq, backup_seq)
        self.assertLess(restored_seq, head_a)
        self.assertIn(f"admin credentials written to {data_b / 'admin'}", out)
        self.assertIn(re.search(r"CA sha256 ([0-9a-f]{64})", out).group(1), fingerprints)

        # The server refuses the restored store with a wrong or missing KEK, naming it.
        for kek, what in ((wrong, "wrong"), (tmp / "no-such.kek", "missing")):
            argv = [self.sigil, "server", "--data-dir", data_b, "--admin-listen", "127.0.0.1:0",
                    "--agent-listen", "off", "--metrics-listen", "off", "--kek-file", kek]
            if store_b:
                argv += ["--store", store_b]
            r = run(argv, check=False, timeout=30)
            self.assert_kek_refused(r, kek, f"server with a {what} KEK")
        self.assertFalse((tmp / "no-such.kek").exists(), "the server created a KEK")

        b = self.start_server(tmp, data_b, store_b, "server-b")
        relay.retarget(b["agent"])

        # Same CA, same bundle.
        self.assertEqual(self.ca_fingerprints(b), fingerprints)
        self.assertEqual(sorted(helpers.split_pem_certs(
            (data_b / "admin" / "bundle.pem").read_bytes())), bundle_a)
        # Resources of the backup, and exactly a prefix of the writer's: one snapshot.
        names = self.resource_names(b, "workloadidentities")
        self.assertIn("keep", names)
        self.assertNotIn("later", names)
        churn = sorted(n for n in names if n.startswith("churn-"))
        self.assertGreaterEqual(len(churn), applied_before_backup)
        self.assertLess(len(churn), churn_total)
        self.assertEqual(churn, [f"churn-{i:04d}" for i in range(len(churn))])
        self.assertEqual(self.resource_names(b, "credentialsources"), {"backup-key"})
        self.assertEqual(self.resource_names(b, "credentialbindings"), {"backup"})
        source = json.loads(self.cli(b, "get", "credentialsources", "backup-key", "-o",
                                     "json").stdout)
        self.assertNotIn(SECRET, json.dumps(source))
        # The audit chain verifies and continues from the backup's head.
        self.assertRegex(self.cli(b, "audit", "verify").stdout, r"^audit chain ok: \d+ records")
        restores = self.audit(b, type="store.restore")
        self.assertEqual(len(restores), 1, restores)
        self.assertEqual(restores[0]["seq"], restored_seq + 1)
        details = restores[0]["details"]
        self.assertEqual(details["previous_audit_seq"], restored_seq)
        self.assertEqual(details["previous_revision"], previous_revision)
        self.assertEqual(details["revision"], revision)
        self.assertRegex(details["kek_id"], KEY_ID_RE)
        self.assertEqual(self.audit(b, type="revoke.binding"), [])  # made after the backup
        # A write now gets a version past the bump.
        applied_now = self.cli(b, "apply", "-f", "-", input=churn_doc(9999)).stdout
        version = int(re.search(r"resourceVersion (\d+)", applied_now).group(1))
        self.assertEqual(version, revision + 1)

        # The agent that ran through the restore reconnects with its stored node SVID and
        # takes a fresh snapshot: the identity added after the backup is gone.
        self.wait_health(agent, "synced with the restored server",
                         lambda h: h.get("synced") and h.get("revision", 0) >= revision)
        after = self.wait_svids(agent, "a snapshot without the later identity",
                                lambda s: KEEP_ID in s and LATER_ID not in s)
        self.assertEqual(after[KEEP_ID].issuer, before[KEEP_ID].issuer)
        nodes = json.loads(self.cli(b, "node", "list", "--json").stdout)
        self.assertIn(NODE, [n["name"] for n in nodes])
        # A join token created after the backup is unknown to the restored server.
        late_file = tmp / "late-token"
        late_file.write_text(late_token.group(0) + "\n")
        os.chmod(late_file, 0o600)
        late = self.peer([self.sigil, "agent", "--server", b["agent"], "--data-dir",
                          tmp / "agent-late", "--socket", tmp / "run-late" / "agent.sock",
                          "--node-name", "node-late", "--health-listen", "127.0.0.1:0",
                          "--creds-mount", "", "--join-token-file", late_file], "agent-late")
        self.assertNotEqual(late.wait_exit(30), 0, late.output)
        self.assertIn("join refused", late.output)
        # The credential secret opens with the KEK; the binding's later revocation is lost.
        self.assertEqual(self.fetch_credential(b["agent"], agent, data_b / "admin" / "bundle.pem",
                                               pid=51003), SECRET.encode())

        # Restarted without a token, straight at the restored server: it comes back with its
        # node credential and serves a fresh SVID.
        old_serial = after[KEEP_ID].serial_number
        agent["peer"].proc.send_signal(signal.SIGTERM)
        agent["peer"].wait_exit(20)
        agent2 = self.start_agent(tmp, b["agent"], None, "agent-restarted")
        self.wait_health(agent2, "synced after the restart",
                         lambda h: h.get("synced") and h.get("revision", 0) > revision)
        fresh = self.wait_svids(agent2, "the keep SVID", lambda s: KEEP_ID in s)
        self.assertNotEqual(fresh[KEEP_ID].serial_number, old_serial)
        self.assertNotIn(LATER_ID, fresh)
        self.assertEqual(fresh[KEEP_ID].issuer, before[KEEP_ID].issuer)
        self.assertNotIn("agent.joined", [e.get("event") for e in self._events(agent2)])
        self.assertEqual(len(self.audit(b, type="node.join", node=NODE)), 1)
        self.assertEqual(self.cli(b, "audit", "verify").returncode, 0)
        print(f"\n{backend}: backup at audit seq {restored_seq} of {head_a}, "
              f"{len(churn)}/{churn_total} writer resources in it, revision "
              f"{previous_revision} -> {revision}", file=sys.stderr)

    @staticmethod
    def _events(agent: dict) -> list[dict]:
        out = []
        for line in agent["peer"].output.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    def test_sqlite(self):
        self.scenario(self.root / "sqlite", "sqlite")

    def test_postgres(self):
        self.scenario(self.root / "postgres", "postgres")


if __name__ == "__main__":
    helpers.main()
