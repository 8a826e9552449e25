"""The nftables interception fallback end to end: the topology of test_dataplane.py (two
"hosts" as network namespaces joined by veth, one `sigil server`, one agent per host, workloads
under `sigil run`), with both agents started with `--intercept nftables`.

  host A (10.78.0.1): server, agent A, clients (curl)
  host B (10.78.0.2): agent B, an HTTP server (python3 -m http.server) started with sigil run

Checks, against the real binaries and kernel:
  * both agents log that they intercept with nftables;
  * curl in A -> http://10.78.0.2:8080 goes through sigil/1 mTLS (agent B logs the client's
    SPIFFE ID, which agent A found by cgroup + socket inode, not by BPF);
  * a process outside managed cgroups is not intercepted (reaches a plain server directly,
    the agent's counters do not move);
  * /metrics report the method and the nftables counters, and the table holds the cgroup rule;
  * on SIGTERM the agent removes its table.
Run as root (namespaces, nftables, cgroup2); anything missing is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
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
from netns_topology import (delete_hosts, make_hosts, netns,  # noqa: E402
                            remove_cgroup_tree, sh)

TD = "example.org"
NS_A, NS_B = f"snA{os.getpid()}", f"snB{os.getpid()}"
IP_A, IP_B = "10.78.0.1", "10.78.0.2"
PORT = 8080
PLAIN_PORT = 8081  # an unmanaged, unprotected server in B
PYTHON = os.path.realpath("/usr/bin/python3")
CURL = os.path.realpath(shutil.which("curl") or "/usr/bin/curl")

RESOURCES = f"""
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: client}}
spec:
  spiffeId: spiffe://{TD}/client
  selectors: ["unix:path:{CURL}"]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {{name: web}}
spec:
  spiffeId: spiffe://{TD}/web
  selectors: ["unix:path:{PYTHON}"]
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: web}}
spec:
  mode: mutual
  addresses: ["{IP_B}:{PORT}"]
  identity: spiffe://{TD}/web
