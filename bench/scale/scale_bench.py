"""Control plane at scale: the real `sigil server` with many WorkloadIdentity objects, and
sigil_scale_agents (bench/scale/scale_agents.cc) simulating N agents in one process.

Builds nothing. Usually run through bench/scale/run.sh:

    bench/scale/run.sh --build-dir build/h-scale [--agents 500,5000] [--identities 50000] ...

For each N of --agents, on a fresh server (every wait bounded in time):
  1. a temp directory (removed at the end, also on failure or SIGINT/SIGTERM/SIGHUP); with
     --store postgres a throwaway PostgreSQL 15 cluster in it (initdb, pg_ctl; Unix socket only);
     the server on 127.0.0.1 ephemeral ports (--ready-file), metrics on an ephemeral port;
  2. --identities WorkloadIdentity documents applied with `sigil apply -f` in batches of
     --batch (timed);
  3. sigil_scale_agents: N tokens, N joins, N channels + Sync streams (snapshot), an idle window
     of --measure-seconds (server CPU from /proc/PID/stat, RSS, sigil_store_queries_total),
     --rounds policy changes (`sigil apply` of one Service; time until every agent has it);
  4. the server's peak RSS; server (and PostgreSQL) stopped.
A watchdog kills the server when its RSS passes --max-server-rss-mib (the machine is shared)
and the run then fails naming it. A summary table with one column per N ends the output.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TD = "scale.example"


def die(msg: str) -> None:
    raise SystemExit(f"scale_bench: {msg}")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Procs:
    """Child processes started here, stopped in reverse order (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.items: list[subprocess.Popen] = []

    def start(self, argv: list, log: Path, **kw) -> subprocess.Popen:
        with open(log, "ab") as out:
            p = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, **kw)
        self.items.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 15) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if p in self.items:
            self.items.remove(p)

    def stop_all(self) -> None:
        for p in reversed(list(self.items)):
            self.stop(p)


class PgCluster:
    """A throwaway PostgreSQL 15 cluster in `dir` (Unix socket only), run as `postgres` when we
    are root (PostgreSQL refuses root), as src/store/pg_test_cluster.cc does for the tests."""

    def __init__(self, dir: Path, bindir: Path) -> None:
        self.dir, self.bindir = dir, bindir
        self.data = dir / "data"
        self.as_postgres = os.geteuid() == 0
        self.started = False

    def _run(self, argv: list[str], timeout: float) -> None:
        def demote() -> None:
            if self.as_postgres:
                pw = pwd.getpwnam("postgres")
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
        log = self.dir / "pg_cmd.log"
        with open(log, "ab") as out:
            r = subprocess.run([str(self.bindir / argv[0]), *argv[1:]], stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=demote, timeout=timeout,
                               env={"PATH": "/usr/bin:/bin", "LC_ALL": "C",
                                    "HOME": str(self.dir)})
        if r.returncode != 0:
            die(f"PostgreSQL: {argv[0]} failed ({r.returncode}):\n{tail(log)}")

    def start(self) -> str:
        for tool in ("initdb", "pg_ctl", "createdb"):
            if not os.access(self.bindir / tool, os.X_OK):
                die(f"--store postgres: {self.bindir / tool} missing (postgresql-15)")
        self.dir.mkdir(mode=0o700)
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--locale=C", "-N"], 120)
        opts = (f"-k {self.dir} -c listen_addresses='' -c shared_buffers=128MB "
                "-c max_connections=200 -c fsync=on")
        self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                   "-t", "60", "-o", opts, "start"], 90)
        self.started = True
        self._run(["createdb", "-h", str(self.dir), "-U", "postgres", "sigil"], 60)
        return f"postgresql:///sigil?host={self.dir}&user=postgres"

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if self.started:
            self.started = False
            try:
                self._run(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60",
                           "stop"], 90)
            except SystemExit as e:
                print(f"scale_bench: {e}", file=sys.stderr)


