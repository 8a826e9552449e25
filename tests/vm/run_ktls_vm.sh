#!/usr/bin/env bash
# Proves the kTLS fast path (src/dataplane/ktls) in a QEMU guest running Debian's 6.1 kernel,
# which has the tls ULP that the development host lacks (docs/dataplane.md, "kTLS fast path").
#
#   tests/vm/run_ktls_vm.sh BUILD_DIR [--mib N]
#
# Builds an initramfs (busybox-static, tls.ko and the crypto modules with modules.dep/alias so
# gcm/aesni/chacha autoload, the static guest program sigil_ktls_guest_test from
# tests/vm/ktls_guest_test.cc), boots it under TCG (bounded by a timeout), runs `modprobe tls`,
# brings lo up, runs the program and powers off. Exits 0 only if the guest reports
# "KTLS-RESULT pass=N fail=0". Missing tools FAIL (naming the Debian package), never skip.
#
# Environment: SIGIL_VM_KERNEL (default: newest /boot/vmlinuz-6.1.*-amd64),
#              SIGIL_VM_TIMEOUT (seconds, default 120), SIGIL_VM_KEEP=1 keeps the work dir.
set -euo pipefail

fail() {
  echo "run_ktls_vm: FAIL: $*" >&2
  exit 1
}

[[ $# -ge 1 ]] || fail "usage: $0 BUILD_DIR [--mib N]"
BUILD_DIR=$(cd "$1" && pwd) || fail "build dir $1 does not exist"
shift
MIB=64
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mib) MIB="$2"; shift 2 ;;
    *) fail "unknown argument $1" ;;
  esac
done
TIMEOUT_SEC=${SIGIL_VM_TIMEOUT:-120}
start_ns=$(date +%s%N)

# --- prerequisites (each names its Debian package) ---------------------------------------
need_cmd() {  # need_cmd <command> <package>
  command -v "$1" >/dev/null 2>&1 || fail "'$1' not found: install the Debian package $2"
}
need_cmd qemu-system-x86_64 qemu-system-x86
need_cmd cpio cpio
need_cmd gzip gzip
need_cmd timeout coreutils
need_cmd readelf binutils
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || fail "$BUSYBOX not found: install the Debian package busybox-static"
readelf -l "$BUSYBOX" | grep -q 'Requesting program interpreter' &&
  fail "$BUSYBOX is dynamically linked: install the Debian package busybox-static"

KERNEL=${SIGIL_VM_KERNEL:-$(ls -1 /boot/vmlinuz-6.1.*-amd64 2>/dev/null | sort -V | tail -n 1 || true)}
[[ -n $KERNEL && -r $KERNEL ]] ||
  fail "kernel ${KERNEL:-/boot/vmlinuz-6.1.*-amd64} not readable: install the Debian package linux-image-amd64 (bookworm, 6.1)"
KVER=${KERNEL#/boot/vmlinuz-}
MODDIR=/lib/modules/$KVER
[[ -d $MODDIR ]] || fail "$MODDIR missing: reinstall the Debian package linux-image-$KVER"
TLS_KO=$(find "$MODDIR/kernel/net/tls" -name 'tls.ko*' 2>/dev/null | head -n 1)
[[ -n $TLS_KO ]] || fail "tls.ko not found under $MODDIR/kernel/net/tls (linux-image-$KVER)"

GUEST_BIN=$BUILD_DIR/src/dataplane/ktls/sigil_ktls_guest_test
if [[ ! -x $GUEST_BIN ]]; then
  echo "run_ktls_vm: building sigil_ktls_guest_test in $BUILD_DIR"
  cmake --build "$BUILD_DIR" --target sigil_ktls_guest_test ||
    fail "cannot build sigil_ktls_guest_test (needs libssl-dev static libraries and SIGIL_SANITIZE=OFF)"
fi
[[ -x $GUEST_BIN ]] || fail "$GUEST_BIN missing"
readelf -l "$GUEST_BIN" | grep -q 'Requesting program interpreter' &&
  fail "$GUEST_BIN is not statically linked"

# --- initramfs ----------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/sigil-ktls-vm.XXXXXX)
cleanup() { [[ ${SIGIL_VM_KEEP:-0} == 1 ]] && echo "run_ktls_vm: kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc} "$ROOT/lib/modules/$KVER"
cp "$BUSYBOX" "$ROOT/bin/busybox"
cp "$GUEST_BIN" "$ROOT/bin/ktls_guest_test"
for sub in kernel/net/tls kernel/crypto kernel/arch/x86/crypto kernel/lib/crypto; do
  if [[ -d $MODDIR/$sub ]]; then
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$sub")"
    cp -r "$MODDIR/$sub" "$ROOT/lib/modules/$KVER/$sub"
  fi
done
cp "$MODDIR"/modules.* "$ROOT/lib/modules/$KVER/"

cat >"$ROOT/init" <<EOF
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
echo "KTLS-MODULES \$(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
poweroff -f
EOF
chmod +x "$ROOT/init"
(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 >"$WORK/initrd.cpio.gz")

# --- boot ---------------------------------------------------------------------------------
LOG=$WORK/console.log
echo "run_ktls_vm: booting $KERNEL (TCG, timeout ${TIMEOUT_SEC}s, bulk ${MIB} MiB)"
set +e
timeout --kill-after=5 "$TIMEOUT_SEC" qemu-system-x86_64 -accel tcg -cpu max -m 512 -smp 1 \
  -nographic -no-reboot -kernel "$KERNEL" -initrd "$WORK/initrd.cpio.gz" \
  -append "console=ttyS0 quiet panic=-1" </dev/null >"$LOG" 2>&1
qemu_rc=$?
set -e
tr -d '\r' <"$LOG" | grep -E '^KTLS-' || true
end_ns=$(date +%s%N)
echo "run_ktls_vm: wall time $(((end_ns - start_ns) / 1000000)) ms (qemu rc=$qemu_rc)"

[[ $qemu_rc -ne 124 && $qemu_rc -ne 137 ]] || {
  tail -n 30 "$LOG" >&2
  fail "guest did not finish within ${TIMEOUT_SEC}s"
}
result=$(tr -d '\r' <"$LOG" | grep -E '^KTLS-RESULT ' | tail -n 1)
if [[ $result =~ ^KTLS-RESULT\ pass=([0-9]+)\ fail=([0-9]+)$ ]] &&
  [[ ${BASH_REMATCH[2]} -eq 0 && ${BASH_REMATCH[1]} -gt 0 ]] &&
  tr -d '\r' <"$LOG" | grep -q '^KTLS-EXIT rc=0 '; then
  echo "run_ktls_vm: PASS ($result)"
  exit 0
fi
tail -n 40 "$LOG" >&2
fail "guest result: ${result:-no KTLS-RESULT line}"
