#!/usr/bin/env bash
# Data plane benchmark: plain TCP vs Sigil mTLS (sigil/1 between two agents) vs an HAProxy pair
# doing the same job (TLS 1.3 mTLS, P-256, one thread each), in one run, on two network
# namespaces joined by veth. Builds nothing; run as root (namespaces, BPF, cgroup2).
#
#   cmake --build build/release --target sigil -j2
#   bench/dataplane/run.sh [--sigil build/release/apps/sigil/sigil] [--duration 10] [--phases LIST] \
#       [--close-duration 5] [--lat1-duration 5] [--stream-mib 256] [--multi-mib 64] \
#       [--stream1-reps 3] [--idle-conns 1000] [--idle-batch 100] [--keep-tmp] [--hold S]
#
# Needs: wrk, curl, openssl, haproxy, nginx (nginx-light), iproute2, ss; /usr/bin/python3.
# The work (namespaces, server, agents, nginx, haproxy, phases, table, cleanup on any exit) is
# in dataplane_bench.py; README.md next to it explains every figure. Exit status: 0 when every
# phase ran (targets missed or not), 1 when a phase failed, 2 on bad usage / missing tools.
set -euo pipefail
ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 "$(dirname "$(readlink -f "$0")")/dataplane_bench.py" "$@"