def identities_yaml(first: int, count: int) -> str:
    """`count` WorkloadIdentity documents: a uid and an executable path each, 100 per team."""
    docs = []
    for i in range(first, first + count):
        team = i // 100
        docs.append(
            "apiVersion: sigil.dev/v1alpha1\nkind: WorkloadIdentity\n"
            f"metadata: {{name: app-{i}}}\n"
            f"spec:\n  spiffeId: spiffe://{TD}/team-{team}/app-{i}\n"
            f"  selectors: [\"unix:uid:{10000 + i}\", \"unix:path:/srv/team-{team}/app-{i}/bin/app\"]\n")
    return "---\n".join(docs)


RESULT_RE = re.compile(r"^RESULT (.*)$", re.M)


def parse_results(text: str) -> list[dict[str, str]]:
    return [dict(f.split("=", 1) for f in m.group(1).split()) for m in RESULT_RE.finditer(text)]


def run_one(args, build: Path, n: int, tmp: Path, procs: Procs) -> dict:
    sigil = build / "apps" / "sigil" / "sigil"
    gen = build / "bench" / "sigil_scale_agents"
    base = tmp / f"n{n}"
    base.mkdir()
    out: dict = {"n": n}

    store_args: list[str] = []
    pg = None
    if args.store == "postgres":
        # The cluster runs as `postgres` (we are root): it must traverse, not list, our dirs.
        os.chmod(tmp, 0o711)
        os.chmod(base, 0o711)
        pg = PgCluster(base / "pg", Path(args.pg_bindir))
        store_args = ["--store", pg.start()]
    data, log, ready = base / "server", base / "server.log", base / "server.ready"
    server = procs.start([sigil, "server", "--data-dir", data, "--trust-domain", TD,
                          "--admin-listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0",
                          "--metrics-listen", "127.0.0.1:0", "--ready-file", ready, *store_args],
                         log)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                die(f"server did not become ready; log:\n{tail(log)}")
            time.sleep(0.05)
        addr = dict(line.split("=", 1) for line in ready.read_text().split())
        admin = ["--server", "https://" + addr["admin"], "--credentials", str(data / "admin")]

        # Watchdog: the machine is shared; a server that balloons is stopped, and the run fails.
        stop_watch = threading.Event()
        peak = {"rss": 0, "killed": False}

        def watch() -> None:
            while not stop_watch.wait(0.1):
                r = rss_kb(server.pid)
                peak["rss"] = max(peak["rss"], r)
                if r > args.max_server_rss_mib * 1024:
                    peak["killed"] = True
                    server.kill()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        # WorkloadIdentity objects, in batches through the real CLI.
        t0 = time.monotonic()
        for first in range(0, args.identities, args.batch):
            count = min(args.batch, args.identities - first)
            f = base / "identities.yaml"
            f.write_text(identities_yaml(first, count))
            r = subprocess.run([str(sigil), "apply", "-f", str(f), *admin], capture_output=True,
                               text=True, timeout=300)
            if r.returncode != 0:
                die(f"sigil apply of identities {first}..{first + count - 1} failed:\n"
                    f"{r.stdout[-2000:]}{r.stderr[-2000:]}")
        f.unlink(missing_ok=True)
        out["apply_s"] = time.monotonic() - t0
        print(f"\n== {n} agents, {args.identities} WorkloadIdentity objects "
              f"({args.store} store); load average {loadavg()}", flush=True)
        print(f"identities: {args.identities} applied with `sigil apply -f` in batches of "
              f"{args.batch} in {out['apply_s']:.2f} s; server RSS {rss_kb(server.pid) // 1024} "
              "MiB", flush=True)

        argv = [gen, "--agents", n, "--server", addr["agent"], "--admin", "https://" +
                addr["admin"], "--credentials", data / "admin", "--sigil", sigil,
                "--server-pid", server.pid, "--metrics", addr["metrics"], "--work-dir", base,
                "--measure-seconds", args.measure_seconds, "--rounds", args.rounds,
                "--connect-parallel", args.connect_parallel, "--join-parallel",
                args.join_parallel, "--phase-timeout", args.phase_timeout]
        if pg is not None:
            argv += ["--db-pid", pg.pid()]
        argv = [str(a) for a in argv]
        print("$ " + " ".join(argv), flush=True)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # The generator bounds each phase itself; this bounds it as a whole (a hung child).
        limit = (3 * args.phase_timeout + args.measure_seconds + args.rounds * 120 + 120)
        timer = threading.Timer(limit, p.kill)
        timer.start()
        lines: list[str] = []
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line)
            if not line.startswith("RESULT "):
                print("  " + line, end="", flush=True)
        rc = p.wait()
        timed_out = not timer.is_alive()
        timer.cancel()
        if timed_out and rc != 0:
            die(f"sigil_scale_agents did not finish within {limit:.0f} s; killed it")
        stop_watch.set()
        watcher.join()
        out["results"] = parse_results("".join(lines))
        out["server_hwm_kb"] = hwm_kb(server.pid)
        out["peak_rss_kb"] = peak["rss"]
        if peak["killed"]:
            die(f"server RSS passed --max-server-rss-mib {args.max_server_rss_mib}; killed it")
        if server.poll() is not None:
            die(f"server exited ({server.returncode}); log:\n{tail(log)}")
        if rc != 0:
            die(f"sigil_scale_agents exited {rc}; server log tail:\n{tail(log, 10)}")
        print(f"  server peak RSS (VmHWM) {out['server_hwm_kb'] // 1024} MiB", flush=True)
        return out
    finally:
        procs.stop(server)
        if pg is not None:
            pg.stop()


