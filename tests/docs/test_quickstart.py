#!/usr/bin/env python3
"""The README's quickstart, run as written.

The first ```sh block under "## Quickstart" in README.md is run by bash with `set -e`, with only
its `B=` line pointing at the binary under test. It uses fixed paths in /tmp and fixed ports, so
it runs in a network namespace of its own (loopback up) and a mount namespace with private
tmpfs on /tmp and /run (the agent's default credential mount lives under /run). The checks:
the script exits 0, the workload's whoami names the SVID the README's WorkloadIdentity gives
uid 0, the audit verifies, and both daemons stop on the script's closing `kill`.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "interop"))
import helpers  # noqa: E402

TIMEOUT = 120  # seconds for the whole script (ASan builds start slower)


def quickstart_block(readme: str) -> str:
    section = readme.split("\n## Quickstart", 1)
    if len(section) != 2:
        raise AssertionError("README.md has no '## Quickstart' section")
    m = re.search(r"```sh\n(.*?)```", section[1], re.S)
    if m is None:
        raise AssertionError("README.md's Quickstart has no ```sh block")
    return m.group(1)


class QuickstartTest(unittest.TestCase):
    def test_readme_quickstart_runs_as_written(self):
        sigil = helpers.sigil_bin()
        for tool in ("unshare", "ip", "mount"):
            helpers.require_tool(tool)
        block = quickstart_block((ROOT / "README.md").read_text())
        self.assertRegex(block, r"(?m)^B=build/release/apps/sigil/sigil$")
        script = re.sub(r"(?m)^B=.*$", f"B={sigil}", block, count=1)
        # Daemons the script started and did not stop (it failed half way) go with the group;
        # after its closing `kill`, `wait` lets both finish their shutdown.
        wrapper = ("set -e\nip link set lo up\nmount -t tmpfs none /tmp\n"
                   "mount -t tmpfs none /run\n" + script + "\nwait\n")
        proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "bash", "-c", wrapper],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            self.fail(f"the quickstart did not finish within {TIMEOUT} s:\n{out}")
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.assertEqual(proc.returncode, 0, out)
        # whoami: the identity the README's template renders for root, and why.
        self.assertIn("spiffe://example.org/demo/uid-0", out)
        self.assertIn("from WorkloadIdentity me, matched: unix:uid:0", out)
        # The audit lists the bootstrap, the apply and the join, and its hash chain verifies.
        for record in ("ca.init", "resource.apply", "token.use", "node.join"):
            self.assertRegex(out, rf"\t{re.escape(record)}\t", record)
        self.assertRegex(out, r"audit chain ok: \d+ records")
        # Both daemons logged their graceful stop on the script's `kill`.
        self.assertIn("server.stopped", out)
        self.assertIn("agent.stopped", out)


if __name__ == "__main__":
    unittest.main()
