"""High availability (issue 7): several `sigil server` replicas on one PostgreSQL database, one
node agent that knows all of them (`sigil agent --server A,B,C`).

A throwaway PostgreSQL 15 cluster (tests/interop/pg_cluster.py) serves every test; each test gets
its own database and its own replicas: the same --store URL and KEK (replica 1's, copied), their
own data directories and ports, started one after the other. The workload is this process,
talking to the agent's Workload API with Python grpcio (stubs compiled from workload.proto).

  a. `sigil apply` through replica 1 reaches the workload of an agent connected to replica 2
     (time from the acknowledged apply to the new SVID on an open Workload API stream < 2 s);
     the join skips an unreachable first address; a restart with another --server list
     replaces the stored one.
  b. SIGKILL of the replica the agent uses, while the workload fetches X.509-SVIDs and fresh
     JWT-SVIDs (a new audience each time, so every JWT is a server call) and an admin loop
     applies through a surviving replica: `server.failover` in the agent's log, JWT fetches
     recover within 15 s, no X.509 fetch fails, every acknowledged apply is present and synced
     to the agent, `sigil audit verify` passes on the survivors.
  c. PostgreSQL crash-restarted under load: the agent keeps serving its cached X.509-SVID (and a
     cached JWT-SVID) during the outage; afterwards apply works again without restarting any
     server, the agent syncs a new identity, acknowledged applies are present, the chain
     verifies.
  d. Concurrent audit appends from three replicas (apply and token-create loops, bounded): one
     chain, seq 1..N without a gap, every operation recorded once, `sigil audit verify` passes.
  e. A replica that stops answering (SIGSTOP): the agent's signing call runs into its 5 s
     per-replica attempt deadline, fails over, repeats on the next replica, and moves its Sync
     stream along (no wait for the ~40 s keepalive).

Figures (failover and recovery times) are printed to stderr for quoting.

Run: SIGIL_BIN=build/release/apps/sigil/sigil /usr/bin/python3 tests/server/test_ha.py
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
PROTO = ROOT / "src" / "proto" / "workload.proto"
MD = (("workload.spiffe.io", "true"),)
RPC_TIMEOUT = 5.0

# Bounds (seconds) asserted and printed.
SYNC_BOUND = 2.0          # a: acknowledged apply -> new SVID at the workload
RECOVERY_BOUND = 15.0     # b: replica killed -> first successful server-backed fetch
PG_BACK_BOUND = 20.0      # c: PostgreSQL restarted -> first acknowledged apply
PG_SYNC_BOUND = 40.0      # c: that apply -> new identity at the workload (Sync may be in backoff)
FROZEN_BOUND = 10.0       # e: replica frozen -> first JWT-SVID (one 5 s attempt, then the next)
CA_BOUND = 2.0            # f: `sigil ca rotate` via one replica -> new root at a workload on another


def identity_doc(name: str, path: str, uid: int) -> str:
    return ("apiVersion: sigil.dev/v1alpha1\nkind: WorkloadIdentity\n"
            f"metadata: {{name: {name}}}\n"
            f"spec:\n  spiffeId: spiffe://{TD}/{path}\n  selectors: [\"unix:uid:{uid}\"]\n")


def figure(name: str, value: float, unit: str = "s") -> None:
    print(f"HA-FIGURE {name}={value:.3f}{unit}", file=sys.stderr, flush=True)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, name: str, peer: Peer, ready: dict) -> None:
        self.name = name
        self.peer = peer
        self.admin = "https://" + ready["admin"]
        self.agent = ready["agent"]


class HaCase(unittest.TestCase):
    pg: PgCluster

    @classmethod
    def setUpClass(cls) -> None:
        cls._td = tempfile.TemporaryDirectory(prefix="sigil-ha-")
        cls.tmp = Path(cls._td.name)
        os.chmod(cls.tmp, 0o755)  # PostgreSQL runs as the postgres user below it
        cls.pg = None
        try:
            mods = helpers.require_modules()
            cls.grpc = mods["grpc"]
            cls.sigil = helpers.sigil_bin()
            cls.pb, cls.pb_grpc = helpers.compile_proto(PROTO, cls.tmp / "stubs")
            cls.pg = PgCluster(cls.tmp / "pg")
            cls.pg.start("postgres_unused")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            if cls.pg is not None:
                cls.pg.stop("immediate")
        finally:
            cls._td.cleanup()

    def setUp(self) -> None:
        case = self.id().rsplit(".", 1)[-1]
        self.dir = self.tmp / case
        self.dir.mkdir()
        self.db = case.lower()
        self.pg.createdb(self.db)
        self.url = self.pg.url(self.db)
        self.peers: list[Peer] = []
        self.addCleanup(self._kill_all)

    def _kill_all(self) -> None:
        for p in reversed(self.peers):
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - best effort in cleanup
                pass

    # --- servers ------------------------------------------------------------------------

    def start_replicas(self, n: int) -> list[Replica]:
        """Replicas 1..n on the test's empty database, all started at the same moment with one
        KEK made beforehand (as an operator provisions it): exactly one of them creates the CA,
        the others load it (the CaState compare-and-swap, src/server/authority_store.cc)."""
        kek = self.dir / "kek"
        with open(kek, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(kek, 0o600)
        started = []
        for i in range(1, n + 1):
            ready = self.dir / f"r{i}.ready"
            argv = [self.sigil, "server", "--data-dir", self.dir / f"r{i}", "--store", self.url,
                    "--trust-domain", TD, "--kek-file", kek, "--admin-listen", "127.0.0.1:0",
                    "--agent-listen", "127.0.0.1:0", "--metrics-listen", "off",
                    "--ready-file", ready]
            peer = Peer(argv, f"replica-{i}")
            self.peers.append(peer)
            started.append((i, peer, ready))
        replicas = [Replica(f"r{i}", peer, helpers.wait_ready_file(peer, ready, f"replica {i}", 60))
                    for i, peer, ready in started]
        inits = self.cli(replicas[-1], "audit", "--type", "ca.init").stdout.strip().splitlines()
        self.assertEqual(len(inits), 1, f"ca.init records: {inits}")
        roots = {self.ca_status(r)["generations"][0]["rootSha256"] for r in replicas}
        self.assertEqual(len(roots), 1, f"replicas disagree on the root: {roots}")
        return replicas

    def ca_status(self, via: Replica) -> dict:
        return json.loads(self.cli(via, "ca", "status", "--json").stdout)

    def cli(self, via: Replica, *args: object, input: str | None = None, check: bool = True,
            timeout: float = 20):
        return run([self.sigil, *args, "--server", via.admin, "--credentials",
                    self.dir / "r1" / "admin"], input=input, check=check, timeout=timeout)

    def apply(self, via: Replica, doc: str, check: bool = True, timeout: float = 20):
        return self.cli(via, "apply", "-f", "-", input=doc, check=check, timeout=timeout)

    def identities(self, via: Replica) -> set[str]:
        items = json.loads(self.cli(via, "get", "WorkloadIdentity", "-o", "json").stdout)
        return {it["metadata"]["name"] for it in items}

    def audit_ok(self, via: Replica) -> int:
        r = self.cli(via, "audit", "verify", check=False)
        self.assertEqual(r.returncode, 0, f"audit verify through {via.name}: {r.stdout}{r.stderr}")
        m = re.match(r"audit chain ok: (\d+) records", r.stdout)
        self.assertIsNotNone(m, r.stdout)
        return int(m.group(1))

    def store_revision(self) -> int:
        return int(self.pg.psql("SELECT value FROM meta WHERE key = 'revision'", self.db))

    # --- agent --------------------------------------------------------------------------

    def start_agent(self, servers: list[str], node: str, token_via: Replica | None = None,
                    tag: str = "agent") -> Peer:
        data = self.dir / "agent"
        ready = self.dir / f"{tag}.ready"
        argv = [self.sigil, "agent", "--server", ",".join(servers), "--data-dir", data,
                "--socket", self.dir / "agent.sock", "--node-name", node,
                "--health-listen", "127.0.0.1:0", "--ready-file", ready, "--creds-mount", ""]
        if token_via is not None:
            out = self.cli(token_via, "token", "create", "--node", node).stdout
            m = re.search(r"SJT1\.\S+", out)
            self.assertIsNotNone(m, out)
            token_file = self.dir / "token"
            token_file.write_text(m.group(0) + "\n")
            os.chmod(token_file, 0o600)
            argv += ["--join-token-file", token_file]
        peer = Peer(argv, tag)
        self.peers.append(peer)
        self.health = helpers.wait_ready_file(peer, ready, tag, 30)["health"]
        self.agent = peer
        return peer

    def healthz(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://{self.health}/healthz", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 503 while not synced: same body
            return json.loads(e.read())

    def wait_health(self, pred, what: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        h: dict = {}
        while time.monotonic() < deadline:
            try:
                h = self.healthz()
                if pred(h):
                    return h
            except OSError:
                pass
            time.sleep(0.05)
        self.fail(f"agent: {what} not reached in {timeout}s; last /healthz {h}\n"
                  f"--- agent log ---\n{self.agent.output}")

    # --- workload (this process) ---------------------------------------------------------

    def workload(self):
        # Its own subchannel: after an agent restart no connection to the old one is reused.
        channel = self.grpc.insecure_channel(f"unix:{self.dir / 'agent.sock'}",
                                             options=[("grpc.use_local_subchannel_pool", 1)])
        self.addCleanup(channel.close)
        return self.pb_grpc.SpiffeWorkloadAPIStub(channel)

    def fetch_x509(self, stub) -> dict:
        """{spiffe id: serial} of the first FetchX509SVID message."""
        from cryptography import x509
        stream = stub.FetchX509SVID(self.pb.X509SVIDRequest(), metadata=MD, timeout=RPC_TIMEOUT)
        try:
            first = next(iter(stream))
        finally:
            stream.cancel()
        out = {}
        for s in first.svids:
            leaf = x509.load_der_x509_certificate(helpers.split_der_chain(s.x509_svid)[0])
            out[s.spiffe_id] = leaf.serial_number
        return out

    def watch_x509(self, stub, extract):
        """Opens a FetchX509SVID stream read by a background thread. Returns (the list it fills
        with (arrival time, extract(message)), the stream) once the first message is in."""
        seen: list = []
        stream = stub.FetchX509SVID(self.pb.X509SVIDRequest(), metadata=MD, timeout=30)

        def read_stream() -> None:
            try:
                for msg in stream:
                    seen.append((time.monotonic(), extract(msg)))
            except self.grpc.RpcError:
                pass

        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        self.addCleanup(reader.join, 5)
        self.addCleanup(stream.cancel)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertTrue(seen, "the Workload API stream sent nothing")
        return seen, stream

    def fetch_jwt(self, stub, audience: str, timeout: float = RPC_TIMEOUT) -> str:
        resp = stub.FetchJWTSVID(self.pb.JWTSVIDRequest(audience=[audience]), metadata=MD,
                                 timeout=timeout)
        self.assertEqual(len(resp.svids), 1)
        return resp.svids[0].svid

    def failover_lines(self) -> list[tuple[str, str, tuple[str, str], str]]:
        """(from, to, ("call", CALL), code) of each server.failover line of the agent."""
        out = []
        for line in self.agent.output.splitlines():
            if " server.failover " in line:
                f = dict(re.findall(r'\b(from|to|call)="([^"]*)"', line))
                code = re.search(r"\bcode=(\d+)", line)
                out.append((f.get("from", ""), f.get("to", ""), ("call", f.get("call", "")),
                            code.group(1) if code else ""))
        return out

    def failovers(self) -> list[tuple[str, str]]:
        return [(m[0], m[1]) for m in self.failover_lines()]

    def wait_failover(self, pred=bool, timeout: float = 5) -> list:
        """failover_lines() once pred(lines) holds (a line may still be in the pipe)."""
        deadline = time.monotonic() + timeout
        while not pred(self.failover_lines()) and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = self.failover_lines()
        self.assertTrue(pred(lines), f"server.failover lines {lines}\n{self.agent.output}")
        return lines


class Load:
    """Background loops, each bounded in count and stopped by `stop`."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def spawn(self, fn) -> None:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        self.threads.append(t)

    def finish(self, timeout: float = 30) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
            if t.is_alive():
                raise AssertionError("a load loop did not stop")


