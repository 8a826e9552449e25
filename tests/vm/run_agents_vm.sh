#!/usr/bin/env bash
# Two Sigil agents in a QEMU guest whose kernel has the tls ULP (Debian's 6.1, TCG), relaying a
# workload's mTLS traffic through kTLS + splice (docs/dataplane.md, "kTLS fast path").
#
#   tests/vm/run_agents_vm.sh BUILD_DIR [--mib N]
#
# In the guest (busybox init, everything under tmpfs):
#   host A = netns sgA (10.77.0.1): `sigil server` (SQLite), agent A, the client workload;
#   host B = netns sgB (10.77.0.2): agent B, the server workload;
#   the two namespaces are joined by a veth pair (veth.ko from the same kernel).
# Both agents run `--dataplane --no-enforce` (no nftables in the guest) with cgroup2 mounted at
# /cgroup2. The workloads are tests/vm/agents_workload.cc, installed as /bin/vm_server and
# /bin/vm_client so they attest as two identities; under `sigil run` the client uploads N MiB
# (default 8), half-closes, and downloads N MiB, SHA-256 checked both ways. Then both agents'
# /metrics (sigil_dataplane_records_ktls_total) and each namespace's /proc/net/tls_stat
# (TlsTxSw/TlsRxSw, TlsDecryptError) are read. The guest prints
#   AGENTS-RESULT pass workload=pass ktls_a=N ktls_b=N txsw_a=N rxsw_a=N txsw_b=N rxsw_b=N
# and this script exits 0 only for "pass" with both kTLS counters and all four tls_stat counts
# above zero. The guest boots twice: agents in their default mode (pooled sigil/2 connections,
# the streams framed through Endpoint::Read/Write on the kTLS socket) and with --no-pool (one
# sigil/1 connection per workload connection, relayed with splice()); both must pass. Missing
# tools FAIL naming the Debian package, never skip.
#
# Environment: SIGIL_VM_KERNEL, SIGIL_VM_TIMEOUT (seconds, default 480), SIGIL_VM_KEEP=1.
set -euo pipefail
VM_NAME=run_agents_vm
# shellcheck source=tests/vm/vm_lib.sh
source "$(dirname "$0")/vm_lib.sh"

[[ $# -ge 1 ]] || fail "usage: $0 BUILD_DIR [--mib N]"
BUILD_DIR=$(cd "$1" && pwd) || fail "build dir $1 does not exist"
shift
MIB=8
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mib) MIB="$2"; shift 2 ;;
    *) fail "unknown argument $1" ;;
  esac
done
TIMEOUT_SEC=${SIGIL_VM_TIMEOUT:-480}
start_ns=$(date +%s%N)

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

# The guest's init. Every wait is a bounded loop; any setup failure prints AGENTS-RESULT fail.
cat >"$WORK/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /var && ln -s /run /var/run
echo /sbin/modprobe > /proc/sys/kernel/modprobe
hostname sigil-vm
MIB=$MIB
AGENT_FLAGS="@AGENT_FLAGS@"
EOF
cat >>"$WORK/init" <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
SIGIL=/opt/sigil/sigil
# iproute2 (netns, veth), not busybox's ip applet.
ip() { /opt/iproute2/ip "$@"; }
T0=$(date +%s)
say() { echo "AGENTS-$*"; }
elapsed() { echo $(($(date +%s) - T0)); }
result() {
  say "RESULT $*"
  for f in /tmp/server.log /tmp/agent-a.log /tmp/agent-b.log /tmp/web.log; do
    [ -f "$f" ] && tail -n 15 "$f" | sed "s|^|AGENTS-TAIL $(basename $f): |"
  done
  poweroff -f
}
# wait_file FILE SECONDS
wait_file() {
  i=0
  while [ ! -s "$1" ]; do
    i=$((i + 1))
    [ $i -gt $(($2 * 5)) ] && return 1
    sleep 0.2
  done
}
kv() { sed -n "s/^$2=//p" "$1" | head -n 1; }

