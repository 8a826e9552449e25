"""A two-"host" Sigil mesh for end-to-end tests: network namespaces A and B joined by veth, one
`sigil server` in A, one `sigil agent --dataplane` per host, and `sigil run` for workloads.

    mesh = Mesh(tmp, "example.org", "10.78.0.1", "10.78.0.2")
    mesh.start(resources_yaml)            # namespaces, cgroup2 mount, server, apply, agents
    mesh.cli("audit", "--json")           # admin CLI against the server
    mesh.run_argv("B", "python3", ...)    # argv of `sigil run` under agent B's managed cgroup
    mesh.close()                          # kills everything started, removes what was made

Every wait is bounded; anything missing raises (a test that cannot set up fails)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import helpers
from helpers import Peer, run
from netns_topology import delete_hosts, make_hosts, netns, remove_cgroup_tree, sh


class Mesh:
    def __init__(self, tmp: Path, td: str, ip_a: str, ip_b: str, tag: str = "mesh"):
        self.tmp, self.td = tmp, td
        self.ip = {"A": ip_a, "B": ip_b}
        pid = os.getpid()
        self.ns = {"A": f"sg{tag[:3]}A{pid}", "B": f"sg{tag[:3]}B{pid}"}
        self.veth_prefix = f"w{pid % 100000}"
        self.tag = tag
        self.sigil = helpers.sigil_bin()
        self.peers: list[Peer] = []
        self.agents: dict[str, Peer] = {}
        self.cgroup_root = tmp / "cgroup2"
        self._cleanup_dirs: list[Path] = []
        self._mounted = False
        self._made_ns = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, resources: str, agent_args: dict[str, list] | None = None,
              server_args: list | None = None) -> None:
        helpers.require_tool("ip")
        self._made_ns = True
        self.veth_a = make_hosts(self.ns["A"], self.ip["A"], self.ns["B"], self.ip["B"],
                                 self.veth_prefix)
        # Our own cgroup2 mount: `ip netns exec` remounts /sys, so the agents would not see a
        # mount under /sys/fs/cgroup; they find this one.
        self.cgroup_root.mkdir(exist_ok=True)
        sh("mount", "-t", "cgroup2", "none", self.cgroup_root)
        self._mounted = True
        self._start_server(server_args or [])
        self.cli("apply", "-f", "-", input=resources)
        for host in ("A", "B"):
            self.start_agent(host, (agent_args or {}).get(host, []))

    def close(self) -> None:
        for p in reversed(self.peers):
            p.kill()
        for d in self._cleanup_dirs:
            remove_cgroup_tree(d)
        if self._mounted:
            subprocess.run(["umount", "-l", str(self.cgroup_root)], capture_output=True)
        if self._made_ns:
            delete_hosts(*self.ns.values())

    # --- pieces ------------------------------------------------------------------------------

    def cli(self, *args, input=None, check=True) -> subprocess.CompletedProcess:
        return run(netns(self.ns["A"], self.sigil, *args, "--server", self.admin_url,
                         "--credentials", self.server_data / "admin"), input=input, check=check)

    def _start_server(self, extra: list) -> None:
        self.server_data = self.tmp / "server"
        ready = self.tmp / "server.ready"
        peer = Peer(netns(self.ns["A"], self.sigil, "server", "--data-dir", self.server_data,
                          "--trust-domain", self.td, "--admin-listen", "127.0.0.1:0",
                          "--agent-listen", f"{self.ip['A']}:0", "--metrics-listen", "off",
                          "--ready-file", ready, *extra), "sigil-server")
        self.peers.append(peer)
        self.server = peer
        addr = helpers.wait_ready_file(peer, ready, "server", timeout=30)
        self.admin_url = "https://" + addr["admin"]
        self.agent_api = addr["agent"]

    def start_agent(self, host: str, extra: list) -> Peer:
        name = f"host-{host.lower()}"
        token = self.cli("token", "create", "--node", name).stdout
        m = re.search(r"SJT1\.[^\s]+", token)
        assert m, token
        token_file = self.tmp / f"token-{host}"
        token_file.write_text(m.group(0) + "\n")
        os.chmod(token_file, 0o600)
        ready = self.tmp / f"agent-{host}.ready"
        managed = f"sigil-{self.tag}-{os.getpid()}-{host.lower()}"
        peer = Peer(netns(self.ns[host], self.sigil, "agent", "--server", self.agent_api,
                          "--join-token-file", token_file, "--data-dir", self.tmp / f"agent-{host}",
                          "--socket", self.tmp / f"agent-{host}.sock", "--node-name", name,
                          "--health-listen", "127.0.0.1:0", "--ready-file", ready,
                          "--dataplane", "--cgroup-root", self.cgroup_root,
                          "--creds-mount", "", "--managed-cgroup", managed, *extra),
                    f"sigil-agent-{host}")
        self.peers.append(peer)
        addr = helpers.wait_ready_file(peer, ready, f"agent {host}", timeout=30)
        peer.managed = managed
        peer.node = name
        peer.health = addr["health"]
        peer.socket = self.tmp / f"agent-{host}.sock"
        self._cleanup_dirs.append(self.cgroup_root / managed)
        peer.wait_for(r"dataplane\.intercept", timeout=10)
        self.agents[host] = peer
        return peer

    def run_argv(self, host: str, *cmd: object) -> list[str]:
        """argv running `cmd` in host's namespace under its agent's managed cgroup."""
        return netns(self.ns[host], self.sigil, "run", "--cgroup-root", self.cgroup_root,
                     "--managed-cgroup", self.agents[host].managed, "--", *cmd)

    def in_ns(self, host: str, *cmd: object) -> list[str]:
        return netns(self.ns[host], *cmd)

    def metrics(self, host: str) -> dict[str, float]:
        """The agent's /metrics counters as {name: value}."""
        out = run(netns(self.ns[host], "curl", "-sS", "--max-time", "5",
                        f"http://{self.agents[host].health}/metrics")).stdout
        values = {}
        for line in out.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    values[key] = float(value)
                except ValueError:
                    pass
        return values
