#!/usr/bin/env bash
# Builds Sigil (Release, ASan+UBSan, libFuzzer) and runs every test suite with ctest.
# Exits non-zero on any failure; the last line is the combined summary.
#
# Environment:
#   FUZZ_SECONDS   seconds per fuzz target (default 30)
#   SIGIL_TEST_SKIP_BUILD=1  reuse existing build trees
set -uo pipefail
cd "$(dirname "$0")/.."
export FUZZ_SECONDS=${FUZZ_SECONDS:-30}
JOBS=${JOBS:-$(nproc)}

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the test suite needs root (namespaces, BPF, cgroup2)" >&2
  exit 1
fi

if [ "${SIGIL_TEST_SKIP_BUILD:-0}" != 1 ]; then
  ./scripts/build.sh release asan fuzz || { echo "test.sh: build failed"; echo "0 passed, 1 failed"; exit 1; }
fi

echo "== lint (clang-format)"
lint_failed=0
./scripts/lint.sh --format-only || lint_failed=1

total_pass=0
total_fail=0
status=0
run_ctest() {
  local dir=$1
  echo "== ctest $dir"
  local log
  log=$(mktemp)
  (cd "$dir" && ctest --output-on-failure -j "$JOBS" --timeout 600) 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  if [ -n "$line" ]; then
    local failed total
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    total_pass=$((total_pass + total - failed))
    total_fail=$((total_fail + failed))
  else
    total_fail=$((total_fail + 1))
  fi
  [ "$rc" -eq 0 ] || status=1
  rm -f "$log"
}

run_ctest build/asan
run_ctest build/fuzz
run_ctest build/release

if [ "$lint_failed" -ne 0 ]; then
  echo "test.sh: clang-format check failed (run scripts/lint.sh --fix)"
  total_fail=$((total_fail + 1))
  status=1
fi
echo "Total: ${total_pass} passed, ${total_fail} failed"
exit "$status"
