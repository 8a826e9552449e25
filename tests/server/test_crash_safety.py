"""`sigil server` crash safety: SIGKILL mid-apply, restart, nothing acknowledged is lost.

Each round starts the real server on the same data directory, drives a bounded stream of
`sigil apply` calls (one distinct WorkloadIdentity wi-<n> each; acknowledged only when the CLI
exits 0), SIGKILLs the server after a random short delay while the stream is running, and
restarts it. After every restart:
  * every acknowledged WorkloadIdentity is present (`sigil get WorkloadIdentity -o json`);
  * nothing is present that was never attempted (unacknowledged in-flight applies may or may
    not be there);
  * `sqlite3 DATA/sigil.db 'PRAGMA integrity_check'` prints ok;
  * `sigil audit verify` succeeds.
Bounded: ROUNDS rounds, each with at most MAX_APPLIES_PER_ROUND applies, and an overall
deadline.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "interop"))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402

TD = "example.org"
ROUNDS = 20
MAX_APPLIES_PER_ROUND = 40
APPLY_TIMEOUT = 10.0  # one CLI call
TOTAL_BUDGET = 150.0  # seconds for the whole loop (ctest TIMEOUT is 240)


def wi_doc(n: int) -> str:
    return ("apiVersion: sigil.dev/v1alpha1\nkind: WorkloadIdentity\n"
            f"metadata: {{name: wi-{n}}}\n"
            f"spec:\n  spiffeId: spiffe://{TD}/crash/wi-{n}\n"
            f"  selectors: [\"unix:uid:{1000 + n}\"]\n")


class CrashSafetyTest(helpers.InteropCase):
    TOOLS = ("sqlite3",)

    def setUp(self) -> None:
        super().setUp()
        self.data = self.tmp / "data"
        self.peers: list[Peer] = []
        self.addCleanup(self._kill_all)

    def _kill_all(self) -> None:
        for p in self.peers:
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - best effort in cleanup
                pass

    def start_server(self, first: bool) -> Peer:
        ready = self.tmp / "ready"
        if ready.exists():
            ready.unlink()
        argv = [self.sigil.bin, "server", "--data-dir", self.data,
                "--admin-listen", "127.0.0.1:0", "--agent-listen", "off", "--metrics-listen", "off",
                "--ready-file", ready]
        if first:
            argv += ["--trust-domain", TD]
        peer = Peer(argv, "sigil-server")
        self.peers.append(peer)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if peer.proc.poll() is not None or time.monotonic() > deadline:
                peer.kill()
                raise AssertionError(f"server did not become ready\n{peer.output}")
            time.sleep(0.02)
        addr = dict(line.split("=", 1) for line in ready.read_text().split())
        self.url = "https://" + addr["admin"]
        return peer

    def cli_argv(self, *args: object) -> list[str]:
        return [str(a) for a in (self.sigil.bin, *args, "--server", self.url,
                                 "--credentials", self.data / "admin")]

    def cli(self, *args: object, check: bool = True) -> subprocess.CompletedProcess:
        return run(self.cli_argv(*args), check=check)

    def check_state(self, acked: set[int], attempted: set[int], server: Peer, rnd: int) -> None:
        items = json.loads(self.cli("get", "WorkloadIdentity", "-o", "json").stdout)
        present = {it["metadata"]["name"] for it in items}
        want = {f"wi-{n}" for n in acked}
        allowed = {f"wi-{n}" for n in attempted}
        missing = want - present
        self.assertFalse(missing, f"round {rnd}: acknowledged applies lost: {sorted(missing)}\n"
                                  f"--- server log ---\n{server.output}")
        extra = present - allowed
        self.assertFalse(extra, f"round {rnd}: resources never applied: {sorted(extra)}")
        for it in items:
            n = int(it["metadata"]["name"].removeprefix("wi-"))
            self.assertEqual(it["spec"]["spiffeId"], f"spiffe://{TD}/crash/wi-{n}")
        ic = run(["sqlite3", self.data / "sigil.db", "PRAGMA integrity_check"]).stdout.strip()
        self.assertEqual(ic, "ok", f"round {rnd}: integrity_check: {ic}")
        verify = self.cli("audit", "verify", check=False)
        self.assertEqual(verify.returncode, 0,
                         f"round {rnd}: audit verify failed\n{verify.stdout}\n{verify.stderr}")
        self.assertIn("ok", verify.stdout)

    def test_sigkill_mid_apply_stream(self):
        rng = random.Random()
        seed = rng.randrange(1 << 30)
        rng.seed(seed)
        print(f"crash_safety seed={seed}", file=sys.stderr)
        acked: set[int] = set()
        attempted: set[int] = set()
        next_n = 0
        killed_mid_stream = 0
        start = time.monotonic()
        server = self.start_server(first=True)
        docs_dir = self.path("docs")
        docs_dir.mkdir(exist_ok=True)

        for rnd in range(ROUNDS):
            self.assertLess(time.monotonic() - start, TOTAL_BUDGET, "time budget exhausted")
            stop = threading.Event()
            lock = threading.Lock()
            errors: list[str] = []
            first_n = next_n
            next_n += MAX_APPLIES_PER_ROUND

            def stream(first_n: int = first_n) -> None:
                for n in range(first_n, first_n + MAX_APPLIES_PER_ROUND):
                    if stop.is_set():
                        return
                    f = docs_dir / f"wi-{n}.yaml"
                    f.write_text(wi_doc(n))
                    with lock:
                        attempted.add(n)
                    try:
                        proc = subprocess.run(self.cli_argv("apply", "-f", f),
                                              capture_output=True, text=True,
                                              timeout=APPLY_TIMEOUT, stdin=subprocess.DEVNULL)
                    except subprocess.TimeoutExpired:
                        with lock:
                            errors.append(f"apply wi-{n} timed out")
                        return
                    if proc.returncode == 0:
                        if f"wi-{n}" not in proc.stdout:
                            with lock:
                                errors.append(f"apply wi-{n}: unexpected output {proc.stdout!r}")
                        with lock:
                            acked.add(n)
                    # A non-zero exit is expected once the server is gone; stop the stream.
                    else:
                        return

            t = threading.Thread(target=stream, daemon=True)
            t.start()
            time.sleep(rng.uniform(0.05, 0.6))
            was_running = t.is_alive()
            server.proc.kill()  # SIGKILL
            server.wait_exit(timeout=10)
            stop.set()
            t.join(timeout=APPLY_TIMEOUT + 5)
            self.assertFalse(t.is_alive(), "apply stream did not stop")
            self.assertFalse(errors, "\n".join(errors))
            if was_running:
                killed_mid_stream += 1

            server = self.start_server(first=False)
            with lock:
                self.check_state(set(acked), set(attempted), server, rnd)

        self.assertGreater(len(acked), 0, "no apply was ever acknowledged")
        self.assertGreater(killed_mid_stream, ROUNDS // 2,
                           "the server was rarely killed while applies were in flight")
        print(f"crash_safety: rounds={ROUNDS} acked={len(acked)} attempted={len(attempted)} "
              f"killed_mid_stream={killed_mid_stream} "
              f"elapsed={time.monotonic() - start:.1f}s", file=sys.stderr)
        server.proc.kill()
        server.wait_exit(timeout=10)

    def test_sigterm_is_a_clean_exit(self):
        # With --agent-listen off the agent API's change feed still runs; it used to read the
        # control plane after shutdown had freed it (a segfault at every SIGTERM).
        server = self.start_server(first=True)
        run(self.cli_argv("apply", "-f", "-"), input=f"apiVersion: sigil.dev/v1alpha1\n"
                 f"kind: WorkloadIdentity\nmetadata: {{name: term}}\n"
                 f"spec: {{spiffeId: spiffe://{TD}/term, selectors: [\"unix:uid:0\"]}}\n")
        server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait_exit(timeout=15), 0, server.output)
        self.assertIn("server.stopped", server.output)


if __name__ == "__main__":
    helpers.main()
