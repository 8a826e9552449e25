#!/usr/bin/env bash
# Proves the kTLS fast path in a QEMU guest running Debian's 6.1 kernel, which has the tls ULP
# that the development host lacks (docs/dataplane.md, "kTLS fast path"):
#   - sigil_ktls_guest_test (tests/vm/ktls_guest_test.cc): key export and installation
#     (src/dataplane/ktls) for the three cipher suites, interop with plain OpenSSL peers;
#   - sigil_relay_guest_test (tests/vm/relay_guest_test.cc): the relay's kTLS endpoints
#     (Endpoint::SwitchToKernelTls) and the splice relay, as the agents use them.
#
#   tests/vm/run_ktls_vm.sh BUILD_DIR [--mib N] [--relay-mib N]
#
# Builds an initramfs (busybox-static, tls.ko and the crypto modules, the two static programs),
# boots it under TCG (bounded by a timeout), runs `modprobe tls`, brings lo up, runs both
# programs and powers off. Exits 0 only if the guest reports "KTLS-RESULT pass=N fail=0" and
# "RELAY-RESULT pass=N fail=0". Missing tools FAIL (naming the Debian package), never skip.
#
# Environment: SIGIL_VM_KERNEL (default: newest /boot/vmlinuz-6.1.*-amd64),
#              SIGIL_VM_TIMEOUT (seconds, default 180), SIGIL_VM_KEEP=1 keeps the work dir.
set -euo pipefail
VM_NAME=run_ktls_vm
# shellcheck source=tests/vm/vm_lib.sh
source "$(dirname "$0")/vm_lib.sh"

[[ $# -ge 1 ]] || fail "usage: $0 BUILD_DIR [--mib N] [--relay-mib N]"
BUILD_DIR=$(cd "$1" && pwd) || fail "build dir $1 does not exist"
shift
MIB=64
RELAY_MIB=4
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mib) MIB="$2"; shift 2 ;;
    --relay-mib) RELAY_MIB="$2"; shift 2 ;;
    *) fail "unknown argument $1" ;;
  esac
done
TIMEOUT_SEC=${SIGIL_VM_TIMEOUT:-180}
start_ns=$(date +%s%N)

vm_init
declare -A GUEST_BINS=(
  [sigil_ktls_guest_test]=$BUILD_DIR/src/dataplane/ktls/sigil_ktls_guest_test
  [sigil_relay_guest_test]=$BUILD_DIR/src/dataplane/relay/sigil_relay_guest_test
)
for target in "${!GUEST_BINS[@]}"; do
  if [[ ! -x ${GUEST_BINS[$target]} ]]; then
    echo "run_ktls_vm: building $target in $BUILD_DIR"
    cmake --build "$BUILD_DIR" --target "$target" ||
      fail "cannot build $target (needs libssl-dev static libraries and SIGIL_SANITIZE=OFF)"
  fi
  [[ -x ${GUEST_BINS[$target]} ]] || fail "${GUEST_BINS[$target]} missing"
done
vm_add_static "${GUEST_BINS[sigil_ktls_guest_test]}" bin/ktls_guest_test
vm_add_static "${GUEST_BINS[sigil_relay_guest_test]}" bin/relay_guest_test

cat >"$WORK/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
echo /sbin/modprobe > /proc/sys/kernel/modprobe
echo "KTLS-INIT kernel \$(uname -r)"
if modprobe tls; then echo "KTLS-INIT modprobe tls ok"; else echo "KTLS-INIT modprobe tls FAILED"; fi
ip link set lo up && echo "KTLS-INIT lo up"
start=\$(date +%s)
/bin/ktls_guest_test --mib $MIB
echo "KTLS-EXIT rc=\$? seconds=\$((\$(date +%s) - start))"
start=\$(date +%s)
/bin/relay_guest_test --mib $RELAY_MIB
echo "RELAY-EXIT rc=\$? seconds=\$((\$(date +%s) - start))"
echo "KTLS-MODULES \$(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
poweroff -f
EOF
echo "run_ktls_vm: bulk ${MIB} MiB (key installation), ${RELAY_MIB} MiB per direction (relay)"
vm_boot "$WORK/init" "$TIMEOUT_SEC" 512
grep -E '^(KTLS|RELAY)-' "$LOG.txt" || true
end_ns=$(date +%s%N)
echo "run_ktls_vm: wall time $(((end_ns - start_ns) / 1000000)) ms (qemu rc=$QEMU_RC)"

ok=1
for prefix in KTLS RELAY; do
  result=$(grep -E "^$prefix-RESULT " "$LOG.txt" | tail -n 1 || true)
  if [[ $result =~ ^$prefix-RESULT\ pass=([0-9]+)\ fail=([0-9]+)$ ]] &&
    [[ ${BASH_REMATCH[2]} -eq 0 && ${BASH_REMATCH[1]} -gt 0 ]] &&
    grep -q "^$prefix-EXIT rc=0 " "$LOG.txt"; then
    echo "run_ktls_vm: $prefix PASS ($result)"
  else
    echo "run_ktls_vm: $prefix FAIL (${result:-no $prefix-RESULT line})" >&2
    ok=0
  fi
done
if [[ $ok -eq 1 ]]; then
  echo "run_ktls_vm: PASS"
  exit 0
fi
tail -n 40 "$LOG.txt" >&2
fail "guest checks failed"
