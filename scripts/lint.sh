#!/usr/bin/env bash
# clang-format check on every C/C++ source, and clang-tidy on files changed since a base
# revision (default: the merge base with origin/main, else HEAD~1).
#   scripts/lint.sh               format check + clang-tidy on changed files
#   scripts/lint.sh --format-only format check only (what scripts/test.sh runs)
#   scripts/lint.sh --fix         rewrite files with clang-format
set -euo pipefail
cd "$(dirname "$0")/.."

mode=check
case "${1:-}" in
  --format-only) mode=format ;;
  --fix) mode=fix ;;
  "") ;;
  *) echo "usage: scripts/lint.sh [--format-only|--fix]" >&2; exit 2 ;;
esac

mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
  '*.h' '*.cc' '*.c' | grep -v '^build/' | while read -r f; do [ -f "$f" ] && echo "$f"; done)

if [ "$mode" = fix ]; then
  clang-format -i "${files[@]}"
  exit 0
fi

echo "lint: clang-format on ${#files[@]} files"
clang-format --dry-run --Werror "${files[@]}"
[ "$mode" = format ] && exit 0

base=$(git merge-base HEAD origin/main 2>/dev/null || git rev-parse HEAD~1 2>/dev/null || true)
if [ -z "$base" ]; then echo "lint: no base revision; skipping clang-tidy"; exit 0; fi
mapfile -t changed < <(git diff --name-only "$base" -- '*.cc' | while read -r f; do [ -f "$f" ] && echo "$f"; done)
if [ "${#changed[@]}" -eq 0 ]; then echo "lint: no changed .cc files"; exit 0; fi
[ -f build/release/compile_commands.json ] || ./scripts/build.sh release
echo "lint: clang-tidy on ${#changed[@]} changed files"
clang-tidy -p build/release --quiet "${changed[@]}"
