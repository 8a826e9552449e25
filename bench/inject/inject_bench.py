"""Credential-injection benchmark; see run.sh.

Topology (two network namespaces joined by veth, created and removed here):
  A (10.80.0.1): sigil server, agent A (--dataplane), wrk
  B (10.80.0.2): nginx with TLS on :443, answering 200 only to `Authorization: Bearer <key>`

Paths, each measured with wrk (keep-alive, small requests, same connections and threads), first
loaded (--conns connections) then unloaded (1 connection, the latency of the hop alone):
  direct  wrk -> https://10.80.0.2:443 with the key in its own header (plain TLS from the client)
  inject  `sigil run -- wrk http://10.80.0.2:80/` -> agent A adds the key, TLS to :443
  haproxy wrk -> http://127.0.0.1:18181 -> HAProxy (HTTP mode, one thread) sets the header, TLS
          to :443: a reference for what a user-space hop costs on this machine (no attestation,
          no audit)
Targets (docs/benchmarks.md): inject requests/s >= 80 % of direct; p99 added < 1 ms (both
phases are printed).

--split-cores is an experiment, not the targets' measurement: wrk and nginx share CPU 0 and the
hop (agent and server, or HAProxy) gets CPU 1 to itself, so "direct" runs on one core and the
hops on two. It asks what the hop costs when it has a core of its own, as on a node with CPU
to spare, instead of taking its CPU from the client and the upstream.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests" / "interop"))
sys.path.insert(0, str(HERE.parent.parent / "tests" / "dataplane"))
sys.path.insert(0, str(HERE.parent))

import helpers  # noqa: E402
from helpers import Peer, run  # noqa: E402
from netns_topology import delete_hosts, make_hosts, netns, remove_cgroup_tree  # noqa: E402
from preflight import quiet_or_warn  # noqa: E402

TD = "example.org"
PID = os.getpid()
NS_A, NS_B = f"ibA{PID}", f"ibB{PID}"
IP_A, IP_B = "10.80.0.1", "10.80.0.2"
KEY = "sk-bench-" + os.urandom(8).hex()

NGINX = """
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4000; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    server {{
        listen 443 ssl backlog=4096;
        ssl_certificate {tmp}/api.pem;
        ssl_certificate_key {tmp}/api.key;
        ssl_protocols TLSv1.3;
        ssl_session_tickets on;
        location / {{
            if ($http_authorization != "Bearer {key}") {{ return 401 "no\\n"; }}
            return 200 "ok\\n";
        }}
    }}
}}
"""


# The reference for "what any user-space hop costs here": HAProxy doing the same job in HTTP
# mode (plain HTTP in on loopback, the bearer header set on every request, TLS 1.3 out to the
# same nginx with its certificate verified, one thread), without attestation or audit.
HAPROXY = """
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    maxconn 8000
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    http-request set-header Authorization "Bearer {key}"
    default_backend be
backend be
    server api {ip}:443 ssl ca-file {tmp}/ca.pem verify required verifyhost api.bench sni str(api.bench) ssl-min-ver TLSv1.3 alpn http/1.1