class HaTest(HaCase):

    def test_a_apply_via_one_replica_reaches_agent_on_another(self):
        r1, r2, r3 = self.start_replicas(3)
        self.apply(r1, identity_doc("ha-root", "ha/root", 0))
        dead = f"127.0.0.1:{closed_port()}"
        # The join skips the unreachable first address and stays on the one that answered.
        self.start_agent([dead, r2.agent, r3.agent, r1.agent], "node-a", token_via=r1)
        self.agent.wait_for(r"join\.server\.unreachable .*server=\"" + re.escape(dead), 5)
        h = self.wait_health(lambda h: h["synced"], "synced")
        self.assertEqual(h["server"], r2.agent, h)

        stub = self.workload()
        self.assertIn(f"spiffe://{TD}/ha/root", self.fetch_x509(stub))
        # An open stream sees the change the agent syncs from replica 2.
        seen, stream = self.watch_x509(stub, lambda msg: [s.spiffe_id for s in msg.svids])

        new_id = f"spiffe://{TD}/ha/new"
        t_start = time.monotonic()
        self.apply(r1, identity_doc("ha-new", "ha/new", 0))
        t_acked = time.monotonic()
        deadline = t_acked + 10
        t_seen = None
        while time.monotonic() < deadline and t_seen is None:
            for t, ids in list(seen):
                if new_id in ids:
                    t_seen = t
                    break
            time.sleep(0.005)
        self.assertIsNotNone(t_seen, f"{new_id} never reached the workload\n{self.agent.output}")
        figure("a.apply_r1_to_workload_on_r2_after_ack", t_seen - t_acked)
        figure("a.apply_r1_to_workload_on_r2_incl_cli", t_seen - t_start)
        self.assertLess(t_seen - t_acked, SYNC_BOUND)
        self.assertEqual(self.failovers(), [])  # it never left replica 2
        self.assertEqual(self.healthz()["server"], r2.agent)

        # Restart with another list: it replaces the stored one (logged, node.json updated).
        stream.cancel()
        self.agent.proc.terminate()
        self.assertEqual(self.agent.wait_exit(20), 0, self.agent.output)
        new_list = [r3.agent, r1.agent, r2.agent]
        self.start_agent(new_list, "node-a", tag="agent-restarted")
        self.agent.wait_for(r"agent\.server\.changed .*from=\"" +
                            re.escape(f"{dead},{r2.agent},{r3.agent},{r1.agent}") + '"', 5)
        meta = json.loads((self.dir / "agent" / "node.json").read_text())
        self.assertEqual(meta["servers"], new_list)
        self.assertEqual(meta["server"], r3.agent)
        h = self.wait_health(lambda h: h["synced"], "synced after restart")
        self.assertEqual(h["server"], r3.agent, h)
        self.assertIn(new_id, self.fetch_x509(self.workload()))

        # A bad entry is refused, naming it.
        r = run([self.sigil, "agent", "--server", f"{r1.agent},nope", "--data-dir",
                 self.dir / "agent", "--socket", self.dir / "other.sock", "--health-listen",
                 "off", "--creds-mount", ""], check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('--server entry 2: \\"nope\\" is not HOST:PORT', r.stderr)

    def test_b_replica_killed_under_load(self):
        r1, r2, r3 = self.start_replicas(3)
        self.apply(r1, identity_doc("ha-root", "ha/root", 0))
        self.start_agent([r2.agent, r3.agent, r1.agent], "node-b", token_via=r1)
        h = self.wait_health(lambda h: h["synced"], "synced")
        self.assertEqual(h["server"], r2.agent, h)
        stub = self.workload()
        self.fetch_x509(stub)
        self.fetch_jwt(stub, "warm-up")

        load = Load()
        fetches: list[tuple[float, float, str, bool, str]] = []  # start, end, kind, ok, error
        acked: set[str] = set()
        attempted: set[str] = set()

        def workload_loop() -> None:
            for i in range(3000):
                if load.stop.is_set():
                    return
                for kind in ("x509", "jwt"):
                    t0 = time.monotonic()
                    try:
                        if kind == "x509":
                            self.fetch_x509(stub)
                        else:
                            self.fetch_jwt(stub, f"aud-{i}")  # new audience: a server call
                        ok, err = True, ""
                    except self.grpc.RpcError as e:
                        ok, err = False, f"{e.code().name}: {e.details()}"
                    with load.lock:
                        fetches.append((t0, time.monotonic(), kind, ok, err))
                time.sleep(0.05)

        def admin_loop() -> None:
            for n in range(60):
                if load.stop.is_set():
                    return
                name = f"ha-b-{n}"
                with load.lock:
                    attempted.add(name)
                r = self.apply(r1, identity_doc(name, f"ha/b/{n}", 3000 + n), check=False)
                if r.returncode == 0:
                    with load.lock:
                        acked.add(name)
                time.sleep(0.1)

        load.spawn(workload_loop)
        load.spawn(admin_loop)
        self.addCleanup(load.finish)
        time.sleep(2)
        t_kill = time.monotonic()
        r2.peer.proc.kill()  # SIGKILL the replica the agent uses
        r2.peer.wait_exit(10)

        deadline = t_kill + 30
        while time.monotonic() < deadline and not self.failovers():
            time.sleep(0.02)
        t_failover_logged = time.monotonic()
        moves = self.failovers()
        self.assertTrue(moves, f"no server.failover logged\n{self.agent.output}")
        self.assertEqual(moves[0], (r2.agent, r3.agent), moves)
        # A server-backed fetch that started after the kill succeeds within the bound.
        t_recovered = None
        while time.monotonic() < t_kill + RECOVERY_BOUND + 5 and t_recovered is None:
            with load.lock:
                ok_after = [f for f in fetches if f[2] == "jwt" and f[3] and f[0] > t_kill]
            if ok_after:
                t_recovered = ok_after[0][1]
            time.sleep(0.02)
        self.assertIsNotNone(t_recovered, f"no JWT fetch succeeded after the kill\n"
                                          f"{self.agent.output}")
        time.sleep(2)  # more load on the survivors
        load.finish()

        with load.lock:
            jwt_failed = [f for f in fetches if f[2] == "jwt" and not f[3]]
            x509_failed = [f for f in fetches if f[2] == "x509" and not f[3]]
            jwt_ok_after = sum(1 for f in fetches if f[2] == "jwt" and f[3] and f[0] > t_kill)
            gaps = []
            ok_ends = sorted(f[1] for f in fetches if f[2] == "jwt" and f[3])
            for a, b in zip(ok_ends, ok_ends[1:]):
                gaps.append(b - a)
        figure("b.kill_to_failover_logged", t_failover_logged - t_kill)
        figure("b.kill_to_first_jwt_ok", t_recovered - t_kill)
        figure("b.max_gap_between_jwt_ok", max(gaps) if gaps else 0.0)
        print(f"HA-FIGURE b.jwt_failed={len(jwt_failed)} b.x509_failed={len(x509_failed)} "
              f"b.jwt_ok_after_kill={jwt_ok_after} b.applies_acked={len(acked)}/"
              f"{len(attempted)}", file=sys.stderr, flush=True)
        for f in jwt_failed[:5]:
            print(f"  failed jwt fetch at +{f[0] - t_kill:.3f}s: {f[4]}", file=sys.stderr)
        self.assertLess(t_recovered - t_kill, RECOVERY_BOUND)
        self.assertEqual(x509_failed, [], "cached X.509-SVIDs must be served throughout")
        # Load really ran on both sides of the kill (loose: the machine may be busy).
        self.assertGreaterEqual(jwt_ok_after, 3)
        self.assertGreaterEqual(len(acked), 5)

        # The agent runs on replica 3 now and has synced everything acknowledged.
        h = self.healthz()
        self.assertEqual(h["server"], r3.agent, h)
        self.assertGreaterEqual(h["server_failovers"], 1)
        revision = self.store_revision()
        self.wait_health(lambda h: h["synced"] and h["revision"] >= revision,
                         f"revision {revision}", 15)
        for via in (r1, r3):
            present = self.identities(via)
            missing = acked - present
            self.assertFalse(missing, f"acknowledged applies lost (via {via.name}): {missing}")
            self.assertFalse(present - attempted - {"ha-root"})
        n1, n3 = self.audit_ok(r1), self.audit_ok(r3)
        self.assertEqual(n1, n3)
        print(f"HA-FIGURE b.audit_records={n1}", file=sys.stderr, flush=True)

    def test_c_postgres_crash_restart_under_load(self):
        r1, r2 = self.start_replicas(2)
        self.apply(r1, identity_doc("ha-root", "ha/root", 0))
        self.start_agent([r1.agent, r2.agent], "node-c", token_via=r1)
        self.wait_health(lambda h: h["synced"], "synced")
        stub = self.workload()
        before = self.fetch_x509(stub)
        root_id = f"spiffe://{TD}/ha/root"
        self.assertIn(root_id, before)
        cached_jwt = self.fetch_jwt(stub, "cached-aud")

        load = Load()
        x509: list[tuple[float, bool, object]] = []  # start, ok, serial or error
        applies: list[tuple[float, float, str, bool]] = []  # start, end, name, ok

        def workload_loop() -> None:
            for _ in range(3000):
                if load.stop.is_set():
                    return
                t0 = time.monotonic()
                try:
                    got = self.fetch_x509(stub)
                    entry = (t0, True, got.get(root_id))
                except self.grpc.RpcError as e:
                    entry = (t0, False, f"{e.code().name}: {e.details()}")
                with load.lock:
                    x509.append(entry)
                time.sleep(0.05)

        def admin_loop() -> None:
            for n in range(300):
                if load.stop.is_set():
                    return
                name = f"ha-c-{n}"
                t0 = time.monotonic()
                r = self.apply(r1, identity_doc(name, f"ha/c/{n}", 4000 + n), check=False,
                               timeout=30)
                with load.lock:
                    applies.append((t0, time.monotonic(), name, r.returncode == 0))
                time.sleep(0.1)

        load.spawn(workload_loop)
        load.spawn(admin_loop)
        self.addCleanup(load.finish)
        time.sleep(1.5)
        t_crash = time.monotonic()
        self.pg.crash()
        time.sleep(6)
        # Still down: the cached JWT-SVID is served too; a new one needs the store, and the
        # workload gets an error at once (each replica answers UNAVAILABLE), not a hang.
        self.assertEqual(self.fetch_jwt(stub, "cached-aud"), cached_jwt)
        t0 = time.monotonic()
        with self.assertRaises(self.grpc.RpcError) as refused:
            self.fetch_jwt(stub, "fresh-aud")
        t_refused = time.monotonic() - t0
        self.assertEqual(refused.exception.code(), self.grpc.StatusCode.UNAVAILABLE,
                         refused.exception.details())
        self.assertLess(t_refused, RPC_TIMEOUT)
        self.wait_failover(lambda lines: ("call", "MintJWTSVID") in [m[2] for m in lines])
        t_restart = time.monotonic()
        self.pg.restart()
        t_up = time.monotonic()

        t_apply_ok = None
        while time.monotonic() < t_up + PG_BACK_BOUND + 10 and t_apply_ok is None:
            with load.lock:
                ok = [a for a in applies if a[3] and a[0] > t_up]
            if ok:
                t_apply_ok = ok[0][1]
            time.sleep(0.05)
        self.assertIsNotNone(t_apply_ok, "no apply succeeded after PostgreSQL came back\n" +
                             r1.peer.output[-3000:])
        load.finish()

        new_id = f"spiffe://{TD}/ha/after-crash"
        self.apply(r1, identity_doc("ha-after", "ha/after-crash", 0))
        t_acked = time.monotonic()
        t_seen = None
        while time.monotonic() < t_acked + PG_SYNC_BOUND + 10 and t_seen is None:
            try:
                if new_id in self.fetch_x509(stub):
                    t_seen = time.monotonic()
            except self.grpc.RpcError:
                pass
            time.sleep(0.05)
        self.assertIsNotNone(t_seen, f"the agent never synced {new_id}\n{self.agent.output}")

        with load.lock:
            during = [e for e in x509 if t_crash <= e[0] <= t_restart]
            failed = [e for e in x509 if not e[1]]
            applies_down = [a for a in applies if t_crash + 1 <= a[0] and a[1] <= t_restart]
            acked = {a[2] for a in applies if a[3]}
            attempted = {a[2] for a in applies}
        figure("c.pg_restart_duration", t_up - t_restart)
        figure("c.pg_up_to_first_apply_ok", t_apply_ok - t_up)
        figure("c.apply_to_workload_after_crash", t_seen - t_acked)
        print(f"HA-FIGURE c.x509_during_outage={len(during)} c.x509_failed={len(failed)} "
              f"c.applies_during_outage={len(applies_down)} "
              f"c.applies_acked={len(acked)}/{len(attempted)}", file=sys.stderr, flush=True)
        self.assertEqual(failed, [], "cached X.509-SVIDs must be served while PostgreSQL is down")
        self.assertGreaterEqual(len(during), 5)
        self.assertEqual({e[2] for e in during}, {before[root_id]}, "not the cached SVID")
        self.assertTrue(applies_down, "no apply was attempted during the outage")
        self.assertFalse(any(a[3] for a in applies_down),
                         "an apply succeeded while PostgreSQL was down")
        self.assertLess(t_apply_ok - t_up, PG_BACK_BOUND)
        self.assertLess(t_seen - t_acked, PG_SYNC_BOUND)
        for p in (r1.peer, r2.peer):
            self.assertIsNone(p.proc.poll(), f"{p.name} exited\n{p.output[-3000:]}")
        for via in (r1, r2):
            missing = acked - self.identities(via)
            self.assertFalse(missing, f"acknowledged applies lost (via {via.name}): {missing}")
        self.assertEqual(self.audit_ok(r1), self.audit_ok(r2))

    def test_e_replica_stops_answering(self):
        """A replica that is frozen (SIGSTOP: connections stay open, nothing answers), the way a
        paused VM or a black-holing network looks: the agent's first signing call on it runs into
        its per-replica attempt deadline (5 s), fails over and is repeated on the next replica,
        and the Sync stream stuck on the frozen replica moves with it instead of waiting for the
        keepalive (~40 s)."""
        r1, r2, r3 = self.start_replicas(3)
        self.apply(r1, identity_doc("ha-root", "ha/root", 0))
        self.start_agent([r2.agent, r3.agent, r1.agent], "node-e", token_via=r1)
        self.assertEqual(self.wait_health(lambda h: h["synced"], "synced")["server"], r2.agent)
        stub = self.workload()
        self.fetch_jwt(stub, "warm-up")
        os.kill(r2.peer.proc.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, r2.peer.proc.pid, signal.SIGCONT)
        t_stop = time.monotonic()
        stat = Path(f"/proc/{r2.peer.proc.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
            self.assertLess(time.monotonic() - t_stop, 5, "the replica did not stop")
            time.sleep(0.001)
        t_ok, errors = None, []
        for i in range(40):
            if time.monotonic() > t_stop + FROZEN_BOUND + 5:
                break
            t0 = time.monotonic()
            try:
                # Longer than the agent's 5 s attempt on the frozen replica plus its repeat on
                # the next one: the first call itself is served.
                self.fetch_jwt(stub, f"aud-{i}", timeout=FROZEN_BOUND)
                t_ok = time.monotonic()
                break
            except self.grpc.RpcError as e:
                errors.append(f"+{t0 - t_stop:.1f}s {e.code().name}")
        self.assertIsNotNone(t_ok, f"no JWT-SVID after freezing {r2.name}: {errors}\n"
                                   f"{self.agent.output}")
        self.assertGreater(t_ok - t_stop, 4, f"served while {r2.name} was frozen: {errors}")
        self.assertEqual(errors, [], "the agent's repeat on the next replica failed")
        moves = self.wait_failover()
        self.assertEqual(moves[0][:2], (r2.agent, r3.agent), moves)
        self.assertEqual(moves[0][3], "4", moves)  # DEADLINE_EXCEEDED
        # The Sync stream left the frozen replica with the failover.
        self.wait_health(lambda h: h["synced"] and h["server"] == r3.agent, "synced on r3", 5)
        self.agent.wait_for(r"sync\.connected .*server=\"" + re.escape(r3.agent) + '"', 5)
        t_apply = time.monotonic()
        self.apply(r1, identity_doc("ha-e", "ha/e", 0))
        revision = self.store_revision()
        self.wait_health(lambda h: h["revision"] >= revision, f"revision {revision}", 5)
        figure("e.freeze_to_first_jwt_ok", t_ok - t_stop)
        figure("e.apply_to_agent_revision", time.monotonic() - t_apply)
        print(f"HA-FIGURE e.jwt_errors_while_frozen={len(errors)} ({', '.join(errors)})",
              file=sys.stderr, flush=True)
        self.assertLess(t_ok - t_stop, FROZEN_BOUND, self.agent.output + "\n--- r3 ---\n" + r3.peer.output)

    def test_f_ca_rotation_crosses_replicas(self):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        r1, r2 = self.start_replicas(2)
        self.apply(r1, identity_doc("ha-root", "ha/root", 0))
        self.start_agent([r2.agent], "node-f", token_via=r1)
        self.wait_health(lambda h: h["synced"], "synced")
        stub = self.workload()
        roots_seen, _ = self.watch_x509(stub, lambda msg: {
            x509.load_der_x509_certificate(d).fingerprint(hashes.SHA256()).hex()
            for d in helpers.split_der_chain(msg.svids[0].bundle)})
        self.assertEqual(len(roots_seen[-1][1]), 1)

        # Prepared through replica 1: replica 2 learns it from the change feed, not a restart,
        # and its agent's workloads get the new root in their bundle.
        t_start = time.monotonic()
        out = json.loads(self.cli(r1, "ca", "rotate", "--activate-after", "1h", "--json").stdout)
        t_acked = time.monotonic()
        new_root = out["prepared"]["rootSha256"]
        t_seen = None
        deadline = t_acked + 10
        while t_seen is None and time.monotonic() < deadline:
            for t, roots in list(roots_seen):
                if new_root in roots:
                    t_seen = t
                    break
            time.sleep(0.005)
        self.assertIsNotNone(t_seen, f"root {new_root} never reached the workload\n"
                                     f"--- agent ---\n{self.agent.output}")
        figure("f.ca_prepare_r1_to_workload_on_r2_after_ack", t_seen - t_acked)
        figure("f.ca_prepare_r1_to_workload_on_r2_incl_cli", t_seen - t_start)
        self.assertLess(t_seen - t_acked, CA_BOUND)
        on_r2 = self.ca_status(r2)
        self.assertEqual(on_r2["bundleSequence"], self.ca_status(r1)["bundleSequence"])
        self.assertEqual([g["role"] for g in on_r2["generations"]], ["active", "prepared"])
        # A second operator on the other replica sees the pending rotation (one generation).
        again = self.cli(r2, "ca", "rotate", "--activate-after", "1h", check=False)
        self.assertNotEqual(again.returncode, 0, again.stdout)
        self.assertIn("already pending", again.stderr)
        self.assertEqual(len(self.cli(r2, "audit", "--type", "ca.rotate.prepare").stdout
                             .strip().splitlines()), 1)

        # Activation, rescheduled through replica 2 to now: whichever replica's tick takes it,
        # both then sign with the new CA, and a new SVID from the agent on replica 2 is issued
        # by it (replica 2 re-read the set; its own server certificate follows).
        self.cli(r2, "ca", "rotate", "--activate-after", "0s", "--force")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            active = {r.name: next(g["rootSha256"] for g in self.ca_status(r)["generations"]
                                   if g["role"] == "active") for r in (r1, r2)}
            if set(active.values()) == {new_root}:
                break
            time.sleep(0.2)
        self.assertEqual(set(active.values()), {new_root}, f"active roots per replica: {active}")
        self.assertEqual(len(self.cli(r1, "audit", "--type", "ca.rotate.activate").stdout
                             .strip().splitlines()), 1)
        issuers, _ = self.watch_x509(self.workload(), lambda msg: {
            s.spiffe_id: x509.load_der_x509_certificate(
                helpers.split_der_chain(s.x509_svid)[0]).issuer.rfc4514_string()
            for s in msg.svids})
        status = self.cli(r2, "ca", "status", "--json").stdout
        self.apply(r1, identity_doc("ha-f2", "ha/f2", 0))
        after = f"spiffe://{TD}/ha/f2"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(after in ids for _, ids in issuers):
            time.sleep(0.01)
        got = [ids for _, ids in issuers if after in ids]
        self.assertTrue(got, f"{after} never reached the workload\n{self.agent.output}")
        old_issuer = issuers[0][1][f"spiffe://{TD}/ha/root"]
        self.assertNotEqual(got[-1][after], old_issuer,
                            f"the SVID issued after activation is still from the old CA ({status})")

    def test_g_first_start_with_two_trust_domains(self):
        """Two replicas started at the same moment on the empty database with different
        --trust-domain flags (an operator error): the one that created the CA decides; the other
        refuses to serve, naming both; restarts follow the CA, whatever either wrote first."""
        kek = self.dir / "kek"
        with open(kek, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(kek, 0o600)

        def argv(i: int, td: str) -> list:
            return [self.sigil, "server", "--data-dir", self.dir / f"r{i}", "--store", self.url,
                    "--trust-domain", td, "--kek-file", kek, "--admin-listen", "127.0.0.1:0",
                    "--agent-listen", "127.0.0.1:0", "--metrics-listen", "off",
                    "--ready-file", self.dir / f"r{i}.ready"]

        peers = [Peer(argv(1, "one.example"), "replica-1"), Peer(argv(2, "two.example"), "replica-2")]
        self.peers.extend(peers)
        deadline = time.monotonic() + 60
        exited: dict[int, int] = {}
        while time.monotonic() < deadline and len(exited) < 1:
            for i, p in enumerate(peers, 1):
                if p.proc.poll() is not None:
                    exited[i] = p.proc.returncode
            time.sleep(0.05)
        self.assertEqual(len(exited), 1, "exactly one replica must refuse")
        loser = next(iter(exited))
        winner = 3 - loser
        self.assertNotEqual(exited[loser], 0)
        # Refused either by the trust domain stored first or by the CA's, naming both.
        self.assertIn("one.example", peers[loser - 1].output)
        self.assertIn("two.example", peers[loser - 1].output)
        winner_ready = helpers.wait_ready_file(peers[winner - 1], self.dir / f"r{winner}.ready",
                                               "winner", 30)
        self.assertTrue(peers[winner - 1].proc.poll() is None)
        winner_td = "one.example" if winner == 1 else "two.example"
        state = json.loads(self.pg.psql(
            "SELECT spec_json FROM resources WHERE kind = 'CaState'", self.db) or "{}")
        self.assertEqual(state.get("trustDomain"), winner_td, state)
        # The loser again, with its wrong flag: refused up front, naming the CA's trust domain.
        again = run(argv(loser, "one.example" if loser == 1 else "two.example"), check=False,
                    timeout=30)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn(f"belongs to trust domain {winner_td}", again.stdout + again.stderr)
        # The winner restarted without the flag still serves its trust domain.
        peers[winner - 1].proc.terminate()
        self.assertEqual(peers[winner - 1].wait_exit(20), 0, peers[winner - 1].output)
        restart = argv(winner, winner_td)
        restart.remove("--trust-domain")
        restart.remove(winner_td)
        (self.dir / f"r{winner}.ready").unlink()
        p = Peer(restart, "winner-again")
        self.peers.append(p)
        helpers.wait_ready_file(p, self.dir / f"r{winner}.ready", "winner again", 30)
        self.assertIsNotNone(winner_ready)

    def test_d_concurrent_audit_appends_from_replicas(self):
        replicas = self.start_replicas(3)
        base = int(self.pg.psql("SELECT count(*) FROM audit", self.db))
        ops_per_loop = 8
        load = Load()
        results: list[tuple[str, str, int, str]] = []  # kind, name, rc, stderr

        def apply_loop(r: Replica) -> None:
            for k in range(ops_per_loop):
                name = f"ha-d-{r.name}-{k}"
                p = self.apply(r, identity_doc(name, f"ha/d/{r.name}/{k}", 5000 + k),
                               check=False)
                with load.lock:
                    results.append(("apply", name, p.returncode, p.stderr))

        def token_loop(r: Replica) -> None:
            for k in range(ops_per_loop):
                name = f"node-{r.name}-{k}"
                p = self.cli(r, "token", "create", "--node", name, check=False)
                with load.lock:
                    results.append(("token", name, p.returncode, p.stderr))

        t0 = time.monotonic()
        for r in replicas:
            load.spawn(lambda r=r: apply_loop(r))
            load.spawn(lambda r=r: token_loop(r))
        for t in load.threads:
            t.join(120)
            self.assertFalse(t.is_alive(), "a loop did not finish")
        elapsed = time.monotonic() - t0
        failed = [r for r in results if r[2] != 0]
        self.assertEqual(failed, [])
        self.assertEqual(len(results), 2 * ops_per_loop * len(replicas))

        rows = self.pg.psql("SELECT seq, type, node FROM audit ORDER BY seq", self.db).split("\n")
        rows = [r.split("|") for r in rows if r]
        seqs = [int(r[0]) for r in rows]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)), "audit seq has a gap")
        self.assertEqual(self.pg.psql("SELECT value FROM meta WHERE key = 'audit_seq'",
                                      self.db).strip(), str(len(seqs)))
        applied = [r for r in rows[base:] if r[1] == "resource.apply"]
        tokens = [r[2] for r in rows[base:] if r[1] == "token.create"]
        self.assertEqual(len(applied), ops_per_loop * len(replicas))
        self.assertEqual(sorted(tokens), sorted(r[1] for r in results if r[0] == "token"))
        counts = {self.audit_ok(r) for r in replicas}
        self.assertEqual(counts, {len(seqs)})
        figure("d.parallel_ops_elapsed", elapsed)
        print(f"HA-FIGURE d.audit_records={len(seqs)} d.ops={len(results)}", file=sys.stderr,
              flush=True)


if __name__ == "__main__":
    helpers.main()
