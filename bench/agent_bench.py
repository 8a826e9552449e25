"""Node agent benchmark driver: the real `sigil server` and `sigil agent`, driven by
sigil_agent_bench (bench/agent_bench.cc) over the agent's Workload API socket.

Builds nothing. Run as root (the fresh phase runs clients under other uids), usually through
bench/agent_bench.sh:

    bench/agent_bench.sh BUILD_DIR [--uids 1000] [--rounds 2000] [--clients 100] ...

Steps (every wait and every phase is bounded in time, every loop in count):
  1. a temp directory (removed at the end, also on failure or SIGINT/SIGTERM/SIGHUP); the server
     on 127.0.0.1 ephemeral ports (--ready-file), one WorkloadIdentity applied with
     `sigil apply`: spiffe://example.org/bench/u/{{uid}} for the bench binary (unix:path
     selector), JWT audience "bench"; a join token; the agent joins and syncs (/healthz
     "synced": true);
  2. idle: agent VmRSS (and Pss, and resident kB per mapping) after start + sync, before any
     workload call;
  3. fresh: a control run of --uids child processes all under one uid (one identity), then
     --uids child processes each under its own uid (the first call of each is an issuance);
     VmRSS after each (the difference is the identities' memory);
  4. latency: one root connection, cached FetchX509SVID (first response) and FetchJWTSVID,
     interleaved with the same RPCs without the security header (INVALID_ARGUMENT: transport
     and dispatch only, the baseline); then the JWT pair alone;
  5. throughput: --clients connections calling each RPC kind back to back, bounded;
  6. a summary table; processes stopped, temp directory removed. Exit 1 if a phase had errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TD = "example.org"
NODE = "bench-node"
UID_BASE = 20000


def die(msg: str) -> None:
    raise SystemExit(f"agent_bench: {msg}")


def proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
            out[key] = int(value.split()[0])
    try:  # proportional set size: shared pages divided among the processes mapping them
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Pss", "Private_Dirty"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def smaps_by_file(pid: int) -> list[tuple[int, str]]:
    """Resident kB per mapped file (anonymous mappings by kind), largest first."""
    sizes: dict[str, int] = {}
    name, rss = "", 0
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        head = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = head[5] if len(head) > 5 else "[anon]"
            if name.startswith("/"):
                name = os.path.basename(name)
        elif head[0] == "Rss:":
            rss = int(head[1])
        elif head[0] == "VmFlags:":
            key = name + (" (mlocked)" if "lo" in head[1:] else "")
            sizes[key] = sizes.get(key, 0) + rss
    return sorted(((kb, n) for n, kb in sizes.items()), reverse=True)


def proc_cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Procs:
    """Child processes started here, stopped in reverse order (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            p = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        self.items.append((name, p))
        return p

    def stop_all(self) -> None:
        for _, p in reversed(self.items):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, p in reversed(self.items):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def wait_ready(p: subprocess.Popen, ready: Path, what: str, log: Path) -> dict[str, str]:
    deadline = time.monotonic() + 20
    while not ready.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            die(f"{what} did not become ready; log:\n{tail(log)}")
        time.sleep(0.05)
    return dict(line.split("=", 1) for line in ready.read_text().split())


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def healthz(addr: str) -> dict:
    with urllib.request.urlopen(f"http://{addr}/healthz", timeout=5) as r:
        return json.loads(r.read())


def wait_synced(addr: str, agent: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + 20
    last: dict = {}
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            break
        try:
            last = healthz(addr)
            if last.get("synced"):
                return last
        except OSError:
            pass
        time.sleep(0.1)
    die(f"agent never synced ({last}); log:\n{tail(log)}")
    return {}


RESULT_RE = re.compile(r"^RESULT (.*)$", re.M)


def parse_results(text: str) -> dict[tuple[str, str], dict[str, str]]:
    out = {}
    for m in RESULT_RE.finditer(text):
        kv = dict(f.split("=", 1) for f in m.group(1).split())
        out[(kv["phase"], kv["kind"])] = kv
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build_dir", help="CMake build directory with apps/sigil/sigil and "
                                      "bench/sigil_agent_bench (Release)")
    ap.add_argument("--uids", type=int, default=1000, help="fresh phase: distinct uids (1000)")
    ap.add_argument("--rounds", type=int, default=2000,
                    help="latency phase: rounds of 4 calls (2000)")
    ap.add_argument("--clients", type=int, default=100, help="throughput: connections (100)")
    ap.add_argument("--tp-calls", type=int, default=200000,
                    help="throughput: call bound per RPC kind (200000)")
    ap.add_argument("--tp-seconds", type=float, default=10,
                    help="throughput: time bound per RPC kind (10)")
    ap.add_argument("--tp-kinds", default="jwt-nohdr,jwt,x509-nohdr,x509",
                    help="throughput: RPC kinds, in order (jwt-nohdr,jwt,x509-nohdr,x509)")
    ap.add_argument("--settle", type=float, default=3,
                    help="seconds of quiet before each RSS reading (3)")
    args = ap.parse_args()

    build = Path(args.build_dir).resolve()
    sigil = build / "apps" / "sigil" / "sigil"
    bench = build / "bench" / "sigil_agent_bench"
    for exe in (sigil, bench):
        if not os.access(exe, os.X_OK):
            die(f"{exe} missing: cmake --build {build} --target sigil sigil_agent_bench")
    if os.geteuid() != 0:
        die("run as root: the fresh phase runs its clients under other uids")
    if args.uids < 2 or UID_BASE + args.uids + 1 > 60000:
        die("--uids must be 2..39999")

    def stop(signum, _frame):
        raise SystemExit(f"agent_bench: signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    tmp = Path(tempfile.mkdtemp(prefix="sigil-agent-bench-", dir="/tmp"))
    procs = Procs()
    try:
        os.chmod(tmp, 0o755)  # the other-uid clients reach the socket below it
        return run(args, sigil, bench, tmp, procs)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, sigil: Path, bench: Path, tmp: Path, procs: Procs) -> int:
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse",
                                 "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or "-"
    except (OSError, subprocess.TimeoutExpired):
        commit = "-"
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sigil.stat().st_mtime))
    print(f"agent_bench: {os.cpu_count()} cores, HEAD {commit}, {sigil} built {built} UTC, "
          f"load average {loadavg()}", flush=True)

    # --- server, resources, token ------------------------------------------------------------
    server_data, server_log, server_ready = tmp / "server", tmp / "server.log", tmp / "server.ready"
    server = procs.start("server", [sigil, "server", "--data-dir", server_data, "--trust-domain",
                                    TD, "--admin-listen", "127.0.0.1:0", "--agent-listen",
                                    "127.0.0.1:0", "--metrics-listen", "off", "--ready-file",
                                    server_ready], server_log)
    addr = wait_ready(server, server_ready, "server", server_log)
    admin = ["--server", "https://" + addr["admin"], "--credentials", str(server_data / "admin")]

    def cli(*a: str, input: str | None = None) -> str:
        r = subprocess.run([str(sigil), *a, *admin], input=input, capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            die(f"sigil {' '.join(a)} failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    resources = f"""\
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: bench}}
spec:
  spiffeId: spiffe://{TD}/bench/u/{{{{uid}}}}
  selectors: ["unix:path:{bench.resolve()}"]
  jwtAudiences: [bench]