"""
HAPROXY_PORT = 18181
PATHS = ("direct", "inject", "haproxy")


def sh(*argv: object) -> subprocess.CompletedProcess:
    return run([str(a) for a in argv], timeout=60)


def parse_wrk(text: str) -> dict:
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{text}")
    out = {"rps": float(m.group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        out[f"p{pct}"] = float(m.group(1)) * units[m.group(2)] if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return out


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.peers: list[Peer] = []
        self._td = tempfile.TemporaryDirectory(prefix="sigil-inject-bench-")
        self.tmp = Path(self._td.name)
        os.chmod(self.tmp, 0o755)
        self.mounted = False
        self.made_ns = False
        self.managed = f"sigil-ibench-{PID}"
        self.wrk = os.path.realpath(shutil.which("wrk") or "wrk")
        self.curl = os.path.realpath(shutil.which("curl") or "curl")

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def setup(self) -> None:
        for tool in ("wrk", "nginx", "openssl", "curl", "ip", "haproxy"):
            if shutil.which(tool) is None:
                raise SystemExit(f"inject bench: '{tool}' not found (run scripts/setup.sh)")
        self.made_ns = True
        make_hosts(NS_A, IP_A, NS_B, IP_B, f"ib{PID % 100000}")
        (self.tmp / "cgroup2").mkdir()
        sh("mount", "-t", "cgroup2", "none", self.tmp / "cgroup2")
        self.mounted = True
        t = self.tmp
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-keyout", t / "ca.key", "-out", t / "ca.pem", "-days", "2",
           "-subj", "/CN=inject bench CA")
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", t / "api.key", "-out", t / "api.csr", "-subj", "/CN=api.bench")
        (t / "ext").write_text(f"subjectAltName=DNS:api.bench,IP:{IP_B}\n")
        sh("openssl", "x509", "-req", "-in", t / "api.csr", "-CA", t / "ca.pem", "-CAkey",
           t / "ca.key", "-CAcreateserial", "-out", t / "api.pem", "-days", "2", "-extfile",
           t / "ext")
        (t / "nginx.conf").write_text(NGINX.format(tmp=t, key=KEY))
        self.nginx = Peer(netns(NS_B, *self.pin("client"), "nginx", "-e", "stderr", "-c",
                                t / "nginx.conf"), "nginx")
        self.peers.append(self.nginx)
        (t / "haproxy.cfg").write_text(HAPROXY.format(tmp=t, key=KEY, ip=IP_B, port=HAPROXY_PORT))
        self.haproxy = Peer(netns(NS_A, *self.pin("hop"), "haproxy", "-db", "-f",
                                  t / "haproxy.cfg"), "haproxy")
        self.peers.append(self.haproxy)
        ready = t / "server.ready"
        server = Peer(netns(NS_A, *self.pin("hop"), self.args.sigil, "server",
                            "--data-dir", t / "server", "--trust-domain", TD,
                            "--admin-listen", "127.0.0.1:0", "--agent-listen", f"{IP_A}:0",
                            "--metrics-listen", "off", "--ready-file", ready), "server")
        self.peers.append(server)
        self.server = server
        addr = helpers.wait_ready_file(server, ready, "server", timeout=30)
        self.admin = ["--server", "https://" + addr["admin"], "--credentials", t / "server" / "admin"]
        ca = (t / "ca.pem").read_text().strip().replace("\n", "\n      ")
        resources = f"""
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: wrk}}
spec: {{spiffeId: "spiffe://{TD}/bench/wrk", selectors: ["unix:path:{self.wrk}"]}}
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: curl}}
spec: {{spiffeId: "spiffe://{TD}/bench/curl", selectors: ["unix:path:{self.curl}"]}}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: api}}
spec:
  mode: inject
  addresses: ["{IP_B}:80"]
  tls:
    port: 443
    sni: api.bench
    caBundle: |
      {ca}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: key}}
spec: {{type: static, value: {KEY}}}
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: bench-bearer}}
spec:
  source: key
  identities: ["spiffe://{TD}/bench/wrk", "spiffe://{TD}/bench/curl"]
  service: api
  delivery:
    header: {{name: Authorization, template: "Bearer {{{{secret}}}}"}}
