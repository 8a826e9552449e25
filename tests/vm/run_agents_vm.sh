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
# shellcheck source=tests/vm/agents_lib.sh
source "$(dirname "$0")/agents_lib.sh"

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

agents_vm_prepare "$BUILD_DIR"

# The guest's init. Every wait is a bounded loop; any setup failure prints AGENTS-RESULT fail.
cat >"$WORK/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
MIB=$MIB
AGENT_FLAGS="@AGENT_FLAGS@"
EOF
cat >>"$WORK/init" <<'EOF'
. /agents_guest.sh
agents_up
web_up
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