---
apiVersion: sigil.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: client-to-web}}
spec:
  sources: [spiffe://{TD}/client]
  destinations: [web]
"""




class NftInterceptTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._td = tempfile.TemporaryDirectory(prefix="sigil-nft-test-")
        cls.tmp = Path(cls._td.name)
        os.chmod(cls.tmp, 0o755)
        cls.peers: list[Peer] = []
        cls.cleanup_dirs: list[Path] = []
        cls.mounted: Path | None = None
        cls.made_ns = False
        try:
            cls.sigil = helpers.sigil_bin()
            for tool in ("ip", "curl", "nft"):
                helpers.require_tool(tool)
            cls._make_hosts()
            cls._mount_cgroup2()
            cls._start_server()
            cls.cli("apply", "-f", "-", input=RESOURCES)
            cls.agent_a = cls._start_agent("a", NS_A)
            cls.agent_b = cls._start_agent("b", NS_B)
            cls._start_web()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for p in reversed(cls.peers):
            p.kill()
        for d in cls.cleanup_dirs:
            cls._remove_cgroup_tree(d)
        if cls.mounted is not None:
            subprocess.run(["umount", "-l", str(cls.mounted)], capture_output=True)
        if cls.made_ns:
            delete_hosts(NS_A, NS_B)
        cls._td.cleanup()

    # --- setup -------------------------------------------------------------------------------

    @classmethod
    def _make_hosts(cls) -> None:
        cls.made_ns = True
        make_hosts(NS_A, IP_A, NS_B, IP_B, f"n{os.getpid() % 100000}")

    @classmethod
    def _mount_cgroup2(cls) -> None:
        # `ip netns exec` remounts /sys, hiding the host's cgroup2 mount from the agents; this
        # one stays visible, and they find it first.
        mount = cls.tmp / "cgroup2"
        mount.mkdir()
        sh("mount", "-t", "cgroup2", "none", mount)
        cls.mounted = mount

    @classmethod
    def cli(cls, *args, input=None, check=True):
        return run(netns(NS_A, cls.sigil, *args, "--server", cls.admin_url, "--credentials",
                         cls.server_data / "admin"), input=input, check=check)

    @classmethod
    def _start_server(cls) -> None:
        cls.server_data = cls.tmp / "server"
        ready = cls.tmp / "server.ready"
        peer = Peer(netns(NS_A, cls.sigil, "server", "--data-dir", cls.server_data,
                          "--trust-domain", TD, "--admin-listen", "127.0.0.1:0",
                          "--agent-listen", f"{IP_A}:0", "--metrics-listen", "off",
                          "--ready-file", ready), "sigil-server")
        cls.peers.append(peer)
        addr = helpers.wait_ready_file(peer, ready, "server", timeout=30)
        cls.admin_url = "https://" + addr["admin"]
        cls.agent_api = addr["agent"]

    @classmethod
    def _start_agent(cls, name: str, ns: str) -> Peer:
        token = cls.cli("token", "create", "--node", f"host-{name}").stdout
        m = re.search(r"SJT1\.[^\s]+", token)
        assert m, token
        token_file = cls.tmp / f"token-{name}"
        token_file.write_text(m.group(0) + "\n")
        os.chmod(token_file, 0o600)
        ready = cls.tmp / f"agent-{name}.ready"
        managed = f"sigil-nft-{os.getpid()}-{name}"
        cls.cleanup_dirs.append(cls.tmp / "cgroup2" / managed)
        peer = Peer(netns(ns, cls.sigil, "agent", "--server", cls.agent_api,
                          "--join-token-file", token_file, "--data-dir", cls.tmp / f"agent-{name}",
                          "--socket", cls.tmp / f"agent-{name}.sock", "--node-name", f"host-{name}",
                          "--health-listen", "127.0.0.1:0", "--ready-file", ready,
                          "--dataplane", "--intercept", "nftables", "--creds-mount", "",
                          "--cgroup-root", cls.tmp / "cgroup2", "--managed-cgroup", managed),
                    f"sigil-agent-{name}")
        cls.peers.append(peer)
        addr = helpers.wait_ready_file(peer, ready, f"agent {name}", timeout=30)
        peer.managed = managed
        peer.health = addr["health"]
        peer.wait_for(r"dataplane\.intercept ", timeout=10)
        return peer

    @classmethod
    def sigil_run(cls, ns: str, agent: Peer, *cmd: object) -> list[str]:
        return netns(ns, cls.sigil, "run", "--cgroup-root", cls.tmp / "cgroup2",
                     "--managed-cgroup", agent.managed, "--", *cmd)

    @staticmethod
    def _remove_cgroup_tree(d: Path) -> None:
        remove_cgroup_tree(d)

    @classmethod
    def _start_web(cls) -> None:
        www = cls.tmp / "www"
        www.mkdir()
        (www / "hello.txt").write_bytes(b"hello through sigil\n")
        (www / "plain.txt").write_bytes(b"plain, not intercepted\n")
        web = Peer(cls.sigil_run(NS_B, cls.agent_b, PYTHON, "-m", "http.server", PORT,
                                 "--bind", IP_B, "--directory", www), "web")
        cls.peers.append(web)
        plain = Peer(netns(NS_B, PYTHON, "-m", "http.server", PLAIN_PORT, "--bind", IP_B,
                           "--directory", www), "plain")
        cls.peers.append(plain)
        # Agent B finds the listener (sock_diag + /proc under nftables), attests it and holds
        # the web SVID; poll through the real path until a managed client gets an answer.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(cls.sigil_run(NS_A, cls.agent_a, CURL, "-sS", "--max-time", "5",
                                             f"http://{IP_B}:{PORT}/hello.txt"),
                               capture_output=True, timeout=30)
            if r.returncode == 0 and r.stdout == b"hello through sigil\n":
                return
            time.sleep(0.5)
        raise AssertionError(f"no answer through the mesh\nagent A:\n{cls.agent_a.output}\n"
                             f"agent B:\n{cls.agent_b.output}\nweb:\n{web.output}")

    def metrics(self, agent: Peer, ns: str) -> dict[str, float]:
        r = run(netns(ns, "curl", "-sS", "--max-time", "5", f"http://{agent.health}/metrics"))
        out = {}
        for line in r.stdout.splitlines():
            if line and not line.startswith("#"):
                k, v = line.split()
                out[k] = float(v)
        return out

    # --- tests -------------------------------------------------------------------------------

    def test_01_agents_say_they_use_nftables(self):
        for agent in (self.agent_a, self.agent_b):
            agent.wait_for(r'dataplane\.intercept .*method="nftables"', timeout=5)
            self.assertNotIn('method="bpf"', agent.output)

    def test_02_curl_through_mtls_and_server_sees_identity(self):
        r = run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "10",
                               f"http://{IP_B}:{PORT}/hello.txt"))
        self.assertEqual(r.stdout, "hello through sigil\n")
        # One line per sigil/1 connection, or per pooled agent-to-agent connection.
        self.agent_b.wait_for(
            r"dataplane\.inbound\.(accepted|pooled).*spiffe://example\.org/client", timeout=5)

    def test_03_unmanaged_process_not_intercepted(self):
        before = self.metrics(self.agent_a, NS_A)
        r = run(netns(NS_A, CURL, "-sS", "--max-time", "10",
                      f"http://{IP_B}:{PLAIN_PORT}/plain.txt"))
        self.assertEqual(r.stdout, "plain, not intercepted\n")
        after = self.metrics(self.agent_a, NS_A)
        for key in ("sigil_dataplane_outbound_accepted_total",
                    "sigil_dataplane_intercept_redirected_total"):
            self.assertEqual(after[key], before[key], key)

    def test_04_metrics_and_rules(self):
        before = self.metrics(self.agent_a, NS_A)
        run(self.sigil_run(NS_A, self.agent_a, CURL, "-sS", "--max-time", "10",
                           f"http://{IP_B}:{PORT}/hello.txt"))
        after = self.metrics(self.agent_a, NS_A)
        self.assertEqual(after['sigil_dataplane_intercept_info{method="nftables"}'], 1)
        self.assertEqual(after["sigil_dataplane_intercept_redirected_total"]
                         - before["sigil_dataplane_intercept_redirected_total"], 1)
        self.assertEqual(after["sigil_dataplane_intercept_lookups_total"]
                         - before["sigil_dataplane_intercept_lookups_total"], 1)
        self.assertEqual(after["sigil_dataplane_outbound_mutual_total"]
                         - before["sigil_dataplane_outbound_mutual_total"], 1)
        self.assertEqual(after["sigil_dataplane_intercept_lookup_failures_total"],
                         before["sigil_dataplane_intercept_lookup_failures_total"])
        rules = run(netns(NS_A, "nft", "list", "table", "inet", "sigil_intercept")).stdout
        self.assertRegex(rules, r"socket cgroupv2 level \d+ .* goto to_listener")
        self.assertIn("dnat ip to 127.0.0.1:15001", rules)

    def test_09_table_removed_on_shutdown(self):
        # Last: agent A does not come back.
        self.agent_a.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.agent_a.wait_exit(timeout=20), 0, self.agent_a.output[-3000:])
        r = subprocess.run(netns(NS_A, "nft", "list", "table", "inet", "sigil_intercept"),
                           capture_output=True, timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stdout)


if __name__ == "__main__":
    helpers.main()