"""
    cli("apply", "-f", "-", input=resources)
    m = re.search(r"SJT1\.\S+", cli("token", "create", "--node", NODE))
    if not m:
        die("no join token in `sigil token create` output")
    token = tmp / "token"
    token.write_text(m.group(0) + "\n")
    os.chmod(token, 0o600)

    # --- agent ---------------------------------------------------------------------------------
    agent_log, agent_ready = tmp / "agent.log", tmp / "agent.ready"
    socket = tmp / "run" / "agent.sock"
    t0 = time.monotonic()
    agent = procs.start("agent", [sigil, "agent", "--server", addr["agent"], "--data-dir",
                                  tmp / "agent", "--socket", socket, "--node-name", NODE,
                                  "--health-listen", "127.0.0.1:0", "--ready-file", agent_ready,
                                  "--join-token-file", token], agent_log)
    health = wait_ready(agent, agent_ready, "agent", agent_log)["health"]
    h = wait_synced(health, agent, agent_log)
    print(f"agent pid {agent.pid}: joined and synced in {time.monotonic() - t0:.2f} s "
          f"(revision {h.get('revision')}, svids_held {h.get('svids_held')})", flush=True)

    rss: list[tuple[str, dict[str, int], int | None]] = []

    def reading(label: str, detail: bool = False) -> None:
        time.sleep(args.settle)
        if agent.poll() is not None:
            die(f"agent exited ({agent.returncode}); log:\n{tail(agent_log)}")
        st = proc_status(agent.pid)
        held = healthz(health).get("svids_held")
        rss.append((label, st, held))
        print(f"[rss] {label}: VmRSS {st.get('VmRSS')} kB (anon {st.get('RssAnon')}, file "
              f"{st.get('RssFile')}; Pss {st.get('Pss')}, Private_Dirty "
              f"{st.get('Private_Dirty')}), VmHWM {st.get('VmHWM')} kB, threads "
              f"{st.get('Threads')}, svids_held {held}", flush=True)
        if detail:
            top = smaps_by_file(agent.pid)
            print("      resident by mapping (kB): " +
                  ", ".join(f"{n} {kb}" for kb, n in top[:10]) +
                  f", {len(top) - 10} others {sum(kb for kb, _ in top[10:])}", flush=True)

    pids = ["--agent-pid", str(agent.pid), "--server-pid", str(server.pid)]

    def phase(name: str, bench_args: list[str], timeout: float) -> dict:
        argv = [str(bench), "--socket", str(socket), *pids, *bench_args]
        print(f"\n$ {' '.join(argv)}", flush=True)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            die(f"{name}: timed out after {timeout} s\n{e.stdout}\n{e.stderr}")
        print(r.stdout, end="", flush=True)
        if r.stderr.strip():
            print(r.stderr, end="", file=sys.stderr, flush=True)
        if r.returncode != 0:
            print(f"agent_bench: {name}: exit {r.returncode} (errors above); agent log tail:\n"
                  f"{tail(agent_log)}", file=sys.stderr, flush=True)
            results["failed"] = True
        return parse_results(r.stdout)

    results: dict = {"failed": False}
    reading("idle after start + sync", detail=True)
    # Issuance. The control run has the same child processes, connections and calls, all under
    # one uid (one identity, issued by its first call); the next run uses --uids distinct uids,
    # so each child's first call is an issuance. The difference in VmRSS between the two
    # readings is the memory of the identities (thread and allocator churn is in both).
    fresh_argv = ["fresh", "--count", str(args.uids), "--parallel", "1", "--cached", "3",
                  "--expect-prefix", f"spiffe://{TD}/bench/u/", "--seconds", "300"]
    control = phase("fresh, control (one uid)",
                    [*fresh_argv, "--uid-base", str(UID_BASE), "--uid-count", "1"], 360)
    reading(f"after {args.uids} processes under one uid (1 identity)")
    fresh = phase("fresh", [*fresh_argv, "--uid-base", str(UID_BASE + 1)], 360)
    reading(f"after {args.uids} distinct identities issued", detail=True)
    lat = phase("latency", ["latency", "--calls", str(args.rounds), "--warmup", "50",
                            "--seconds", "60"], 120)
    reading("after the latency phase")
    # The same without FetchX509SVID: every cancelled stream above holds an agent thread for up
    # to a second, which shows in the other calls' tails; these calls hold none.
    lat_jwt = phase("latency, JWT only", ["latency", "--calls", str(args.rounds), "--warmup", "50",
                                          "--kinds", "jwt-nohdr,jwt", "--seconds", "60"], 120)
    tp: dict = {}
    for kind in args.tp_kinds.split(","):
        tp.update(phase(f"throughput {kind}",
                        ["throughput", "--clients", str(args.clients), "--rpc", kind,
                         "--max-calls", str(args.tp_calls), "--seconds", str(args.tp_seconds)],
                        args.tp_seconds + 120))
        time.sleep(2)  # cancelled FetchX509SVID streams hold a handler thread up to 1 s
    reading("after the throughput phases")

    # --- summary ---------------------------------------------------------------------------------
    def f(d: dict, key: str, scale: float = 1e3, fmt: str = "{:.3f}") -> str:
        try:
            return fmt.format(float(d[key]) / scale)
        except (KeyError, ValueError):
            return "-"

    def ratio(a: dict, b: dict, key: str) -> str:
        try:
            return f"{float(a[key]) / float(b[key]):.2f}"
        except (KeyError, ValueError, ZeroDivisionError):
            return "-"

    L = lambda k: lat.get(("latency", k), {})  # noqa: E731
    J = lambda k: lat_jwt.get(("latency", k), {})  # noqa: E731
    F = lambda k: fresh.get(("fresh", k), {})  # noqa: E731
    C = lambda k: control.get(("fresh", k), {})  # noqa: E731
    T = lambda k: tp.get(("throughput", k), {})  # noqa: E731
    def lat_row(label: str, fig: dict, base: dict, target: str = "", note: str = ""):
        return (label,
                f"p50 {f(fig, 'p50_us')} / p99 {f(fig, 'p99_us')} ms",
                f"{f(base, 'p50_us')} / {f(base, 'p99_us')} ms{note}",
                f"{ratio(fig, base, 'p50_us')} / {ratio(fig, base, 'p99_us')}", target)

    rows = [
        lat_row("FetchX509SVID first response, cached", L("x509"), L("x509-nohdr"), "p99 < 5 ms"),
        lat_row("FetchJWTSVID, cached", L("jwt"), L("jwt-nohdr")),
        lat_row("FetchJWTSVID, cached, run without X.509 streams", J("jwt"), J("jwt-nohdr")),
        lat_row("FetchX509SVID first response, fresh (issued)", F("x509-first"),
                C("x509-first"), note=" (1)"),
        lat_row("  the same, against the no-header baseline", F("x509-first"), L("x509-nohdr")),
    ]
    rows[-1] = (rows[-1][0], "", *rows[-1][2:])
    for kind, base in (("jwt", "jwt-nohdr"), ("x509", "x509-nohdr")):
        if T(kind):
            errs = T(kind).get("errors", "0")
            rows.append((f"{args.clients} clients, {kind} (cached)",
                         f"{f(T(kind), 'per_s', 1, '{:.0f}')}/s, p99 {f(T(kind), 'p99_us')} ms"
                         + (f", {errs} errors" if errs != "0" else ""),
                         f"{f(T(base), 'per_s', 1, '{:.0f}')}/s" if T(base) else "",
                         ratio(T(kind), T(base), "per_s") if T(base) else "", ""))
    idle = rss[0][1].get("VmRSS", 0)
    for label, st, held in rss:
        rows.append((f"agent VmRSS, {label}", f"{st.get('VmRSS', 0) / 1024:.1f} MiB",
                     f"{idle / 1024:.1f} MiB" if label != rss[0][0] else "",
                     f"{st.get('VmRSS', 0) / idle:.2f}" if idle and label != rss[0][0] else "",
                     "< 20 MiB" if label == rss[0][0] else ""))
    before, after = rss[1][1].get("VmRSS", 0), rss[2][1].get("VmRSS", 0)
    rows.append((f"  VmRSS growth per identity ({args.uids} vs 1, same churn)",
                 f"{(after - before) / max(1, args.uids - 1):.1f} kB", "", "", ""))
    rows.append(("  idle Pss / Private_Dirty (shared pages split)",
                 f"{rss[0][1].get('Pss', 0) / 1024:.1f} / "
                 f"{rss[0][1].get('Private_Dirty', 0) / 1024:.1f} MiB", "", "", ""))
    print(f"\nsummary (ratios: figure / baseline of the same run; load average {loadavg()}):")
    print("  (1) the control run's first calls: a new process and connection, SVID already held")
    widths = [max(len(r[i]) for r in rows + [("figure", "value", "baseline", "ratio", "target")])
              for i in range(5)]
    for r in [("figure", "value", "baseline", "ratio", "target")] + rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if results["failed"]:
        print("agent_bench: some phase reported errors (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
