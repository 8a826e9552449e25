#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time from its seed corpus (ctest calls this).
#   run_fuzz.sh FUZZER SEED_CORPUS_DIR ARTIFACT_PREFIX
# FUZZ_SECONDS (default 30) bounds the run. The seed corpus is never modified: new inputs go
# to a temporary working corpus. A crash, leak, timeout or OOM exits non-zero and leaves the
# input at ARTIFACT_PREFIX<kind>-<sha1>.
set -euo pipefail
fuzzer=$1 seeds=$2 artifacts=$3
seconds=${FUZZ_SECONDS:-30}
[ -x "$fuzzer" ] || { echo "run_fuzz: $fuzzer not built" >&2; exit 1; }
[ -d "$seeds" ] && [ -n "$(ls -A "$seeds")" ] || { echo "run_fuzz: empty seed corpus $seeds" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A bounded quarantine keeps ASan's memory flat on long runs; leaks are still reported.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=64:detect_leaks=1}
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts" "$work" "$seeds"
