"""Preflight for the benchmarks: is the machine quiet before a run?

Figures on 2 shared cores are only comparable when nothing else runs: leftovers of an earlier
run (an nginx, a hung agent, a qemu) once took most of a core and halved a whole benchmark's
figures without any error. quiet_or_warn() samples /proc/stat for a second and, when more than
`threshold` of the CPUs were busy, returns a warning that names the busiest processes (the
benchmarks print it at the top and again next to their figures).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]), idle


def _process_ticks() -> dict[int, tuple[str, int]]:
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        rest = stat[stat.rfind(")") + 2:].split()
        out[int(p.name)] = (comm, int(rest[11]) + int(rest[12]))
    return out


def quiet_or_warn(seconds: float = 1.0, threshold: float = 0.15) -> str:
    """Empty when the machine was quiet over `seconds`; else a one-line warning."""
    total0, idle0 = _cpu_times()
    procs0 = _process_ticks()
    time.sleep(seconds)
    total1, idle1 = _cpu_times()
    procs1 = _process_ticks()
    span = max(1, total1 - total0)
    busy = 1.0 - (idle1 - idle0) / span
    if busy <= threshold:
        return ""
    hz = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    top = sorted(((procs1[p][1] - procs0[p][1], p, procs1[p][0]) for p in procs1
                  if p in procs0 and p != me), reverse=True)[:4]
    names = ", ".join(f"{comm} (pid {pid}) {ticks / hz / seconds * 100:.0f}%"
                      for ticks, pid, comm in top if ticks > 0)
    return (f"WARNING: the machine was {busy * 100:.0f}% busy before the benchmark started "
            f"({names or 'no single process'}); figures from this run are not comparable")
