"""Data plane benchmark driver: plain TCP vs Sigil mTLS vs an HAProxy mTLS pair, one run.

Usually started through bench/dataplane/run.sh (raises the fd limit), as root:

    bench/dataplane/run.sh [--sigil build/release/apps/sigil/sigil] [--duration 10] ...

Topology (the one tests/dataplane/test_dataplane.py uses):

  namespace A "client host" 10.77.N.1       namespace B "server host" 10.77.N.2
    sigil server                              sigil agent --dataplane (agent B)
    sigil agent --dataplane (agent A)         nginx :8080 and :8081 under `sigil run` (1 KiB,
    wrk / curl / python clients                 64 MiB, 256 MiB files); Service (mutual) on 8080
    haproxy "client" 127.0.0.1:18080  --TLS-> haproxy "server" 10.77.N.2:18443 -> nginx

Paths, all to the same nginx:
  plain    clients in A outside managed cgroups -> 10.77.N.2:8081 (not intercepted)
  sigil    the same clients under `sigil run` in A: agent A (outbound 15001) -> sigil/1 mTLS ->
           agent B (15008) -> nginx
  haproxy  clients -> 127.0.0.1:18080 -> HAProxy A -> TLS 1.3 mTLS (P-256, verify required)
           -> HAProxy B :18443 -> nginx (nbthread 1 each; backend TLS session reuse on, HAProxy's
           default; a second frontend 18081 with no-ssl-reuse is measured for new conns/s)

Measurements, interleaved path by path so machine noise hits all paths alike:
  ka16     wrk -t2 -c16 keep-alive, 1 KiB file, --duration s: requests/s, p50/p99 latency
  ka1      wrk -t1 -c1 keep-alive, 1 KiB file, --lat1-duration s: unloaded p50/p99
  close    wrk -t2 -c16 'Connection: close' (wrk reconnects after every response), 1 KiB:
           new connections/s (= requests/s)
  stream1  curl of the 256 MiB file to /dev/null: MB/s (10^6 bytes/s, curl's speed_download)
  stream16 wrk -t2 -c16 on the 64 MiB file for --stream16-duration s: aggregate MB/s
  memory   --idle-conns idle connections held by a Python client (sigil run for Sigil): VmRSS
           of agent A and B (and of the HAProxy pair) before, with the connections open, and
           after one 1 KiB request/response on each; KiB per connection
  CPU      utime+stime of agents, HAProxies, nginx and sigil server per phase (/proc), plus
           per-thread CPU of the agents in the Sigil close and ka16 phases

Everything is bounded (timeouts on every subprocess and wait); namespaces, processes, the
managed cgroups and the temp directory are removed on every exit (also SIGINT/SIGTERM/SIGHUP).
Exit 1 if a phase failed (a missed target is not a failure), 2 for usage / missing tools.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import select
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from preflight import quiet_or_warn  # noqa: E402

TD = "example.org"
PORT = 8080            # nginx in B: the Sigil Service (mode mutual)
PLAIN_PORT = 8081      # the same nginx server, a port no Service covers: the plain path (so a
                       # future nftables rule protecting 8080 cannot break the baseline)
TLS_PORT = 18443       # server-side HAProxy in B
FRONT_PORT = 18080     # client-side HAProxy in A (backend TLS session reuse on)
FRONT_NOREUSE = 18081  # client-side HAProxy in A, no-ssl-reuse
HZ = os.sysconf("SC_CLK_TCK")


class PhaseError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def which(name: str) -> str:
    p = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if p is None:
        raise SystemExit(f"dataplane_bench: required tool {name!r} not found (apt-get install it)")
    return os.path.realpath(p)


# ------------------------------------------------------------------------------------------
# /proc helpers
# ------------------------------------------------------------------------------------------

def ticks(pid: int) -> int:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    except OSError:
        pass
    return out


def thread_ticks(pid: int) -> dict[str, int]:
    """CPU ticks per thread, keyed "name/tid" (the agent's threads all share one name)."""
    out: dict[str, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            comm = raw[raw.index("(") + 1:raw.rindex(")")]
            f = raw.rsplit(")", 1)[1].split()
            out[f"{comm}/{tid}"] = int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            continue
    return out


def status_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "Threads"):
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def machine_busy() -> tuple[int, int]:
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


# ------------------------------------------------------------------------------------------
# wrk / curl output
# ------------------------------------------------------------------------------------------

UNIT_TIME = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
UNIT_BYTES = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def parse_wrk(text: str) -> dict:
    r: dict = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise PhaseError(f"wrk printed no Requests/sec:\n{text}")
    r["rps"] = float(m.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMGT]?B)", text)
    r["bytes_per_s"] = float(m.group(1)) * UNIT_BYTES[m.group(2)] if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            r[f"p{pct}"] = float(m.group(1)) * UNIT_TIME[m.group(2)]  # ms
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    r["requests"] = int(m.group(1)) if m else 0
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
        r["socket_errors"] = m.group(0)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    r["errors"] = errors
    if r["requests"] == 0:
        raise PhaseError(f"wrk completed no request:\n{text}")
    return r


# ------------------------------------------------------------------------------------------
# The bench
# ------------------------------------------------------------------------------------------

