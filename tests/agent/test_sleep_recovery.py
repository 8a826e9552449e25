"""An agent whose host "slept" past every expiry recovers by itself (issue 7).

The real server (node SVIDs of 10 s) and a real agent serving a WorkloadIdentity of ttl 10 s.
The agent is frozen with SIGSTOP for 16 s, past the expiry of its node SVID and of the workload
SVID it holds (the host slept), then resumed with SIGCONT:

- grace on (default 72h): the agent rejoins with its expired node SVID's key (log `node.rejoin`,
  server audit `node.rejoin` naming the consumed serial), and a workload (this process, uid 0,
  Python grpcio Workload API client) fetches a fresh, unexpired X.509-SVID with a new serial,
  also on a stream opened before the sleep. The agent reaches the server through a TCP relay
  that silently drops the connections open during the sleep (what a NAT or a restarted peer
  does to a sleeping host): the Sync stream on the dead connection is noticed by the keepalive
  pings, and Sync reconnects and delivers changes again.
- `--node-rejoin-grace 0s` (a second server/agent pair): the agent logs ONE `node.svid.expired`
  error naming the fix (`sigil token create --node ...`) and why rejoin failed; the server
  audited `node.rejoin.denied` with the reason.

Run: SIGIL_BIN=build/release/apps/sigil/sigil /usr/bin/python3 tests/agent/test_sleep_recovery.py
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import sys
import threading
import tempfile
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

TD = "example.org"
PROTO = ROOT / "src" / "proto" / "workload.proto"
MD = (("workload.spiffe.io", "true"),)
SLEEP_S = 16  # > node SVID ttl (10 s) and workload SVID ttl (10 s)
WORKLOAD_ID = f"spiffe://{TD}/test/sleeper"

RESOURCES = f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: sleeper}}
spec:
  spiffeId: {WORKLOAD_ID}
  selectors: ["unix:uid:0"]
  ttl: 10s
"""


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class FreezableRelay:
    """TCP relay on 127.0.0.1 to `target` (HOST:PORT). freeze() makes every connection open at
    that moment silently stop relaying (bytes are read and dropped, nothing is closed): a
    connection that died while the host slept. Later connections relay normally."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.conns: list[dict] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            conn = {"frozen": False, "socks": (client, upstream)}
            with self.lock:
                self.conns.append(conn)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, conn), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, conn: dict) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not conn["frozen"]:
                    dst.sendall(data)
        except OSError:
            pass
        for sock in conn["socks"]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def freeze(self) -> int:
        with self.lock:
            for conn in self.conns:
                conn["frozen"] = True
            return len(self.conns)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for conn in self.conns:
                for sock in conn["socks"]:
                    sock.close()


class Pair:
    """One server (its own data directory and ports) and one agent joined to it."""

    def __init__(self, tmp: Path, name: str, sigil: str, server_flags: list[str],
                 relay: bool = False) -> None:
        self.tmp = tmp / name
        self.tmp.mkdir()
        self.sigil = sigil
        self.node = f"sleeper-{name}"
        self.peers: list[Peer] = []
        self.relay: FreezableRelay | None = None
        self.use_relay = relay
        try:
            self._start(name, server_flags)
        except BaseException:
            self.kill()
            raise

    def _start(self, name: str, server_flags: list[str]) -> None:
        sigil = self.sigil
        self.server_data = self.tmp / "server"
        ready = self.tmp / "server.ready"
        self.server = self._peer([sigil, "server", "--data-dir", self.server_data,
                                  "--trust-domain", TD, "--admin-listen", "127.0.0.1:0",
                                  "--agent-listen", "127.0.0.1:0", "--metrics-listen", "off",
                                  "--node-svid-ttl", "10s", "--log-format", "json",
                                  "--ready-file", ready, *server_flags], f"server-{name}")
        addr = helpers.wait_ready_file(self.server, ready, f"server {name}", timeout=20)
        self.admin_url = "https://" + addr["admin"]
        self.cli("apply", "-f", "-", input=RESOURCES)
        token = re.search(r"SJT1\.[^\s]+", self.cli("token", "create", "--node", self.node).stdout)
        assert token, "no token printed"
        token_file = self.tmp / "token"
        token_file.write_text(token.group(0) + "\n")
        os.chmod(token_file, 0o600)
        self.agent_data = self.tmp / "agent"
        self.socket = self.tmp / "run" / "agent.sock"
        ready = self.tmp / "agent.ready"
        agent_server = addr["agent"]
        if self.use_relay:
            self.relay = FreezableRelay(addr["agent"])
            agent_server = self.relay.address
        self.agent = self._peer([sigil, "agent", "--server", agent_server, "--data-dir",
                                 self.agent_data, "--socket", self.socket, "--node-name",
                                 self.node, "--health-listen", "127.0.0.1:0", "--log-format",
                                 "json", "--ready-file", ready, "--creds-mount", "",
                                 "--join-token-file", token_file], f"agent-{name}")
        self.health = helpers.wait_ready_file(self.agent, ready, f"agent {name}",
                                              timeout=20)["health"]

    def _peer(self, argv: list, name: str) -> Peer:
        peer = Peer(argv, name)
        self.peers.append(peer)
        return peer

    def kill(self) -> None:
        for p in reversed(self.peers):
            if p.proc.poll() is None:
                try:
                    p.proc.send_signal(signal.SIGCONT)  # never leave a stopped process behind
                except ProcessLookupError:
                    pass
            p.kill()
        if self.relay:
            self.relay.close()

    def cli(self, *args, input=None, check=True):
        return run([self.sigil, *args, "--server", self.admin_url, "--credentials",
                    self.server_data / "admin"], input=input, check=check)

    def audit(self, record_type: str) -> list[dict]:
        records = json.loads(self.cli("audit", "--json", "--type", record_type,
                                      "--node", self.node).stdout)
        for r in records:
            if isinstance(r.get("details"), str):
                r["details"] = json.loads(r["details"])
        return records

    def health_json(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://{self.health}/healthz", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def wait_health(self, what: str, pred, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            try:
                last = self.health_json()
                if pred(last):
                    return last
            except OSError as e:
                last = {"error": str(e)}
            time.sleep(0.2)
        raise AssertionError(f"agent {what} not within {timeout} s (last /healthz {last})\n"
                             f"{self.agent.output}")

    def agent_events(self, since: int = 0) -> list[dict]:
        """The agent's JSON log lines from byte offset `since` of its output."""
        out = []
        for line in self.agent.output[since:].splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    def wait_event(self, event: str, since: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.agent_events(since):
                if e.get("event") == event:
                    return e
            time.sleep(0.2)
        raise AssertionError(f"agent never logged {event} within {timeout} s\n"
                             f"{self.agent.output[since:]}")

    def node_leaf(self):
        from cryptography import x509
        pem = (self.agent_data / "node.crt").read_bytes()
        return x509.load_pem_x509_certificate(helpers.split_pem_certs(pem)[0])

    def sleep_agent(self, seconds: float) -> None:
        """The host sleeps: the agent is frozen (no thread runs, its sockets stay open)."""
        self.agent.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            self.agent.proc.send_signal(signal.SIGCONT)


def leaf_of(svid):
    from cryptography import x509
    return x509.load_der_x509_certificate(helpers.split_der_chain(svid.x509_svid)[0])


def not_after(cert) -> datetime.datetime:
    return helpers.utc(cert.not_valid_after)


class SleepRecoveryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._td = tempfile.TemporaryDirectory(prefix="sigil-sleep-test-")
        cls.tmp = Path(cls._td.name)
        cls.pairs: list[Pair] = []
        try:
            cls.mods = helpers.require_modules()
            cls.grpc = cls.mods["grpc"]
            cls.sigil = helpers.sigil_bin()
            cls.pb, cls.pb_grpc = helpers.compile_proto(PROTO, cls.tmp / "stubs")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for p in cls.pairs:
            p.kill()
        cls._td.cleanup()

    def pair(self, name: str, server_flags: list[str], relay: bool = False) -> Pair:
        p = Pair(self.tmp, name, self.sigil, server_flags, relay)
        self.pairs.append(p)
        return p

    def stub(self, pair: Pair):
        channel = self.grpc.insecure_channel(f"unix:{pair.socket}")
        self.addCleanup(channel.close)
        return self.pb_grpc.SpiffeWorkloadAPIStub(channel)

    def fetch_leaf(self, pair: Pair):
        stream = self.stub(pair).FetchX509SVID(self.pb.X509SVIDRequest(), metadata=MD,
                                               timeout=15)
        first = next(iter(stream))
        stream.cancel()
        svids = [s for s in first.svids if s.spiffe_id == WORKLOAD_ID]
        self.assertEqual(len(svids), 1, [s.spiffe_id for s in first.svids])
        return leaf_of(svids[0])

    def test_1_rejoins_after_the_host_slept(self):
        p = self.pair("grace", [], relay=True)
        p.wait_health("synced", lambda h: h.get("synced"), 20)
        before = self.fetch_leaf(p)
        # A Workload API stream that stays open through the sleep.
        stream = self.stub(p).FetchX509SVID(self.pb.X509SVIDRequest(), metadata=MD, timeout=150)
        it = iter(stream)
        self.addCleanup(stream.cancel)
        next(it)
        mark = len(p.agent.output)

        p.agent.proc.send_signal(signal.SIGSTOP)
        try:
            node_before = p.node_leaf()  # stable: the agent is frozen
            self.assertGreaterEqual(p.relay.freeze(), 1)  # the Sync stream's connection dies
            time.sleep(SLEEP_S)
        finally:
            p.agent.proc.send_signal(signal.SIGCONT)
        woke = time.monotonic()
        self.assertLess(not_after(node_before), now_utc(), "the node SVID did not expire")
        self.assertLess(not_after(before), now_utc(), "the workload SVID did not expire")

        rejoin = p.wait_event("node.rejoin", mark, 20)
        elapsed = time.monotonic() - woke
        print(f"\nnode.rejoin {elapsed:.1f} s after SIGCONT: {rejoin}", file=sys.stderr)
        self.assertLess(elapsed, 10, "the rejoin should be the first thing after waking")
        node_after = p.node_leaf()
        self.assertNotEqual(node_after.serial_number, node_before.serial_number)
        self.assertGreater(not_after(node_after), now_utc())
        self.assertEqual(rejoin["serial"], format(node_after.serial_number, "x"))
        self.assertGreaterEqual(rejoin["expired_for_s"], 0)

        # A fresh, unexpired workload SVID with a new serial at once: on a new call ...
        deadline = time.monotonic() + 15
        while True:
            try:
                fresh = self.fetch_leaf(p)
                if fresh.serial_number != before.serial_number and not_after(fresh) > now_utc():
                    break
            except self.grpc.RpcError as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no SVID after the rejoin: {e}\n{p.agent.output}")
            self.assertLess(time.monotonic(), deadline, "no fresh SVID after the rejoin")
            time.sleep(0.3)
        print(f"fresh workload SVID {time.monotonic() - woke:.1f} s after SIGCONT",
              file=sys.stderr)
        self.assertGreater(helpers.utc(fresh.not_valid_before),
                           helpers.utc(before.not_valid_before))
        # ... and pushed on the stream opened before the sleep.
        deadline = time.monotonic() + 15
        while True:
            msg = next(it)
            leaves = [leaf_of(s) for s in msg.svids if s.spiffe_id == WORKLOAD_ID]
            if leaves and leaves[0].serial_number != before.serial_number and \
                    not_after(leaves[0]) > now_utc():
                break
            self.assertLess(time.monotonic(), deadline, "the open stream got no fresh SVID")

        # Sync notices its dead connection (keepalive: a ping every 30 s, 10 s to answer) and
        # resumes on a new one: healthy, and a change made now reaches the agent.
        deadline = time.monotonic() + 60
        while True:
            names = [e.get("event") for e in p.agent_events(mark)]
            if "sync.disconnected" in names and \
                    "sync.connected" in names[names.index("sync.disconnected"):]:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"Sync did not come back\n{p.agent.output[mark:]}")
            time.sleep(0.2)
        print(f"Sync back {time.monotonic() - woke:.1f} s after SIGCONT", file=sys.stderr)
        health = p.wait_health("healthy and synced",
                               lambda h: h.get("synced") and h.get("node_svid_valid"), 20)
        p.cli("apply", "-f", "-", input=RESOURCES.replace("name: sleeper", "name: marker")
              .replace(WORKLOAD_ID, f"spiffe://{TD}/test/marker"))
        p.wait_health("past the marker revision",
                      lambda h: h.get("revision", 0) > health["revision"], 15)

        # The server's audit: one rejoin that consumed the serial the agent held.
        records = p.audit("node.rejoin")
        self.assertEqual(len(records), 1, records)
        details = records[0]["details"]
        self.assertEqual(details["previous_serial"], format(node_before.serial_number, "x"))
        self.assertEqual(details["serial"], rejoin["serial"])
        self.assertEqual(p.audit("node.rejoin.denied"), [])
        events = {e.get("event") for e in p.agent_events(mark)}
        self.assertNotIn("node.svid.expired", events)

    def test_2_grace_zero_names_the_fix(self):
        p = self.pair("nograce", ["--node-rejoin-grace", "0s"])
        p.wait_health("synced", lambda h: h.get("synced"), 20)
        self.fetch_leaf(p)
        mark = len(p.agent.output)
        p.sleep_agent(SLEEP_S)

        expired = p.wait_event("node.svid.expired", mark, 20)
        self.assertEqual(expired["level"], "error")
        self.assertIn(f"sigil token create --node {p.node}", expired["fix"])
        self.assertIn("refused to rejoin", expired["rejoin"])
        self.assertIn("--node-rejoin-grace", expired["rejoin"])
        denied = p.audit("node.rejoin.denied")
        self.assertGreaterEqual(len(denied), 1)
        self.assertIn("disabled", denied[0]["details"]["reason"])
        self.assertEqual(p.audit("node.rejoin"), [])
        # Once, not per retry; the agent keeps running and serves no expired SVID.
        time.sleep(3)
        events = [e.get("event") for e in p.agent_events(mark)]
        self.assertEqual(events.count("node.svid.expired"), 1, events)
        self.assertNotIn("node.rejoin", events)
        self.assertIsNone(p.agent.proc.poll(), p.agent.output)
        try:
            leaf = self.fetch_leaf(p)
        except self.grpc.RpcError:
            pass
        else:
            self.assertGreater(not_after(leaf), now_utc(), "an expired SVID was served")


if __name__ == "__main__":
    unittest.main()
