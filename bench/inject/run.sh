#!/usr/bin/env bash
# Credential-injection benchmark (issue 6): keep-alive requests/s and latency of a workload
# calling an HTTPS API through the agent's `inject` Service (plain HTTP from the workload, the
# agent adds the bearer key and originates TLS) against the same client speaking TLS to the
# same upstream directly with the key itself, in one run. Builds nothing; run as root.
#
#   cmake --build build/release --target sigil -j2
#   bench/inject/run.sh [--sigil build/release/apps/sigil/sigil] [--duration 10] [--conns 16]
#                       [--lat1-duration 5] [--reps 3] [--perf FILE [--perf-process agent|server|system]]
#                       [--split-cores]   # experiment: wrk+nginx on CPU 0, the hop on CPU 1
#
# Needs: wrk, curl, openssl, nginx (nginx-light), iproute2; /usr/bin/python3. Exit status 0
# when both paths ran (targets met or not), 1 when one failed, 2 on bad usage.
exec /usr/bin/python3 "$(dirname "$(readlink -f "$0")")/inject_bench.py" "$@"