say "INIT kernel $(uname -r), agent flags: ${AGENT_FLAGS:-(none)}"
modprobe tls || result "fail modprobe tls"
modprobe veth || result "fail modprobe veth"
mkdir -p /cgroup2 && mount -t cgroup2 none /cgroup2 || result "fail mount cgroup2"
ip link set lo up
ip netns add sgA && ip netns add sgB || result "fail ip netns add"
ip link add va type veth peer name vb || result "fail veth"
ip link set va netns sgA && ip link set vb netns sgB
ip -n sgA addr add 10.77.0.1/24 dev va && ip -n sgA link set va up && ip -n sgA link set lo up
ip -n sgB addr add 10.77.0.2/24 dev vb && ip -n sgB link set vb up && ip -n sgB link set lo up
ip netns exec sgA ping -c 1 -W 5 10.77.0.2 >/dev/null || result "fail veth ping"
say "INIT netns+veth up at $(elapsed)s"

ip netns exec sgA $SIGIL server --data-dir /tmp/server --trust-domain example.org \
  --admin-listen 127.0.0.1:0 --agent-listen 10.77.0.1:0 --metrics-listen off \
  --ready-file /tmp/server.ready >/tmp/server.log 2>&1 &
wait_file /tmp/server.ready 120 || result "fail server not ready"
ADMIN=$(kv /tmp/server.ready admin)
AGENT_API=$(kv /tmp/server.ready agent)
say "INIT server ready at $(elapsed)s admin=$ADMIN agent=$AGENT_API"
cli() { ip netns exec sgA $SIGIL "$@" --server "https://$ADMIN" --credentials /tmp/server/admin; }
cli apply -f /resources.yaml >/tmp/apply.log 2>&1 || { cat /tmp/apply.log; result "fail apply"; }

start_agent() {  # start_agent NAME NETNS
  cli token create --node "host-$1" >/tmp/token-$1.out 2>&1 || { cat /tmp/token-$1.out; result "fail token $1"; }
  grep -o 'SJT1\.[^ ]*' /tmp/token-$1.out | head -n 1 >/tmp/token-$1
  chmod 600 /tmp/token-$1
  ip netns exec $2 $SIGIL agent --server "$AGENT_API" --join-token-file /tmp/token-$1 \
    --data-dir /tmp/agent-$1 --socket /tmp/agent-$1.sock --node-name host-$1 \
    --health-listen 127.0.0.1:0 --ready-file /tmp/agent-$1.ready \
    --dataplane --no-enforce --cgroup-root /cgroup2 --managed-cgroup sigil-vm-$1 $AGENT_FLAGS \
    >/tmp/agent-$1.log 2>&1 &
}
start_agent a sgA
start_agent b sgB
wait_file /tmp/agent-a.ready 120 || result "fail agent a not ready"
wait_file /tmp/agent-b.ready 120 || result "fail agent b not ready"
HEALTH_A=$(kv /tmp/agent-a.ready health)
HEALTH_B=$(kv /tmp/agent-b.ready health)
say "INIT agents ready at $(elapsed)s"
for n in a b; do
  grep -o 'dataplane.start.*' /tmp/agent-$n.log | head -n 1 | sed "s/^/AGENTS-LOG agent-$n: /"
done

ip netns exec sgB $SIGIL run --cgroup-root /cgroup2 --managed-cgroup sigil-vm-b -- \
  /bin/vm_server serve 10.77.0.2 8080 >/tmp/web.log 2>&1 &
scrape() {  # scrape NETNS HOST:PORT -> the agent's /metrics (not in a managed cgroup)
  ip netns exec $1 /bin/vm_client get "${2%:*}" "${2##*:}" /metrics
}
metrics() { scrape $1 $2 | sed -n "s/^$3 //p"; }  # metrics NETNS HOST:PORT NAME -> value
tlsstat() { ip netns exec $1 cat /proc/net/tls_stat | sed -n "s/^$2[[:space:]]*//p"; }
for ns in sgA sgB; do
  for k in TlsTxSw TlsRxSw; do eval "before_${ns}_$k=\$(tlsstat $ns $k)"; done
done

say "INIT workload start at $(elapsed)s (${MIB} MiB each way)"
ip netns exec sgA $SIGIL run --cgroup-root /cgroup2 --managed-cgroup sigil-vm-a -- \
  /bin/vm_client fetch 10.77.0.2 8080 $MIB >/tmp/client.log 2>&1
sed 's/^/AGENTS-CLIENT /' /tmp/client.log
grep -q '^WORKLOAD-RESULT pass' /tmp/client.log && WL=pass || WL=fail
say "INIT workload done at $(elapsed)s"

