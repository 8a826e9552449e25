#!/usr/bin/env bash
# Control plane at scale (issue 7): one `sigil server` (SQLite store, or PostgreSQL with
# --store postgres) with --identities WorkloadIdentity objects, and sigil_scale_agents simulating
# N agents (own join token, node SVID and TLS connection each, one Sync stream each) for every N
# of --agents. Prints connect time and snapshot size, server CPU / RSS / store queries per second
# with nothing changing, and the time for one `sigil apply` to reach every agent. Builds nothing.
#
#   cmake --build build/h-scale --target sigil sigil_scale_agents -j2
#   bench/scale/run.sh --build-dir build/h-scale                 # 500 and 5,000 agents, < 10 min
#   bench/scale/run.sh --build-dir build/h-scale --smoke         # 20 agents, seconds (ctest)
#   bench/scale/run.sh --help
#
# Run as root (RLIMIT_NOFILE for 5,000 connections on each side). The work is in scale_bench.py,
# run with the Debian interpreter. Figures: docs/benchmarks.md, "Control plane at scale".
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$(readlink -f "$0")")/scale_bench.py" "$@"
