"""Shared pieces of the two-"host" data plane topology used by the tests in this directory and
by bench/inject: network namespaces joined by veth, and removal of the cgroups a test made.
Every command is bounded by a timeout; failures raise (a test that cannot set up fails)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from helpers import run


def netns(ns: str, *argv: object) -> list[str]:
    return ["ip", "netns", "exec", ns, *[str(a) for a in argv]]


def sh(*argv: object, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(a) for a in argv], check=check, timeout=30)


def make_hosts(ns_a: str, ip_a: str, ns_b: str, ip_b: str, veth_prefix: str) -> str:
    """Creates namespaces ns_a and ns_b joined by a veth pair (<prefix>a/<prefix>b) with
    ip_a/24 and ip_b/24, loopback up in both. Returns the name of A's end."""
    sh("ip", "netns", "add", ns_a)
    sh("ip", "netns", "add", ns_b)
    va, vb = f"{veth_prefix}a", f"{veth_prefix}b"
    sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
    sh("ip", "link", "set", va, "netns", ns_a)
    sh("ip", "link", "set", vb, "netns", ns_b)
    for ns, dev, ip in ((ns_a, va, ip_a), (ns_b, vb, ip_b)):
        sh(*netns(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev))
        sh(*netns(ns, "ip", "link", "set", dev, "up"))
        sh(*netns(ns, "ip", "link", "set", "lo", "up"))
    return va


def delete_hosts(*namespaces: str) -> None:
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def remove_cgroup_tree(d: Path) -> None:
    """Kills every process in cgroup `d` (cgroup.kill) and removes it and its descendants,
    deepest first, within 5 s."""
    if not d.is_dir():
        return
    try:
        (d / "cgroup.kill").write_text("1")
    except OSError:
        pass
    deadline = time.monotonic() + 5
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        while time.monotonic() < deadline:
            try:
                sub.rmdir()
                break
            except OSError:
                time.sleep(0.05)
    while time.monotonic() < deadline:
        try:
            d.rmdir()
            break
        except OSError:
            time.sleep(0.05)