KA=$(metrics sgA "$HEALTH_A" sigil_dataplane_records_ktls_total)
KB=$(metrics sgB "$HEALTH_B" sigil_dataplane_records_ktls_total)
for n in a b; do
  ns=sgA; h=$HEALTH_A
  [ $n = b ] && ns=sgB && h=$HEALTH_B
  scrape $ns $h | grep -E '^sigil_dataplane_(records|outbound_mutual|inbound_relayed|pool)' | sed "s/^/AGENTS-METRIC agent-$n /"
  ip netns exec $ns cat /proc/net/tls_stat | sed "s/^/AGENTS-TLSSTAT agent-$n /"
done
TXA=$(( $(tlsstat sgA TlsTxSw) - before_sgA_TlsTxSw ))
RXA=$(( $(tlsstat sgA TlsRxSw) - before_sgA_TlsRxSw ))
TXB=$(( $(tlsstat sgB TlsTxSw) - before_sgB_TlsTxSw ))
RXB=$(( $(tlsstat sgB TlsRxSw) - before_sgB_TlsRxSw ))
ERR=$(( $(tlsstat sgA TlsDecryptError) + $(tlsstat sgB TlsDecryptError) ))
grep -h 'dataplane.relay.end\|dataplane.ktls' /tmp/agent-a.log /tmp/agent-b.log | tail -n 5 | sed 's/^/AGENTS-LOG /'
VERDICT=pass
[ "$WL" = pass ] || VERDICT=fail
[ "${KA:-0}" -gt 0 ] 2>/dev/null && [ "${KB:-0}" -gt 0 ] 2>/dev/null || VERDICT=fail
[ $TXA -gt 0 ] && [ $RXA -gt 0 ] && [ $TXB -gt 0 ] && [ $RXB -gt 0 ] && [ $ERR -eq 0 ] || VERDICT=fail
say "INIT finished at $(elapsed)s"
result "$VERDICT workload=$WL ktls_a=${KA:-none} ktls_b=${KB:-none} txsw_a=+$TXA rxsw_a=+$RXA txsw_b=+$TXB rxsw_b=+$RXB decrypt_errors=$ERR"
EOF

# One boot per agent mode: pooled sigil/2 connections (the default; streams framed through
# Endpoint::Read/Write on the kTLS socket) and --no-pool (one sigil/1 connection per workload
# connection, relayed with splice()).
re='^AGENTS-RESULT pass workload=pass ktls_a=([0-9]+) ktls_b=([0-9]+) txsw_a=\+([0-9]+) rxsw_a=\+([0-9]+) txsw_b=\+([0-9]+) rxsw_b=\+([0-9]+) decrypt_errors=0$'
ok=1
for mode in pool no-pool; do
  flags=""
  [[ $mode == no-pool ]] && flags="--no-pool"
  sed "s|@AGENT_FLAGS@|$flags|" "$WORK/init" >"$WORK/init-$mode"
  echo "run_agents_vm: [$mode] ${MIB} MiB each way through two agents"
  round_ns=$(date +%s%N)
  vm_boot "$WORK/init-$mode" "$TIMEOUT_SEC" 1536
  cp "$LOG.txt" "$WORK/console-$mode.txt"
  grep -E '^AGENTS-' "$LOG.txt" | grep -v '^AGENTS-TAIL' || true
  echo "run_agents_vm: [$mode] guest wall time $((($(date +%s%N) - round_ns) / 1000000)) ms (qemu rc=$QEMU_RC)"
  result=$(grep -E '^AGENTS-RESULT ' "$LOG.txt" | tail -n 1 || true)
  if [[ $result =~ $re ]] && ((BASH_REMATCH[1] > 0 && BASH_REMATCH[2] > 0 &&
    BASH_REMATCH[3] > 0 && BASH_REMATCH[4] > 0 && BASH_REMATCH[5] > 0 && BASH_REMATCH[6] > 0)); then
    echo "run_agents_vm: [$mode] PASS ($result)"
  else
    grep -E '^AGENTS-TAIL' "$LOG.txt" >&2 || tail -n 60 "$LOG.txt" >&2
    echo "run_agents_vm: [$mode] FAIL (${result:-no AGENTS-RESULT line})" >&2
    ok=0
  fi
done
end_ns=$(date +%s%N)
echo "run_agents_vm: wall time $(((end_ns - start_ns) / 1000000)) ms"
[[ $ok -eq 1 ]] || fail "guest checks failed"
echo "run_agents_vm: PASS"