"""
        run(netns(NS_A, self.args.sigil, "apply", "-f", "-", *self.admin), input=resources)
        token = run(netns(NS_A, self.args.sigil, "token", "create", "--node", "bench-a",
                          *self.admin)).stdout
        m = re.search(r"SJT1\.[^\s]+", token)
        (t / "token").write_text(m.group(0) + "\n")
        os.chmod(t / "token", 0o600)
        ready = t / "agent.ready"
        help_text = subprocess.run([self.args.sigil, "agent", "--help"], capture_output=True,
                                   text=True).stdout
        extra = ["--creds-mount", ""] if "--creds-mount" in help_text else []
        agent = Peer(netns(NS_A, *self.pin("hop"), self.args.sigil, "agent",
                           "--server", addr["agent"], "--join-token-file", t / "token",
                           "--data-dir", t / "agent", "--socket", t / "agent.sock",
                           "--node-name", "bench-a",
                           "--health-listen", "127.0.0.1:0", "--ready-file", ready,
                           "--dataplane", "--dataplane-loops", "1",
                           "--cgroup-root", t / "cgroup2", "--managed-cgroup", self.managed,
                           *extra), "agent")
        self.peers.append(agent)
        self.agent = agent
        helpers.wait_ready_file(agent, ready, "agent", timeout=30)
        agent.wait_for(r"dataplane\.intercept ", timeout=15)
        for name, argv, peer in (
                ("the agent", self.sigil_run(self.curl, "-s", f"http://{IP_B}/"), agent),
                ("HAProxy", netns(NS_A, self.curl, "-s", self.haproxy_url()), self.haproxy)):
            deadline = time.monotonic() + 30
            while True:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
                if r.stdout == "ok\n":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no answer through {name}\n{peer.output[-3000:]}")
                time.sleep(0.5)

    def pin(self, role: str) -> list[str]:
        """With --split-cores, the taskset prefix of a process: "client" (wrk, nginx) on CPU 0,
        "hop" (agent, server, HAProxy) on CPU 1; nothing otherwise."""
        if not self.args.split_cores:
            return []
        return ["taskset", "-c", "0" if role == "client" else "1"]

    def sigil_run(self, *cmd: object) -> list[str]:
        return netns(NS_A, *self.pin("client"), self.args.sigil, "run",
                     "--cgroup-root", self.tmp / "cgroup2", "--managed-cgroup", self.managed,
                     "--", *cmd)

    @staticmethod
    def cpu_seconds(pid: int) -> float:
        """utime + stime of a process and all its threads (children not included)."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wrk_run(self, argv: list[str]) -> dict:
        procs = {"agent": self.agent.proc.pid, "server": self.server.proc.pid,
                 "nginx": self.nginx_pid(), "haproxy": self.haproxy.proc.pid}
        before = {k: self.cpu_seconds(p) for k, p in procs.items()}
        start = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=self.args.duration + 60)
        elapsed = time.monotonic() - start
        if r.returncode != 0:
            raise RuntimeError(f"wrk failed: {r.stderr}\n{r.stdout}")
        out = parse_wrk(r.stdout)
        out["cpu"] = {k: (self.cpu_seconds(p) - before[k]) / elapsed for k, p in procs.items()}
        return out

    # CPU/s above which the agent and the server, which no request of the direct or HAProxy
    # path goes through, are not idle.
    IDLE_CPU = 0.1

    def check_idle(self, what: str, cpu: dict) -> None:
        """Warns, and keeps both daemons' logs, when the agent or the server was busy while the
        round did not use them: such a round's figures are not comparable (it happened once,
        docs/benchmarks.md)."""
        busy = {k: v for k, v in cpu.items() if k in ("agent", "server") and v > self.IDLE_CPU}
        if not busy:
            return
        keep = Path(tempfile.gettempdir()) / f"sigil-inject-bench-{PID}-busy.log"
        with keep.open("a") as f:
            f.write(f"=== {time.strftime('%H:%M:%S')} {what}: " +
                    ", ".join(f"{k} {v:.2f} CPU/s" for k, v in busy.items()) + "\n")
            for name, peer in (("agent", self.agent), ("server", self.server)):
                f.write(f"--- {name} (last 200 lines) ---\n")
                f.write("\n".join(peer.output.splitlines()[-200:]) + "\n")
        self.log(f"  WARNING: {', '.join(busy)} busy during {what} (no request goes through "
                 f"them); their logs are in {keep}")

    @staticmethod
    def haproxy_url() -> str:
        return f"http://127.0.0.1:{HAPROXY_PORT}/"

    def nginx_pid(self) -> int:
        # The worker (the master's only child) does the work.
        master = self.nginx.proc.pid
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                        return int(p.name)
                except (OSError, ValueError, IndexError):
                    continue
        return master

    def wrk_argv(self, path: str, *options: str) -> list[str]:
        """wrk with `options` against one of PATHS."""
        if path == "direct":
            return netns(NS_A, *self.pin("client"), self.wrk, *options,
                         "-H", f"Authorization: Bearer {KEY}", f"https://{IP_B}:443/")
        if path == "haproxy":
            return netns(NS_A, *self.pin("client"), self.wrk, *options, self.haproxy_url())
        return self.sigil_run(self.wrk, *options, f"http://{IP_B}/")

    def measure(self) -> dict:
        out: dict = {}
        # Warm up every path (TLS sessions, the agent's grant cache).
        for path in PATHS:
            self.wrk_run(self.wrk_argv(path, "-t", "1", "-c", str(self.args.conns), "-d", "2s"))
        # "loaded": the configured connections keep both cores busy, so latency includes queueing
        # behind the other connections. "unloaded": one connection, one request in flight, so
        # latency is the cost of the hop itself.
        phases = [("loaded", self.args.conns, self.args.duration),
                  ("unloaded", 1, self.args.lat1_duration)]
        for phase, conns, seconds in phases:
            self.log(f"{phase}: {conns} connection(s), {seconds} s x {self.args.reps}")
            common = ["-t", "1", "-c", str(conns), "-d", f"{seconds}s", "--latency"]
            for rep in range(self.args.reps):
                for path in PATHS:
                    argv = self.wrk_argv(path, *common)
                    perf = None
                    if self.args.perf and path == "inject" and rep == 0 and phase == "loaded":
                        scope = (["-a"] if self.args.perf_process == "system" else
                                 ["-p", str((self.server if self.args.perf_process == "server"
                                             else self.agent).proc.pid)])
                        perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o",
                                                 self.args.perf, *scope, "--",
                                                 "sleep", str(max(1, seconds - 1))],
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
                    r = self.wrk_run(argv)
                    if perf is not None:
                        perf.wait(timeout=60)
                    if path != "inject":
                        self.check_idle(f"{phase} {path} rep {rep + 1}", r["cpu"])
                    self.log(f"  {path:7s} rep {rep + 1}: {r['rps']:,.0f} req/s  "
                             f"p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  "
                             f"non-2xx {r['non2xx']}  socket errors {r['socket_errors']}  "
                             "CPU/s: " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu"].items()
                                                 if v >= 0.005))
                    out.setdefault((phase, path), []).append(r)
        return out

    def report(self, out: dict) -> int:
        def median(phase: str, path: str, key: str) -> float:
            vals = sorted(r[key] for r in out[(phase, path)])
            return vals[len(vals) // 2]
        bad = sum(r["non2xx"] + r["socket_errors"] for rs in out.values() for r in rs)
        print("=" * 90)
        print(f"Sigil credential injection benchmark — {time.strftime('%Y-%m-%d %H:%M')} — "
              f"{os.cpu_count()} CPUs; 1 wrk thread, agent 1 event loop, nginx 1 worker; "
              f"{self.args.reps} rounds per path (median)")
        if self.args.split_cores:
            print("  --split-cores: wrk and nginx on CPU 0, the hop (agent and server, or HAProxy) "
                  "on CPU 1 -- an experiment, not the targets' measurement")
        added = {}
        ratio = 0.0
        for phase, conns in (("loaded", self.args.conns), ("unloaded", 1)):
            print(f"  {phase}: {conns} keep-alive connection(s)")
            print(f"    direct (client TLS + own key)   {median(phase, 'direct', 'rps'):>10,.0f} "
                  f"req/s  p50 {median(phase, 'direct', 'p50'):.3f} ms  "
                  f"p99 {median(phase, 'direct', 'p99'):.3f} ms")
            print(f"    inject (plain HTTP, agent adds) {median(phase, 'inject', 'rps'):>10,.0f} "
                  f"req/s  p50 {median(phase, 'inject', 'p50'):.3f} ms  "
                  f"p99 {median(phase, 'inject', 'p99'):.3f} ms")
            r = median(phase, "inject", "rps") / median(phase, "direct", "rps")
            if phase == "loaded":
                ratio = r
            for q in ("p50", "p99"):
                added[(phase, q)] = median(phase, "inject", q) - median(phase, "direct", q)
            print(f"    haproxy (plain HTTP, adds header) {median(phase, 'haproxy', 'rps'):>8,.0f} "
                  f"req/s  p50 {median(phase, 'haproxy', 'p50'):.3f} ms  "
                  f"p99 {median(phase, 'haproxy', 'p99'):.3f} ms   (reference: no attestation, "
                  "no audit)")
            print(f"    inject/direct requests/s: {r:.2f}   added latency "
                  f"p50 {added[(phase, 'p50')]:+.3f} ms, p99 {added[(phase, 'p99')]:+.3f} ms")
            h = median(phase, "haproxy", "rps") / median(phase, "direct", "rps")
            print(f"    haproxy/direct requests/s: {h:.2f}   added latency p50 "
                  f"{median(phase, 'haproxy', 'p50') - median(phase, 'direct', 'p50'):+.3f} ms, "
                  f"p99 {median(phase, 'haproxy', 'p99') - median(phase, 'direct', 'p99'):+.3f} ms;"
                  f"  inject/haproxy: {median(phase, 'inject', 'rps') / median(phase, 'haproxy', 'rps'):.2f}")
        print(f"  non-2xx or socket errors: {bad}")
        if self.args.split_cores:
            print("  (split cores: the lines below compare a one-core direct path with two-core "
                  "hops; they are not the targets' verdict)")
        print(f"  [{'MET ' if ratio >= 0.8 else 'MISS'}] requests/s >= 80 % of direct "
              f"({self.args.conns} connections): {ratio * 100:.0f} %")
        for phase in ("loaded", "unloaded"):
            a99 = added[(phase, "p99")]
            print(f"  [{'MET ' if a99 < 1.0 else 'MISS'}] p99 added < 1 ms ({phase}): "
                  f"{a99:+.3f} ms")
        return 0 if bad == 0 else 1

    def cleanup(self) -> None:
        # nginx's master leaves its worker running when killed (SIGKILL): stop it with SIGTERM,
        # which takes the worker down too, before the peers are killed.
        nginx = getattr(self, "nginx", None)
        if nginx is not None and nginx.proc.poll() is None:
            nginx.proc.send_signal(signal.SIGTERM)
            try:
                nginx.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for p in reversed(self.peers):
            p.kill()
        remove_cgroup_tree(self.tmp / "cgroup2" / self.managed)
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.tmp / "cgroup2")], capture_output=True)
        if self.made_ns:
            delete_hosts(NS_A, NS_B)
        self._td.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description="Sigil credential-injection benchmark")
    ap.add_argument("--sigil", default=str(HERE.parent.parent / "build/release/apps/sigil/sigil"))
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement (1-120)")
    ap.add_argument("--conns", type=int, default=16,
                    help="keep-alive connections of the loaded phase (1-1000)")
    ap.add_argument("--lat1-duration", type=int, default=5,
                    help="seconds per measurement of the unloaded (1 connection) phase (1-120)")
    ap.add_argument("--reps", type=int, default=3, help="rounds per path, median reported (1-9)")
    ap.add_argument("--split-cores", action="store_true",
                    help="experiment: wrk and nginx on CPU 0, the hop (agent and server, or "
                         "HAProxy) on CPU 1 (needs 2 CPUs or more)")
    ap.add_argument("--perf", default="",
                    help="debugging: `perf record -g` a process during the first inject round "
                         "into this file")
    ap.add_argument("--perf-process", choices=("agent", "server", "system"),
                    default="agent", help="what --perf records: one process, or the whole "
                                          "machine (default agent)")
    args = ap.parse_args()
    if not (1 <= args.duration <= 120 and 1 <= args.lat1_duration <= 120 and
            1 <= args.conns <= 1000 and 1 <= args.reps <= 9):
        ap.error("--duration 1-120, --lat1-duration 1-120, --conns 1-1000, --reps 1-9")
    if os.geteuid() != 0:
        ap.error("run as root (namespaces, BPF, cgroup2)")
    if args.split_cores and not {0, 1} <= os.sched_getaffinity(0):
        ap.error("--split-cores needs CPUs 0 and 1")
    bench = Bench(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        busy = quiet_or_warn()
        if busy:
            bench.log(busy)
        bench.log("setting up namespaces, server, agent, nginx")
        bench.setup()
        bench.log("measuring")
        rc = bench.report(bench.measure())
        if busy:
            print(f"  {busy}")
        return rc
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