def summary(args, runs: list[dict]) -> None:
    def get(run: dict, phase: str, key: str, rnd: str | None = None) -> str | None:
        for r in run["results"]:
            if r.get("phase") == phase and (rnd is None or r.get("round") == rnd):
                return r.get(key)
        return None

    def num(v: str | None, scale: float = 1, fmt: str = "{:.2f}") -> str:
        try:
            return fmt.format(float(v) / scale)
        except (TypeError, ValueError):
            return "-"

    def rounds(run: dict, key: str) -> str:
        vals = [float(r[key]) for r in run["results"] if r.get("phase") == "round" and key in r]
        if not vals:
            return "-"
        vals.sort()
        return f"{vals[len(vals) // 2]:.1f} ({vals[0]:.1f}-{vals[-1]:.1f})"

    rows = [
        ("apply of the identities, s", lambda r: f"{r['apply_s']:.2f}"),
        ("join tokens (admin API), s", lambda r: num(get(r, "tokens", "secs"))),
        ("joins (first contact + CSR + Join), s", lambda r: num(get(r, "joins", "secs"))),
        ("connect: all snapshots received, s", lambda r: num(get(r, "connect", "secs"))),
        ("  tokens + joins + connect, s", lambda r: num(get(r, "connect", "total_s"))),
        ("  snapshot size, MiB", lambda r: num(get(r, "connect", "snapshot_bytes"), 1048576)),
        ("  per stream to snapshot p50 / p99, ms",
         lambda r: num(get(r, "connect", "p50_ms"), fmt="{:.0f}") + " / " +
         num(get(r, "connect", "p99_ms"), fmt="{:.0f}")),
        ("  server CPU per connecting agent, ms",
         lambda r: num(float(get(r, "connect", "server_cpu_s") or "nan") * 1e3 / r["n"])),
        ("idle: server CPU, cores", lambda r: num(get(r, "idle", "server_cores"), fmt="{:.4f}")),
        ("idle: server RSS, MiB", lambda r: num(get(r, "idle", "server_rss_kb"), 1024, "{:.0f}")),
        ("idle: server threads", lambda r: get(r, "idle", "server_threads") or "-"),
        ("idle: store queries per s", lambda r: num(get(r, "idle", "queries_per_s"))),
        ("idle: messages to agents", lambda r: get(r, "idle", "messages") or "-"),
        ("server peak RSS (VmHWM), MiB", lambda r: f"{r['server_hwm_kb'] / 1024:.0f}"),
        ("change: `sigil apply` duration, ms", lambda r: rounds(r, "apply_ms")),
        ("change: last agent, from apply return, ms", lambda r: rounds(r, "return_max_ms")),
        ("change: last agent, from apply start, ms", lambda r: rounds(r, "start_max_ms")),
        ("change: p50 / p99 from apply start, ms",
         lambda r: rounds(r, "start_p50_ms").split()[0] + " / " +
         rounds(r, "start_p99_ms").split()[0]),
        ("change: server CPU (apply + fan-out), ms", lambda r: rounds(r, "server_cpu_ms")),
        ("change: store queries", lambda r: rounds(r, "queries")),
    ]
    print(f"\nsummary ({args.identities} WorkloadIdentity objects, {args.store} store; rounds: "
          f"median (min-max) of {args.rounds}; load average {loadavg()}):")
    width = 44
    print("  " + "figure".ljust(width) + "".join(f"{str(r['n']) + ' agents':>24}" for r in runs))
    for label, fn in rows:
        cells = []
        for r in runs:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError, ValueError, IndexError):
                cells.append("-")
        print("  " + label.ljust(width) + "".join(f"{c:>24}" for c in cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", required=True,
                    help="CMake build directory with apps/sigil/sigil and "
                         "bench/sigil_scale_agents (Release)")
    ap.add_argument("--agents", default="500,5000",
                    help="comma-separated agent counts, one fresh server each (500,5000)")
    ap.add_argument("--identities", type=int, default=50000,
                    help="WorkloadIdentity objects applied before agents connect (50000)")
    ap.add_argument("--batch", type=int, default=10000, help="documents per sigil apply (10000)")
    ap.add_argument("--measure-seconds", type=float, default=60, help="idle window (60)")
    ap.add_argument("--rounds", type=int, default=3, help="policy changes timed (3)")
    ap.add_argument("--connect-parallel", type=int, default=64,
                    help="streams waiting for their snapshot at once; 0: all at once (64)")
    ap.add_argument("--join-parallel", type=int, default=8, help="concurrent joins (8)")
    ap.add_argument("--phase-timeout", type=float, default=400,
                    help="bound of each generator phase (tokens, joins, connect), s (400)")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                    help="server store (sqlite)")
    ap.add_argument("--pg-bindir", default=os.environ.get("SIGIL_PG_BINDIR",
                                                          "/usr/lib/postgresql/15/bin"))
    ap.add_argument("--max-server-rss-mib", type=int, default=12288,
                    help="kill the server (and fail) above this RSS (12288)")
    ap.add_argument("--dir", default="/tmp", help="parent of the temp directory (/tmp)")
    ap.add_argument("--smoke", action="store_true",
                    help="20 agents, 20000 identities, 2 s idle, 1 round (the ctest)")
    args = ap.parse_args()
    if args.smoke:
        # 20,000 identities: a 4.4 MB snapshot, past gRPC's default 4 MiB receive limit that
        # once kept real agents from syncing (the simulated agents use the agent's channel).
        args.agents, args.identities, args.batch = "20", 20000, 10000
        args.measure_seconds, args.rounds, args.phase_timeout = 2, 1, 60
    try:
        counts = [int(x) for x in args.agents.split(",") if x]
    except ValueError:
        die(f"--agents: \"{args.agents}\" is not a comma-separated list of integers")
    if not counts or min(counts) < 1 or args.identities < 0 or args.batch < 1:
        die("--agents, --identities and --batch must be positive")

    build = Path(args.build_dir).resolve()
    for exe in (build / "apps" / "sigil" / "sigil", build / "bench" / "sigil_scale_agents"):
        if not os.access(exe, os.X_OK):
            die(f"{exe} missing: cmake --build {build} --target sigil sigil_scale_agents")
    raise_nofile(2 * max(counts) + 1024)  # the server's connections (the generator raises its own)

    def stop(signum, _frame):
        raise SystemExit(f"scale_bench: signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse",
                                 "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or "-"
    except (OSError, subprocess.TimeoutExpired):
        commit = "-"
    print(f"scale_bench: {os.cpu_count()} cores, HEAD {commit} (+ working tree), build {build}, "
          f"agents {counts}, {args.identities} identities, {args.store} store, load average "
          f"{loadavg()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="sigil-scale-", dir=args.dir))
    procs = Procs()
    t0 = time.monotonic()
    try:
        runs = [run_one(args, build, n, tmp, procs) for n in counts]
        summary(args, runs)
        print(f"\nscale_bench: done in {time.monotonic() - t0:.0f} s", flush=True)
        return 0
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