class Proc:
    """A long-running process with stdout+stderr to a log file; stopped by its own pid."""

    def __init__(self, argv: list, name: str, logdir: Path, **kw) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.logfile = logdir / f"{name}.log"
        self._out = open(self.logfile, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, **kw)
        self.pid = self.proc.pid

    def output(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.output())
            if m:
                return m
            if not self.alive():
                break
            time.sleep(0.1)
        raise PhaseError(f"{self.name}: no {pattern!r} in its output "
                         f"({'exited' if not self.alive() else 'timed out'})\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self._out.close()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        src = os.path.abspath(args.sigil)
        if not os.access(src, os.X_OK):
            raise SystemExit(f"dataplane_bench: {src} is not executable "
                             "(cmake --build build/release --target sigil)")
        self.tools = {t: which(t) for t in ("ip", "ss", "wrk", "curl", "openssl", "haproxy",
                                             "nginx")}
        self.python = os.path.realpath("/usr/bin/python3")
        pid = os.getpid()
        self.net = 100 + pid % 150
        self.ip_a, self.ip_b = f"10.77.{self.net}.1", f"10.77.{self.net}.2"
        self.ns_a, self.ns_b = f"sdbA{pid}", f"sdbB{pid}"
        self.managed = {"a": f"sigil-dpbench-{pid}-a", "b": f"sigil-dpbench-{pid}-b"}
        self.procs: list[Proc] = []
        self.made_ns: list[str] = []
        self.failures: list[str] = []
        self.results: dict = {}   # (path, phase) -> dict
        self.cpu: dict = {}       # (path, phase) -> {proc: seconds, "machine": busy fraction}
        self.threads: dict = {}   # (path, phase) -> {"a": {...}, "b": {...}}
        self.memory: dict = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="sigil-dpbench-"))
        os.chmod(self.tmp, 0o755)
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        # A private copy: a rebuild of the tree during the run cannot swap the binary under us.
        (self.tmp / "bin").mkdir(mode=0o755)
        self.sigil = str(self.tmp / "bin" / "sigil")
        shutil.copy2(src, self.sigil)
        digest = subprocess.run(["sha256sum", self.sigil], capture_output=True, text=True,
                                timeout=30).stdout.split()[0]
        # Read-only git queries (--no-optional-locks: no index refresh is written).
        git = subprocess.run(["git", "--no-optional-locks", "-C", str(HERE), "rev-parse",
                              "--short", "HEAD"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
        if subprocess.run(["git", "--no-optional-locks", "-C", str(HERE), "status",
                           "--porcelain", "--untracked-files=no"], capture_output=True,
                          text=True, timeout=30).stdout.strip():
            git += " + uncommitted changes"
        self.binary_info = (f"{src} (built {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(os.stat(src).st_mtime))}, "
                            f"sha256 {digest[:16]}, tree {git or '?'})")

    # --- plumbing ---------------------------------------------------------------------------

    def netns(self, ns: str, *argv) -> list[str]:
        return [self.tools["ip"], "netns", "exec", ns, *[str(a) for a in argv]]

    def sh(self, *argv, timeout: float = 30, check: bool = True, input: str | None = None,
           ) -> subprocess.CompletedProcess:
        argv = [str(a) for a in argv]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                               stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise PhaseError(f"timed out after {timeout}s: {' '.join(argv)}\n{e.stdout}\n{e.stderr}")
        if check and r.returncode != 0:
            raise PhaseError(f"exit {r.returncode}: {' '.join(argv)}\n{r.stdout}\n{r.stderr}")
        return r

    def sigil_run(self, host: str, *cmd) -> list[str]:
        ns = self.ns_a if host == "a" else self.ns_b
        return self.netns(ns, self.sigil, "run", "--cgroup-root", self.tmp / "cgroup2",
                          "--managed-cgroup", self.managed[host], "--", *cmd)

    def start(self, argv: list, name: str) -> Proc:
        p = Proc(argv, name, self.logs)
        self.procs.append(p)
        return p

    def render(self, template: str, out: Path, **values) -> Path:
        text = string.Template((HERE / template).read_text()).substitute(**values)
        out.write_text(text)
        return out

    def wait_file(self, path: Path, proc: Proc, what: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if not proc.alive() or time.monotonic() > deadline:
                raise PhaseError(f"{what} did not become ready\n{proc.tail()}")
            time.sleep(0.05)
        time.sleep(0.05)
        return dict(line.split("=", 1) for line in path.read_text().split())

    # --- setup ------------------------------------------------------------------------------

    def make_hosts(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            self.sh(self.tools["ip"], "netns", "add", ns)
            self.made_ns.append(ns)
        va, vb = f"dva{os.getpid() % 100000}", f"dvb{os.getpid() % 100000}"
        self.sh(self.tools["ip"], "link", "add", va, "type", "veth", "peer", "name", vb)
        self.sh(self.tools["ip"], "link", "set", va, "netns", self.ns_a)
        self.sh(self.tools["ip"], "link", "set", vb, "netns", self.ns_b)
        for ns, dev, ip in ((self.ns_a, va, self.ip_a), (self.ns_b, vb, self.ip_b)):
            self.sh(*self.netns(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev))
            self.sh(*self.netns(ns, "ip", "link", "set", dev, "up"))
            self.sh(*self.netns(ns, "ip", "link", "set", "lo", "up"))
            # Many short connections per phase: a wide ephemeral range in both namespaces.
            self.sh(*self.netns(ns, "sysctl", "-q", "-w",
                                "net.ipv4.ip_local_port_range=1024 65000"))
            self.sh(*self.netns(ns, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"))
            self.sh(*self.netns(ns, "sysctl", "-q", "-w", "net.core.somaxconn=8192"))

    def make_pki(self) -> None:
        d = self.tmp / "pki"
        d.mkdir()
        o = self.tools["openssl"]
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        self.sh(o, "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days",
                "2", "-subj", "/O=sigil-dpbench/CN=bench CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        for name, eku in (("server", "serverAuth"), ("client", "clientAuth")):
            self.sh(o, "req", *ec, "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr",
                    "-subj", f"/O=sigil-dpbench/CN={name}")
            ext = d / f"{name}.ext"
            ext.write_text(f"subjectAltName=DNS:{name}.bench.invalid,"
                           f"URI:spiffe://{TD}/bench/haproxy-{name}\n"
                           f"extendedKeyUsage={eku}\nkeyUsage=critical,digitalSignature\n")
            self.sh(o, "x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem",
                    "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2",
                    "-extfile", ext, "-out", d / f"{name}.crt")
            (d / f"{name}.pem").write_bytes((d / f"{name}.crt").read_bytes() +
                                            (d / f"{name}.key").read_bytes())

    def make_www(self) -> None:
        www = self.tmp / "www"
        www.mkdir(mode=0o755)
        block = os.urandom(1 << 20)
        (www / "small.bin").write_bytes(block[:1024])
        for name, mib in (("big.bin", self.args.stream_mib), ("mid.bin", self.args.multi_mib)):
            with open(www / name, "wb") as f:
                for _ in range(mib):
                    f.write(block)
        for p in www.iterdir():
            os.chmod(p, 0o644)
        self.www = www

    def cli(self, *args, input: str | None = None) -> subprocess.CompletedProcess:
        return self.sh(*self.netns(self.ns_a, self.sigil, *args, "--server", self.admin_url,
                                   "--credentials", self.tmp / "server" / "admin"),
                       input=input)

    def start_sigil(self) -> None:
        ready = self.tmp / "server.ready"
        self.server = self.start(self.netns(
            self.ns_a, self.sigil, "server", "--data-dir", self.tmp / "server", "--trust-domain",
            TD, "--admin-listen", "127.0.0.1:0", "--agent-listen", f"{self.ip_a}:0",
            "--metrics-listen", "off", "--ready-file", ready), "sigil-server")
        addr = self.wait_file(ready, self.server, "sigil server")
        self.admin_url = "https://" + addr["admin"]
        agent_api = addr["agent"]
        self.cli("apply", "-f", "-", input=self.render(
            "resources.yaml.in", self.tmp / "resources.yaml", TD=TD, WRK=self.tools["wrk"],
            CURL=self.tools["curl"], PYTHON=self.python, NGINX=self.tools["nginx"],
            IP_B=self.ip_b, PORT=PORT).read_text())
        self.agents: dict[str, Proc] = {}
        for host, ns in (("a", self.ns_a), ("b", self.ns_b)):
            out = self.cli("token", "create", "--node", f"bench-{host}").stdout
            m = re.search(r"SJT1\.[^\s]+", out)
            if not m:
                raise PhaseError(f"no join token in: {out}")
            tok = self.tmp / f"token-{host}"
            tok.write_text(m.group(0) + "\n")
            os.chmod(tok, 0o600)
            ready = self.tmp / f"agent-{host}.ready"
            p = self.start(self.netns(
                ns, self.sigil, "agent", "--server", agent_api, "--join-token-file", tok,
                "--data-dir", self.tmp / f"agent-{host}", "--socket",
                self.tmp / f"agent-{host}.sock", "--node-name", f"bench-{host}",
                "--health-listen", "127.0.0.1:0", "--ready-file", ready, "--dataplane",
                "--dataplane-loops", str(self.args.agent_loops),
                "--cgroup-root", self.tmp / "cgroup2", "--managed-cgroup", self.managed[host],
                "--creds-mount", "", *self.args.agent_arg),
                f"agent-{host}")
            self.wait_file(ready, p, f"agent {host}")
            p.wait_for(r"dataplane\.intercept", timeout=15)
            m = re.search(r"dataplane\.start.*?loops\W+(\d+)", p.output())
            self.loops = int(m.group(1)) if m else 0
            self.agents[host] = p

    def start_nginx(self) -> None:
        conf = self.render("nginx.conf.in", self.tmp / "nginx.conf", USER="www-data",
                           GROUP="www-data", TMP=self.tmp, PORT=PORT, PLAIN_PORT=PLAIN_PORT,
                           WWW=self.www)
        self.sh(*self.netns(self.ns_b, self.tools["nginx"], "-t", "-q", "-e", "stderr",
                            "-c", conf))
        self.nginx_run = self.start(self.sigil_run("b", self.tools["nginx"], "-e", "stderr",
                                                   "-c", conf), "nginx")
        # Agent B must find the listener (BPF bind record of the nginx master), attest it and
        # hold the web SVID before a Sigil client gets through; poll the real path.
        deadline = time.monotonic() + 40
        last = None
        while time.monotonic() < deadline:
            last = subprocess.run(self.sigil_run("a", self.tools["curl"], "-sS", "--max-time", "5",
                                                 "-o", "/dev/null", "-w", "%{http_code}",
                                                 f"http://{self.ip_b}:{PORT}/small.bin"),
                                  capture_output=True, text=True, timeout=30)
            if last.returncode == 0 and last.stdout == "200":
                break
            if not self.nginx_run.alive():
                raise PhaseError(f"nginx exited\n{self.nginx_run.tail()}")
            time.sleep(0.5)
        else:
            raise PhaseError(
                "no answer from nginx through the mesh (did agent B find nginx's listener?)\n"
                f"curl: {last.stdout if last else ''} {last.stderr if last else ''}\n"
                f"agent A:\n{self.agents['a'].tail(15)}\nagent B:\n{self.agents['b'].tail(15)}")
        self.agents["b"].wait_for(
            r"dataplane\.inbound\.accepted.*spiffe://example\.org/bench/curl", timeout=5)
        kids = children(self.nginx_run.pid)
        if not kids:
            raise PhaseError("cannot find the nginx master under sigil run")
        self.nginx_master = kids[0]

    def start_haproxy(self) -> None:
        vals = dict(TMP=self.tmp, IP_B=self.ip_b, TLS_PORT=TLS_PORT, PORT=PORT,
                    FRONT_PORT=FRONT_PORT, FRONT_PORT_NOREUSE=FRONT_NOREUSE)
        srv = self.render("haproxy-server.cfg.in", self.tmp / "haproxy-server.cfg", **vals)
        cli = self.render("haproxy-client.cfg.in", self.tmp / "haproxy-client.cfg", **vals)
        hp = self.tools["haproxy"]
        for cfg in (srv, cli):
            self.sh(hp, "-c", "-q", "-f", cfg)
        self.haproxy = {"b": self.start(self.netns(self.ns_b, hp, "-db", "-f", srv), "haproxy-b"),
                        "a": self.start(self.netns(self.ns_a, hp, "-db", "-f", cli), "haproxy-a")}
        for port in (FRONT_PORT, FRONT_NOREUSE):
            deadline = time.monotonic() + 15
            while True:
                r = subprocess.run(self.netns(self.ns_a, self.tools["curl"], "-sS", "--max-time",
                                              "5", "-o", "/dev/null", "-w", "%{http_code}",
                                              f"http://127.0.0.1:{port}/small.bin"),
                                   capture_output=True, text=True, timeout=30)
                if r.returncode == 0 and r.stdout == "200":
                    break
                if time.monotonic() > deadline:
                    raise PhaseError(f"no answer through the HAProxy pair on {port}: "
                                     f"{r.stdout} {r.stderr}\n{self.haproxy['a'].tail()}\n"
                                     f"{self.haproxy['b'].tail()}")
                time.sleep(0.3)

    # --- measurement ------------------------------------------------------------------------

    def url(self, path: str, file: str) -> str:
        if path == "haproxy":
            return f"http://127.0.0.1:{FRONT_PORT}/{file}"
        if path == "haproxy-noreuse":
            return f"http://127.0.0.1:{FRONT_NOREUSE}/{file}"
        if path == "plain":
            return f"http://{self.ip_b}:{PLAIN_PORT}/{file}"
        return f"http://{self.ip_b}:{PORT}/{file}"

    def client(self, path: str, *cmd) -> list[str]:
        return self.sigil_run("a", *cmd) if path == "sigil" else self.netns(self.ns_a, *cmd)

    def watched(self) -> dict[str, int]:
        w = {"agent A": self.agents["a"].pid, "agent B": self.agents["b"].pid,
             "haproxy A": self.haproxy["a"].pid, "haproxy B": self.haproxy["b"].pid,
             "sigil server": self.server.pid}
        return w

    def cpu_snapshot(self) -> dict:
        snap = {k: ticks(p) for k, p in self.watched().items()}
        snap["nginx"] = ticks(self.nginx_master) + sum(ticks(c) for c in children(self.nginx_master))
        snap["_machine"] = machine_busy()
        snap["_t"] = time.monotonic()
        snap["_thr_a"] = thread_ticks(self.agents["a"].pid)
        snap["_thr_b"] = thread_ticks(self.agents["b"].pid)
        return snap

    def cpu_delta(self, key: tuple, before: dict, after: dict) -> None:
        wall = after["_t"] - before["_t"]
        d = {k: (after[k] - before[k]) / HZ for k in before if not k.startswith("_")}
        busy = after["_machine"][0] - before["_machine"][0]
        total = after["_machine"][1] - before["_machine"][1]
        d["machine busy"] = busy / total if total else 0.0
        d["wall"] = wall
        self.cpu[key] = d
        self.threads[key] = {
            h: {n: (after[f"_thr_{h}"].get(n, 0) - before[f"_thr_{h}"].get(n, 0)) / HZ
                for n in after[f"_thr_{h}"]} for h in ("a", "b")}

    def measure(self, path: str, phase: str, argv: list[str], timeout: float, parse) -> None:
        key = (path, phase)
        before = self.cpu_snapshot()
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
            after = self.cpu_snapshot()
            if r.returncode != 0:
                raise PhaseError(f"exit {r.returncode}: {' '.join(argv)}\n{r.stdout}\n{r.stderr}")
            res = parse(r.stdout)
            self.results[key] = res
            self.cpu_delta(key, before, after)
            log(f"  {path:16s} {phase:9s} {self.describe(phase, res)}")
        except (PhaseError, subprocess.TimeoutExpired) as e:
            self.failures.append(f"{path} {phase}: {e}")
            log(f"  {path:16s} {phase:9s} FAILED: {str(e)[:800]}")

    @staticmethod
    def describe(phase: str, r: dict) -> str:
        if phase in ("stream1", "stream16"):
            return f"{r['mbps']:.0f} MB/s"
        s = f"{r['rps']:.0f} req/s"
        if "p50" in r:
            s += f"  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms"
        if r.get("errors"):
            s += f"  errors {r['errors']} ({r.get('socket_errors', '')})"
        return s

    def wrk(self, path: str, phase: str, conns: int, threads: int, seconds: float, file: str,
            extra: list[str] = ()) -> None:
        argv = self.client(path, self.tools["wrk"], f"-t{threads}", f"-c{conns}",
                           f"-d{seconds}s", "--timeout", "30s", "--latency", *extra,
                           self.url(path, file))

        def parse(out: str) -> dict:
            r = parse_wrk(out)
            r["mbps"] = r["bytes_per_s"] / 1e6
            return r
        self.measure(path, phase, argv, seconds + 60, parse)

    def curl_stream(self, path: str) -> None:
        want = self.args.stream_mib << 20
        argv = self.client(path, self.tools["curl"], "-sS", "-o", "/dev/null", "--max-time", "120",
                           "-w", "%{speed_download} %{size_download} %{http_code}",
                           self.url(path, "big.bin"))

        def parse(out: str) -> dict:
            speed, size, code = out.split()
            if code != "200" or int(size) != want:
                raise PhaseError(f"curl: HTTP {code}, {size} of {want} bytes")
            return {"mbps": float(speed) / 1e6}
        self.measure(path, "stream1", argv, 150, parse)

    # --- memory per idle connection ---------------------------------------------------------

    IDLE_CLIENT = r'''
import re, socket, sys, time
host, port, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = []
for i in range(n):
    socks.append(socket.create_connection((host, port), timeout=20))
    if batch and len(socks) % batch == 0:
        time.sleep(0.2)
print("opened", len(socks), flush=True)
for line in sys.stdin:
    if line.strip() == "request":
        req = ("GET /small.bin HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode()
        for s in socks:
            s.sendall(req)
        ok = 0
        for s in socks:
            buf = b""
            while b"\r\n\r\n" not in buf:
                c = s.recv(65536)
                if not c:
                    break
                buf += c
            head, _, body = buf.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            need = int(m.group(1)) if m else -1
            while 0 <= need and len(body) < need:
                c = s.recv(65536)
                if not c:
                    break
                body += c
            ok += head.startswith(b"HTTP/1.1 200") and len(body) == need
        print("requested", ok, flush=True)
    else:
        break
'''

    def established_to_nginx(self) -> int:
        r = self.sh(*self.netns(self.ns_b, self.tools["ss"], "-Htn", "state", "established",
                                f"( sport = :{PORT} )"), check=False)
        return len([l for l in r.stdout.splitlines() if l.strip()])

    def idle_memory(self, path: str) -> None:
        n = self.args.idle_conns
        script = self.tmp / "idle_client.py"
        script.write_text(self.IDLE_CLIENT)
        if path == "sigil":
            pids = {"agent A": self.agents["a"].pid, "agent B": self.agents["b"].pid}
            host, port = self.ip_b, PORT
        else:
            pids = {"haproxy A": self.haproxy["a"].pid, "haproxy B": self.haproxy["b"].pid}
            host, port = "127.0.0.1", FRONT_PORT

        def run_client(count: int) -> subprocess.Popen:
            return subprocess.Popen(self.client(path, self.python, script, host, port, count,
                                                    self.args.idle_batch),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)

        def readline(p: subprocess.Popen, timeout: float) -> str:
            ready, _, _ = select.select([p.stdout], [], [], timeout)
            if not ready:
                raise PhaseError(f"idle client: no answer within {timeout}s")
            line = p.stdout.readline()
            if not line:
                raise PhaseError(f"idle client exited: {p.stderr.read()[-2000:]}")
            return line.strip()

        def settle(target: int, timeout: float = 60) -> int:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                c = self.established_to_nginx()
                if c == target:
                    return c
                time.sleep(0.25)
            return self.established_to_nginx()

        def finish(p: subprocess.Popen) -> None:
            try:
                if p.poll() is None:
                    p.stdin.write("exit\n")
                    p.stdin.flush()
                p.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()
                p.wait(timeout=5)

        key = path
        try:
            # Warm up: the client identity's SVID and TLS context exist before the baseline.
            w = run_client(4)
            readline(w, 30)
            w.stdin.write("request\n")
            w.stdin.flush()
            readline(w, 30)
            finish(w)
            base_conns = settle(0, 20)
            time.sleep(0.5)
            before = {k: status_kib(p) for k, p in pids.items()}
            p = run_client(n)
            try:
                t0 = time.monotonic()
                line = readline(p, 90)
                if line != f"opened {n}":
                    raise PhaseError(f"idle client: {line}")
                got = settle(base_conns + n, 90)
                setup_s = time.monotonic() - t0
                if got < base_conns + n:
                    raise PhaseError(f"only {got - base_conns} of {n} idle connections reached "
                                     f"nginx within 90 s")
                time.sleep(1.0)
                opened = {k: status_kib(pp) for k, pp in pids.items()}
                p.stdin.write("request\n")
                p.stdin.flush()
                line = readline(p, 90)
                if line != f"requested {n}":
                    raise PhaseError(f"idle client after one request each: {line}")
                time.sleep(1.0)
                used = {k: status_kib(pp) for k, pp in pids.items()}
            finally:
                finish(p)
            settle(base_conns, 30)
            self.memory[key] = {"n": n, "before": before, "opened": opened, "used": used,
                                "setup_s": setup_s}
            per = ", ".join(
                f"{k} {(opened[k]['VmRSS'] - before[k]['VmRSS']) / n:.1f} KiB/conn idle, "
                f"{(used[k]['VmRSS'] - before[k]['VmRSS']) / n:.1f} after 1 req"
                for k in pids)
            log(f"  {path:16s} memory    {n} conns open in {setup_s:.1f} s: {per}")
        except (PhaseError, OSError, subprocess.TimeoutExpired) as e:
            self.failures.append(f"{path} memory: {e}")
            log(f"  {path:16s} memory    FAILED: {str(e)[:800]}")

    # --- run --------------------------------------------------------------------------------

    def run(self) -> None:
        a = self.args
        self.busy = quiet_or_warn()
        if self.busy:
            log(self.busy)
        log(f"temp dir {self.tmp}; namespaces {self.ns_a} ({self.ip_a}), {self.ns_b} "
            f"({self.ip_b}); {os.cpu_count()} CPUs")
        self.make_hosts()
        self.make_pki()
        self.make_www()
        self.start_sigil()
        self.start_nginx()
        self.start_haproxy()
        log(f"all up: sigil agents ({self.loops} event loops each), nginx (1 worker), "
            "HAProxy pair (nbthread 1 each)")

        ph = a.phases
        if "memory" in ph:
            log("memory per idle proxied connection")
            self.idle_memory("sigil")
            self.idle_memory("haproxy")

        paths = ["plain", "sigil", "haproxy"]
        log("warm-up")
        for p in paths:  # first connections: SVID issuance for wrk, TLS contexts, page cache
            subprocess.run(self.client(p, self.tools["wrk"], "-t1", "-c4", "-d1s",
                                       self.url(p, "small.bin")),
                           capture_output=True, timeout=60)
        if "ka16" in ph:
            log("keep-alive, 16 connections, 1 KiB")
            for p in paths:
                self.wrk(p, "ka16", 16, 2, a.duration, "small.bin")
        if "ka1" in ph:
            log("keep-alive, 1 connection, 1 KiB (unloaded latency)")
            for p in paths:
                self.wrk(p, "ka1", 1, 1, a.lat1_duration, "small.bin")
        if "close" in ph:
            log("new connection per request (Connection: close), 16 at a time, 1 KiB")
            for p in paths + ["haproxy-noreuse"]:
                self.wrk(p, "close", 16, 2, a.close_duration, "small.bin",
                         ["-H", "Connection: close"])
        if "stream1" in ph:
            log(f"one stream, {a.stream_mib} MiB (curl), {a.stream1_reps} rounds, median")
            runs: dict[str, list] = {p: [] for p in paths}
            for _ in range(a.stream1_reps):  # interleaved rounds: a short transfer is noisy
                for p in paths:
                    self.curl_stream(p)
                    if (p, "stream1") in self.results:
                        runs[p].append((self.results.pop((p, "stream1")),
                                        self.cpu.pop((p, "stream1")),
                                        self.threads.pop((p, "stream1"))))
            for p, rs in runs.items():
                if rs:
                    rs.sort(key=lambda r: r[0]["mbps"])
                    res, cpu, thr = rs[len(rs) // 2]
                    res["all"] = [r[0]["mbps"] for r in rs]
                    self.results[(p, "stream1")] = res
                    self.cpu[(p, "stream1")] = cpu
                    self.threads[(p, "stream1")] = thr
                    log(f"  {p:16s} stream1   median {res['mbps']:.0f} MB/s of "
                        + ", ".join(f"{x:.0f}" for x in res["all"]))
        if "stream16" in ph:
            log(f"16 streams, {a.multi_mib} MiB file repeatedly (wrk), {a.stream16_duration} s")
            for p in paths:
                self.wrk(p, "stream16", 16, 2, a.stream16_duration, "mid.bin")

        self.check_processes()
        self.report()
        if self.args.hold > 0:
            log(f"holding {self.args.hold} s: agents {self.agents['a'].pid} (A) "
                f"{self.agents['b'].pid} (B), haproxy {self.haproxy['a'].pid} (A) "
                f"{self.haproxy['b'].pid} (B), nginx master {self.nginx_master}; "
                f"sigil run: --cgroup-root {self.tmp / 'cgroup2'} --managed-cgroup "
                f"{self.managed['a']} in {self.ns_a}; touch {self.tmp}/release to stop early")
            end = time.monotonic() + min(self.args.hold, 3600)
            while time.monotonic() < end and not (self.tmp / "release").exists():
                time.sleep(1)

    def check_processes(self) -> None:
        for p in [self.server, self.nginx_run, *self.agents.values(), *self.haproxy.values()]:
            if not p.alive():
                self.failures.append(f"{p.name} exited during the run:\n{p.tail()}")
        for host, ag in self.agents.items():
            out = ag.output()
            for pat in ("dataplane.outbound.refused", "dataplane.outbound.handshake_failed",
                        "dataplane.inbound.handshake_failed", "dataplane.outbound.peer_unreachable",
                        "dataplane.relay.end", "dataplane.outbound.unattributed",
                        "dataplane.inbound.refused", "dataplane.inbound.denied"):
                c = out.count(pat)
                if c:
                    log(f"note: agent {host.upper()} logged {pat} x{c}")
        self.log_bytes = {h: ag.logfile.stat().st_size for h, ag in self.agents.items()}

    # --- report -----------------------------------------------------------------------------

    def report(self) -> None:
        R = self.results
        g = lambda p, ph, k: R.get((p, ph), {}).get(k)  # noqa: E731

        def fmt(v, spec="{:,.0f}"):
            return "—" if v is None else spec.format(v)

        def ratio(x, y):
            return None if x is None or y in (None, 0) else x / y

        print()
        print("=" * 100)
        print(f"Sigil data plane benchmark — {time.strftime('%Y-%m-%d %H:%M')} — "
              f"{os.cpu_count()} CPUs, kernel {os.uname().release}")
        print(f"sigil: {self.binary_info}")
        print(f"agents: {self.loops} event loops each (one per core); HAProxy 2.6: nbthread 1 "
              f"each; nginx: 1 worker. All in one run.")
        print("=" * 100)
        hdr = (f"{'path':16s} {'ka16 req/s':>11s} {'p50 ms':>7s} {'p99 ms':>7s} "
               f"{'ka1 p50':>8s} {'ka1 p99':>8s} {'new conn/s':>10s} {'1 stream':>9s} "
               f"{'16 streams':>10s}")
        print(hdr)
        print(f"{'':16s} {'':>11s} {'(16 conns)':>15s} {'(1 conn, ms)':>17s} {'':>10s} "
              f"{'MB/s':>9s} {'MB/s':>10s}")
        for p in ("plain", "sigil", "haproxy", "haproxy-noreuse"):
            print(f"{p:16s} {fmt(g(p, 'ka16', 'rps')):>11s} "
                  f"{fmt(g(p, 'ka16', 'p50'), '{:.3f}'):>7s} {fmt(g(p, 'ka16', 'p99'), '{:.3f}'):>7s} "
                  f"{fmt(g(p, 'ka1', 'p50'), '{:.3f}'):>8s} {fmt(g(p, 'ka1', 'p99'), '{:.3f}'):>8s} "
                  f"{fmt(g(p, 'close', 'rps')):>10s} {fmt(g(p, 'stream1', 'mbps')):>9s} "
                  f"{fmt(g(p, 'stream16', 'mbps')):>10s}")
        errs = [(k, v["errors"], v.get("socket_errors", "")) for k, v in R.items()
                if v.get("errors")]
        for (p, ph), n, s in errs:
            print(f"  ({p} {ph}: {n} wrk errors: {s})")

        print()
        print("added latency (path minus plain), ms:")
        added = {}
        for p in ("sigil", "haproxy"):
            row = []
            for ph in ("ka16", "ka1"):
                for q in ("p50", "p99"):
                    v, b = g(p, ph, q), g("plain", ph, q)
                    added[(p, ph, q)] = None if v is None or b is None else v - b
                    row.append(f"{ph} {q} {fmt(added[(p, ph, q)], '{:+.3f}')}")
            print(f"  {p:8s} " + "   ".join(row))

        print()
        print("ratios:                      Sigil/HAProxy   Sigil/plain   HAProxy/plain")
        rows = [("keep-alive req/s (16)", "ka16", "rps"), ("new connections/s", "close", "rps"),
                ("one stream MB/s", "stream1", "mbps"), ("16 streams MB/s", "stream16", "mbps"),
                ("p50 latency (16)", "ka16", "p50"), ("p99 latency (16)", "ka16", "p99"),
                ("p50 latency (1 conn)", "ka1", "p50"), ("p99 latency (1 conn)", "ka1", "p99")]
        for label, ph, k in rows:
            s, h, pl = g("sigil", ph, k), g("haproxy", ph, k), g("plain", ph, k)
            print(f"  {label:26s} {fmt(ratio(s, h), '{:.2f}'):>13s} {fmt(ratio(s, pl), '{:.2f}'):>13s}"
                  f" {fmt(ratio(h, pl), '{:.2f}'):>15s}")
        nr = ratio(g("sigil", "close", "rps"), g("haproxy-noreuse", "close", "rps"))
        print(f"  {'new conns/s vs HAProxy without TLS session reuse':50s} {fmt(nr, '{:.2f}')}")

        print()
        print("memory per idle proxied connection (VmRSS delta / connections, KiB):")
        mem_max = None
        for path, m in self.memory.items():
            for k in m["before"]:
                b, o, u = m["before"][k], m["opened"][k], m["used"][k]
                idle = (o["VmRSS"] - b["VmRSS"]) / m["n"]
                after = (u["VmRSS"] - b["VmRSS"]) / m["n"]
                anon = (o.get("RssAnon", 0) - b.get("RssAnon", 0)) / m["n"]
                print(f"  {k:10s} {m['n']} conns: idle {idle:6.1f} (anon {anon:6.1f})   after one "
                      f"1 KiB request each {after:6.1f}   [VmRSS {b['VmRSS']} -> {o['VmRSS']} -> "
                      f"{u['VmRSS']} KiB]")
                if path == "sigil":
                    mem_max = max(mem_max or 0, idle, after)

        print()
        print("CPU seconds per phase (all paths share 2 CPUs; 'busy' = whole machine):")
        procs = ["agent A", "agent B", "haproxy A", "haproxy B", "nginx", "sigil server"]
        print(f"  {'path/phase':24s} " + " ".join(f"{p:>9s}" for p in procs) + f" {'busy':>6s}")
        for (p, ph), d in self.cpu.items():
            print(f"  {p + ' ' + ph:24s} " + " ".join(f"{d.get(x, 0):9.2f}" for x in procs) +
                  f" {d['machine busy'] * 100:5.0f}%")
        print()
        print("CPU per new connection (close phase), µs:")
        for p, who in (("sigil", ("agent A", "agent B")), ("haproxy", ("haproxy A", "haproxy B")),
                       ("haproxy-noreuse", ("haproxy A", "haproxy B"))):
            d, r = self.cpu.get((p, "close")), R.get((p, "close"))
            if d and r:
                conns = r["rps"] * d["wall"]
                print(f"  {p:16s} " + "  ".join(f"{w} {d[w] / conns * 1e6:7.0f}" for w in who) +
                      f"  (nginx {d['nginx'] / conns * 1e6:5.0f})")
        print("CPU per keep-alive request (ka16 phase), µs:")
        for p, who in (("sigil", ("agent A", "agent B")), ("haproxy", ("haproxy A", "haproxy B"))):
            d, r = self.cpu.get((p, "ka16")), R.get((p, "ka16"))
            if d and r:
                reqs = r["rps"] * d["wall"]
                print(f"  {p:16s} " + "  ".join(f"{w} {d[w] / reqs * 1e6:7.1f}" for w in who))
        for ph in ("close", "ka16"):
            t = self.threads.get(("sigil", ph))
            if t:
                for h in ("a", "b"):
                    top = sorted(t[h].items(), key=lambda kv: -kv[1])[:6]
                    print(f"  agent {h.upper()} threads, sigil {ph}: " +
                          ", ".join(f"{n} {s:.2f}s" for n, s in top if s > 0))
        if hasattr(self, "log_bytes"):
            print(f"  agent log volume over the run: A {self.log_bytes['a'] / 1e6:.1f} MB, "
                  f"B {self.log_bytes['b'] / 1e6:.1f} MB")

        print()
        print("targets:")

        def target(label, ok, detail):
            state = "n/a " if ok is None else ("MET " if ok else "MISS")
            print(f"  [{state}] {label}: {detail}")
        for label, ph, k in (("one-stream throughput ≥ 1.2× HAProxy", "stream1", "mbps"),
                             ("keep-alive requests/s ≥ 1.2× HAProxy", "ka16", "rps")):
            rr = ratio(g("sigil", ph, k), g("haproxy", ph, k))
            target(label, None if rr is None else rr >= 1.2, f"{fmt(rr, '{:.2f}')}×")
        for ph, what in (("ka16", "16 conns"), ("ka1", "1 conn")):
            s, h = added.get(("sigil", ph, "p99")), added.get(("haproxy", ph, "p99"))
            target(f"p99 added latency ≤ HAProxy's ({what})",
                   None if s is None or h is None else s <= h,
                   f"Sigil {fmt(s, '{:+.3f}')} ms vs HAProxy {fmt(h, '{:+.3f}')} ms")
        rr = ratio(g("sigil", "close", "rps"), g("haproxy", "close", "rps"))
        target("new connections/s ≥ 3× HAProxy", None if rr is None else rr >= 3,
               f"{fmt(rr, '{:.2f}')}× ({fmt(nr, '{:.2f}')}× HAProxy without session reuse)")
        target("agent memory < 10 KiB per idle proxied connection",
               None if mem_max is None else mem_max < 10,
               f"worst agent {fmt(mem_max, '{:.1f}')} KiB/conn")
        print()
        if self.failures:
            print(f"FAILED phases ({len(self.failures)}):")
            for f in self.failures:
                print("  - " + f.splitlines()[0][:300])
        else:
            print("all phases ran")
        if getattr(self, "busy", ""):
            print(self.busy)

    # --- cleanup ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - keep cleaning up
                pass
        for ns in self.made_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        # Managed cgroups: under the host's cgroup2 mount (the agents mount their own view at
        # tmp/cgroup2 inside their namespaces' private mount tables).
        mount = None
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            parts = line.split(" - ")
            if len(parts) == 2 and parts[1].split()[0] == "cgroup2":
                mount = parts[0].split()[4]
                break
        if mount:
            for name in self.managed.values():
                base = Path(mount) / name
                if base.is_dir():
                    for leaf in sorted(base.glob("**/"), key=lambda x: -len(str(x))):
                        try:
                            os.rmdir(leaf)
                        except OSError:
                            pass
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sigil", default=os.environ.get(
        "SIGIL_BIN", str(HERE.parent.parent / "build/release/apps/sigil/sigil")))
    ap.add_argument("--duration", type=int, default=10, help="keep-alive phase, s (16 conns)")
    ap.add_argument("--lat1-duration", type=int, default=5, help="1-connection latency phase, s")
    ap.add_argument("--close-duration", type=int, default=5, help="new-connection phase, s")
    ap.add_argument("--stream16-duration", type=int, default=5, help="16-stream phase, s")
    ap.add_argument("--stream1-reps", type=int, default=3,
                    help="one-stream rounds per path (median reported)")
    ap.add_argument("--stream-mib", type=int, default=256, help="one-stream file size, MiB")
    ap.add_argument("--multi-mib", type=int, default=64, help="16-stream file size, MiB")
    ap.add_argument("--idle-conns", type=int, default=1000, help="idle connections (memory)")
    ap.add_argument("--phases", default="memory,ka16,ka1,close,stream1,stream16",
                    help="comma-separated subset of memory,ka16,ka1,close,stream1,stream16")
    ap.add_argument("--idle-batch", type=int, default=100,
                    help="memory phase: open idle connections in batches of this many, 0.2 s "
                         "apart (0: all at once; see README, agent accept bug)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs) at exit")
    ap.add_argument("--agent-loops", type=int, default=0,
                    help="event loops per agent (--dataplane-loops; 0 = one per core)")
    ap.add_argument("--agent-arg", action="append", default=[],
                    help="extra argument for both agents, repeatable (e.g. --agent-arg=--no-pool "
                         "for one sigil/1 handshake per connection instead of pooled sigil/2)")
    ap.add_argument("--hold", type=int, default=0,
                    help="debugging: keep everything running this many seconds (max 3600) "
                         "after the report, for perf/ss/curl by hand")
    args = ap.parse_args()
    if not (1 <= args.duration <= 120 and 1 <= args.lat1_duration <= 120 and
            1 <= args.close_duration <= 120 and 1 <= args.stream16_duration <= 120 and
            1 <= args.stream_mib <= 4096 and 1 <= args.multi_mib <= 1024 and
            1 <= args.idle_conns <= 5000 and 1 <= args.stream1_reps <= 9):
        ap.error("durations 1-120 s, --stream-mib 1-4096, --multi-mib 1-1024, "
                 "--idle-conns 1-5000, --stream1-reps 1-9")
    args.phases = set(args.phases.split(","))
    if not args.phases <= {"memory", "ka16", "ka1", "close", "stream1", "stream16"}:
        ap.error(f"--phases: unknown phase in {sorted(args.phases)}")
    if os.geteuid() != 0:
        print("dataplane_bench: run as root (network namespaces, BPF, cgroup2)", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    def on_signal(sig, _frame):
        raise SystemExit(f"dataplane_bench: signal {sig}, cleaning up")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    try:
        bench = Bench(args)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    try:
        bench.run()
    except PhaseError as e:
        bench.failures.append(f"setup: {e}")
        print(f"dataplane_bench: setup failed: {e}", file=sys.stderr)
    finally:
        bench.cleanup()
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
