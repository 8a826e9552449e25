#!/usr/bin/env bash
# Node agent benchmark: the real `sigil server` and `sigil agent` (from BUILD_DIR, a Release
# build) driven by sigil_agent_bench over the Workload API socket. Builds nothing; run as root.
#
#   cmake -G Ninja -S . -B build/h-abench -DCMAKE_BUILD_TYPE=Release
#   cmake --build build/h-abench --target sigil sigil_agent_bench -j2
#   bench/agent_bench.sh build/h-abench [--uids 1000] [--rounds 2000] [--clients 100] \
#       [--tp-calls 200000] [--tp-seconds 10] [--tp-kinds jwt-nohdr,jwt,x509-nohdr,x509]
#
# The work (temp dir, server, agent, phases, cleanup on any exit) is in agent_bench.py, run
# with the Debian interpreter. Figures: docs/benchmarks.md, section "Node agent".
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD_DIR [agent_bench.py flags; --help for the list]" >&2
  exit 2
fi
exec /usr/bin/python3 "$(dirname "$(readlink -f "$0")")/agent_bench.py" "$@"
