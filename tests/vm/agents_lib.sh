# shellcheck shell=bash
# The host side of the two-agent QEMU runs (tests/vm/run_agents_vm.sh,
# bench/dataplane/ktls_vm.sh), sourced after vm_lib.sh. agents_vm_prepare BUILD_DIR runs vm_init
# and puts into the initramfs what tests/vm/agents_guest.sh needs: sigil and sigil-agent (built
# if missing), iproute2's ip, the workload (tests/vm/agents_workload.cc) as /bin/vm_server and
# /bin/vm_client (two identities by path), veth.ko, the resources (a `mutual` Service for
# 10.77.0.2:8080 and the AccessPolicy from client to web) and agents_guest.sh itself.

agents_vm_prepare() {
  local BUILD_DIR=$1
  need_cmd ldd libc-bin
  IP_BIN=$(command -v ip || true)
  [[ -n $IP_BIN ]] || fail "'ip' not found: install the Debian package iproute2"
  IP_BIN=$(readlink -f "$IP_BIN")
  vm_init
  SIGIL=$BUILD_DIR/apps/sigil/sigil
  AGENT=$BUILD_DIR/apps/sigil/sigil-agent
  WORKLOAD=$BUILD_DIR/tests/sigil_agents_workload
  for target in sigil sigil_agents_workload; do
    case $target in
      sigil) want=$SIGIL ;;
      *) want=$WORKLOAD ;;
    esac
    if [[ ! -x $want ]]; then
      echo "run_agents_vm: building $target in $BUILD_DIR"
      cmake --build "$BUILD_DIR" --target "$target" || fail "cannot build $target"
    fi
    [[ -x $want ]] || fail "$want missing"
  done
  [[ -x $AGENT ]] || fail "$AGENT missing (built with sigil)"

  # `sigil agent` execs sigil-agent from its own directory.
  vm_add_dynamic "$SIGIL" opt/sigil/sigil
  vm_add_dynamic "$AGENT" opt/sigil/sigil-agent
  vm_add_dynamic "$IP_BIN" opt/iproute2/ip
  vm_add_static "$WORKLOAD" bin/vm_server
  vm_add_static "$WORKLOAD" bin/vm_client
  vm_add_module veth
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
  printf 'root:x:0:\n' >"$ROOT/etc/group"
  printf '127.0.0.1 localhost sigil-vm\n' >"$ROOT/etc/hosts"

  cat >"$ROOT/resources.yaml" <<'EOF'
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {name: client}
spec:
  spiffeId: spiffe://example.org/client
  selectors: ["unix:path:/bin/vm_client"]
---
apiVersion: sigil.dev/v1alpha1
kind: WorkloadIdentity
metadata: {name: web}
spec:
  spiffeId: spiffe://example.org/web
  selectors: ["unix:path:/bin/vm_server"]
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: web}
spec:
  mode: mutual
  addresses: ["10.77.0.2:8080"]
  identity: spiffe://example.org/web
---
apiVersion: sigil.dev/v1alpha1
kind: AccessPolicy
metadata: {name: client-to-web}
spec:
  sources: [spiffe://example.org/client]
  destinations: [web]
EOF

  cp "$(dirname "${BASH_SOURCE[0]}")/agents_guest.sh" "$ROOT/agents_guest.sh"
}
