#!/usr/bin/env bash
# Installs every Debian package Sigil, its tests and its benchmarks need, then builds.
# Idempotent and non-interactive; run as root (or with sudo available) on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  clang llvm libclang-rt-14-dev clang-format clang-tidy
  # libraries
  libssl-dev openssl
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libsqlite3-dev sqlite3 libpq-dev
  libyaml-cpp-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libbpf-dev bpftool libfuse3-dev fuse3
  # real peers used by the integration tests
  curl python3 python3-cryptography python3-jwt python3-grpcio python3-grpc-tools python3-botocore
  iproute2 nftables procps
  postgresql-15  # server binaries for the store tests' throwaway cluster (initdb, pg_ctl)
  # kTLS proof in a QEMU guest (tests/vm): Debian's own kernel, software emulation
  qemu-system-x86 busybox-static linux-image-amd64 cpio
  # data plane benchmark baselines (bench/dataplane)
  haproxy wrk nginx-light
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${#missing[@]} package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages already installed"
fi

./scripts/build.sh release
