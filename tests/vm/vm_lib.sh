# shellcheck shell=bash
# Shared parts of the QEMU guest tests (sourced by run_ktls_vm.sh and run_agents_vm.sh): tool
# checks that FAIL naming the Debian package, Debian's 6.1 kernel and its modules, initramfs
# assembly (busybox-static, modules with modules.dep so modprobe resolves dependencies, static
# programs, dynamic programs with every library ldd lists) and a TCG boot bounded by a timeout.
#
# The caller sets VM_NAME (used in messages and the work dir) and defines nothing else; after
# vm_init the variables KERNEL, KVER, MODDIR, WORK, ROOT are set and WORK is removed at exit
# unless SIGIL_VM_KEEP=1. Environment: SIGIL_VM_KERNEL (default: newest
# /boot/vmlinuz-6.1.*-amd64).

fail() {
  echo "${VM_NAME:-vm}: FAIL: $*" >&2
  exit 1
}

need_cmd() {  # need_cmd <command> <package>
  command -v "$1" >/dev/null 2>&1 || fail "'$1' not found: install the Debian package $2"
}

is_static() { ! readelf -l "$1" | grep -q 'Requesting program interpreter'; }

vm_init() {
  need_cmd qemu-system-x86_64 qemu-system-x86
  need_cmd cpio cpio
  need_cmd gzip gzip
  need_cmd timeout coreutils
  need_cmd readelf binutils
  BUSYBOX=/bin/busybox
  [[ -x $BUSYBOX ]] || fail "$BUSYBOX not found: install the Debian package busybox-static"
  is_static "$BUSYBOX" || fail "$BUSYBOX is dynamically linked: install the Debian package busybox-static"

  KERNEL=${SIGIL_VM_KERNEL:-$(ls -1 /boot/vmlinuz-6.1.*-amd64 2>/dev/null | sort -V | tail -n 1 || true)}
  [[ -n $KERNEL && -r $KERNEL ]] ||
    fail "kernel ${KERNEL:-/boot/vmlinuz-6.1.*-amd64} not readable: install the Debian package linux-image-amd64 (bookworm, 6.1)"
  KVER=${KERNEL#/boot/vmlinuz-}
  MODDIR=/lib/modules/$KVER
  [[ -d $MODDIR ]] || fail "$MODDIR missing: reinstall the Debian package linux-image-$KVER"
  local tls_ko
  tls_ko=$(find "$MODDIR/kernel/net/tls" -name 'tls.ko*' 2>/dev/null | head -n 1)
  [[ -n $tls_ko ]] || fail "tls.ko not found under $MODDIR/kernel/net/tls (linux-image-$KVER)"

  WORK=$(mktemp -d "/tmp/sigil-${VM_NAME:-vm}.XXXXXX")
  trap vm_cleanup EXIT
  ROOT=$WORK/root
  mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,run} "$ROOT/lib/modules/$KVER"
  cp "$BUSYBOX" "$ROOT/bin/busybox"
  # tls.ko and the crypto modules (gcm, aesni, chacha autoload through modules.alias).
  vm_add_module_dirs kernel/net/tls kernel/crypto kernel/arch/x86/crypto kernel/lib/crypto
  cp "$MODDIR"/modules.* "$ROOT/lib/modules/$KVER/"
}

vm_cleanup() {
  if [[ ${SIGIL_VM_KEEP:-0} == 1 ]]; then
    echo "${VM_NAME:-vm}: kept $WORK"
  else
    rm -rf "$WORK"
  fi
}

# vm_add_module_dirs <dir under $MODDIR>...: copies whole module directories.
vm_add_module_dirs() {
  local sub
  for sub in "$@"; do
    if [[ -d $MODDIR/$sub ]]; then
      mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$sub")"
      cp -r "$MODDIR/$sub" "$ROOT/lib/modules/$KVER/$sub"
    fi
  done
}

# vm_add_module <name>: one module and everything modules.dep says it needs.
vm_add_module() {
  local line path
  line=$(grep -E "(^|/)$1\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | head -n 1) ||
    fail "module $1 not in $MODDIR/modules.dep"
  for path in ${line/:/}; do
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$path")"
    cp "$MODDIR/$path" "$ROOT/lib/modules/$KVER/$path"
  done
}

# vm_add_static <program> <path in the guest>: a statically linked program.
vm_add_static() {
  is_static "$1" || fail "$1 is not statically linked"
  mkdir -p "$ROOT/$(dirname "$2")"
  cp "$1" "$ROOT/$2"
}

# vm_add_dynamic <program> <path in the guest>: a dynamically linked program with every shared
# library ldd lists (and the loader), at the same paths as on this host.
vm_add_dynamic() {
  local lib
  mkdir -p "$ROOT/$(dirname "$2")"
  cp "$1" "$ROOT/$2"
  for lib in $(ldd "$1" | grep -oE '/[^ ]+' | sort -u); do
    [[ -e $ROOT$lib ]] && continue
    mkdir -p "$ROOT/$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
}

# vm_boot <init script> <timeout s> <memory MiB>: installs the init script, packs the
# initramfs, boots it under TCG with one CPU and waits. Sets QEMU_RC and LOG (console output,
# CR removed in $LOG.txt).
vm_boot() {
  cp "$1" "$ROOT/init"
  chmod +x "$ROOT/init"
  (cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 >"$WORK/initrd.cpio.gz")
  LOG=$WORK/console.log
  echo "${VM_NAME:-vm}: booting $KERNEL (TCG, timeout ${2}s, ${3} MiB, initramfs $(($(stat -c %s "$WORK/initrd.cpio.gz") >> 20)) MiB)"
  set +e
  timeout --kill-after=5 "$2" qemu-system-x86_64 -accel tcg -cpu max -m "$3" -smp 1 \
    -nographic -no-reboot -kernel "$KERNEL" -initrd "$WORK/initrd.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1" </dev/null >"$LOG" 2>&1
  QEMU_RC=$?
  set -e
  tr -d '\r' <"$LOG" >"$LOG.txt"
  if [[ $QEMU_RC -eq 124 || $QEMU_RC -eq 137 ]]; then
    tail -n 40 "$LOG.txt" >&2
    fail "guest did not finish within ${2}s"
  fi
}
