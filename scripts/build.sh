#!/usr/bin/env bash
# Configures and builds one flavour of Sigil. Usage: scripts/build.sh [release|asan|fuzz|debug]...
#   release  build/release  optimised, what the quickstart and benchmarks use
#   asan     build/asan     AddressSanitizer + UndefinedBehaviorSanitizer, all tests
#   fuzz     build/fuzz     clang + libFuzzer targets (fuzz/)
#   debug    build/debug    -O0 -g for development
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}

build() {
  local flavour=$1 dir="build/$1"
  local -a args=(-G Ninja -S . -B "$dir")
  case "$flavour" in
    release) args+=(-DCMAKE_BUILD_TYPE=Release) ;;
    debug) args+=(-DCMAKE_BUILD_TYPE=Debug) ;;
    # -O1 -g1 keeps sanitizer builds quick to compile on 2 cores; NDEBUG stays off so debug-only
    # self-checks (e.g. leaf DER re-encoding) run under the sanitizers too.
    asan) args+=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g1" -DSIGIL_SANITIZE=ON) ;;
    fuzz) args+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIGIL_FUZZ=ON
                 -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++) ;;
    *) echo "build.sh: unknown flavour '$flavour' (release, asan, fuzz, debug)" >&2; exit 2 ;;
  esac
  echo "== build $flavour ($dir)"
  cmake "${args[@]}" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

if [ $# -eq 0 ]; then set -- release; fi
for f in "$@"; do build "$f"; done
