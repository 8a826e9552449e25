#!/usr/bin/env bash
# One-stream throughput on a kernel that has kTLS: Sigil's two agents against an HAProxy pair
# doing the same job, in a QEMU guest running Debian's own kernel (tls.ko) under TCG. This
# host's kernel has no kTLS, so bench/dataplane/run.sh can only measure the user-space relay;
# here the agents' kTLS + splice() path runs (docs/dataplane.md, "kTLS fast path").
#
#   bench/dataplane/ktls_vm.sh [BUILD_DIR] [--mib N] [--rounds N]      # as root
#
# The guest boots three times: with kTLS (tls.ko loaded) and the default pooled connection,
# with kTLS and --no-pool (one kTLS connection per workload connection, relayed with splice()),
# and without kTLS (no tls module, none loaded on demand: the agents relay in user space, as on
# this host). In each boot, over the topology
# of tests/vm/agents_guest.sh (namespaces sgA and sgB joined by veth, one agent each), three
# paths carry a download of N MiB (default 64) from tests/vm/agents_workload.cc `stream`
# (constant bytes, nothing hashed, so the endpoints cost little per byte), interleaved, N rounds
# (default 3), median reported:
#   plain    client (sgA) -> server 10.77.0.2:8082, no relay
#   sigil    `sigil run` client -> agent A -> mTLS (pooled sigil/2 connection) -> agent B ->
#            `sigil run` server 10.77.0.2:8080
#   haproxy  client -> HAProxy A 127.0.0.1:9000 -> TLS 1.3, client certificate, verify required
#            -> HAProxy B 10.77.0.2:9443 -> server 10.77.0.2:8082 (the configuration of
#            bench/dataplane/haproxy-*.cfg.in: one thread each, P-256)
# The guest has one emulated CPU, so every process shares it: the figures are bytes per unit of
# total CPU, like the host benchmark on its 2 shared cores. TCG makes every instruction
# slower, the AES instructions more than most, so only the same-run ratios mean anything; the
# absolute MiB/s do not carry over to hardware. The agents' records_ktls_total counters show
# which record path ran.
#
# Exit status 0 when every boot measured all three paths (targets met or not), 1 otherwise.
# Environment: SIGIL_VM_KERNEL, SIGIL_VM_TIMEOUT (seconds per boot, default 600), SIGIL_VM_KEEP=1.
set -euo pipefail
VM_NAME=ktls_vm_bench
HERE=$(cd "$(dirname "$0")" && pwd)
VMDIR=$HERE/../../tests/vm
# shellcheck source=tests/vm/vm_lib.sh
source "$VMDIR/vm_lib.sh"
# shellcheck source=tests/vm/agents_lib.sh
source "$VMDIR/agents_lib.sh"

BUILD_DIR=$HERE/../../build/release
MIB=64
ROUNDS=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mib) MIB="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    -*) fail "unknown flag $1 (see --help)" ;;
    *) BUILD_DIR=$1; shift ;;
  esac
done
[[ $MIB =~ ^[0-9]+$ ]] && ((MIB >= 1 && MIB <= 1024)) || fail "--mib: 1-1024"
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS >= 1 && ROUNDS <= 9)) || fail "--rounds: 1-9"
[[ $(id -u) -eq 0 ]] || fail "run as root"
BUILD_DIR=$(cd "$BUILD_DIR" && pwd) || fail "build dir does not exist"
TIMEOUT_SEC=${SIGIL_VM_TIMEOUT:-600}
need_cmd openssl openssl
HAPROXY=$(command -v haproxy || true)
[[ -n $HAPROXY ]] || fail "'haproxy' not found: install the Debian package haproxy"

agents_vm_prepare "$BUILD_DIR"
vm_add_dynamic "$(readlink -f "$HAPROXY")" opt/haproxy/haproxy

# The HAProxy pair's PKI: one CA, a server certificate for HAProxy B, a client one for A.
PKI=$ROOT/pki
mkdir -p "$PKI"
ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "$@" 2>/dev/null; }
ec -x509 -keyout "$PKI/ca.key" -out "$PKI/ca.pem" -days 2 -subj "/CN=ktls vm bench CA"
for who in server client; do
  ec -keyout "$PKI/$who.key" -out "$PKI/$who.csr" -subj "/CN=$who.bench.invalid"
  printf 'subjectAltName=DNS:%s.bench.invalid\n' "$who" >"$PKI/$who.ext"
  openssl x509 -req -in "$PKI/$who.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
    -CAcreateserial -out "$PKI/$who.crt" -days 2 -extfile "$PKI/$who.ext" 2>/dev/null
  cat "$PKI/$who.crt" "$PKI/$who.key" >"$PKI/$who.pem"
done
rm -f "$PKI/ca.key"
haproxy_head() {  # the part both HAProxy configurations share
  cat <<'EOF'
global
    nbthread 1
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
EOF
}
{
  haproxy_head | sed 's/^global$/global\n    ssl-server-verify required/'
  cat <<'EOF'
frontend fe
    bind 127.0.0.1:9000
    default_backend be
backend be
    server s1 10.77.0.2:9443 ssl crt /pki/client.pem ca-file /pki/ca.pem verify required verifyhost server.bench.invalid ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3 alpn sigil/1
EOF
} >"$ROOT/haproxy-client.cfg"
{
  haproxy_head
  cat <<'EOF'
frontend fe
    bind 10.77.0.2:9443 ssl crt /pki/server.pem ca-file /pki/ca.pem verify required ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.3 alpn sigil/1
    default_backend be
backend be
    server app 10.77.0.2:8082
EOF
} >"$ROOT/haproxy-server.cfg"

cat >"$WORK/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
MIB=$MIB
ROUNDS=$ROUNDS
KTLS=@KTLS@
AGENT_FLAGS="@AGENT_FLAGS@"
MODE=@MODE@
EOF
cat >>"$WORK/init" <<'EOF'
. /agents_guest.sh
agents_up
web_up
ip netns exec sgB /bin/vm_server serve 10.77.0.2 8082 >/tmp/plain-server.log 2>&1 &
ip netns exec sgB /opt/haproxy/haproxy -db -f /haproxy-server.cfg >/tmp/haproxy-b.log 2>&1 &
ip netns exec sgA /opt/haproxy/haproxy -db -f /haproxy-client.cfg >/tmp/haproxy-a.log 2>&1 &

run_path() {  # run_path PATH ROUND -> one VMBENCH line
  case $1 in
    plain) ip netns exec sgA /bin/vm_client stream 10.77.0.2 8082 $MIB ;;
    sigil) ip netns exec sgA $SIGIL run --cgroup-root /cgroup2 --managed-cgroup sigil-vm-a -- \
             /bin/vm_client stream 10.77.0.2 8080 $MIB ;;
    haproxy) ip netns exec sgA /bin/vm_client stream 127.0.0.1 9000 $MIB ;;
  esac >/tmp/stream.log 2>&1
  line=$(grep '^WORKLOAD-STREAM' /tmp/stream.log | tail -n 1)
  echo "VMBENCH mode=$MODE round=$2 path=$1 ${line:-WORKLOAD-STREAM fail no output}"
  case $line in "WORKLOAD-STREAM pass"*) ;; *) tail -n 5 /tmp/stream.log | sed 's/^/VMBENCH-OUT /' ;; esac
}
for p in plain sigil haproxy; do run_path $p 0 >/dev/null; done  # warm-up (SVIDs, sessions)
r=1
while [ $r -le $ROUNDS ]; do
  for p in plain sigil haproxy; do run_path $p $r; done
  r=$((r + 1))
done
for n in a b; do
  ns=sgA; h=$HEALTH_A
  [ $n = b ] && ns=sgB && h=$HEALTH_B
  k=$(ip netns exec $ns /bin/vm_client get "${h%:*}" "${h##*:}" /metrics |
      sed -n 's/^sigil_dataplane_records_ktls_total //p')
  echo "VMBENCH-KTLS agent-$n records_ktls_total=${k:-none}"
done
# Which AES-GCM the kernel used for kTLS (an accelerated driver or the generic C code).
awk '/^name/ {n = $3} /^driver/ {d = $3} /^$/ {if (n == "gcm(aes)") print "VMBENCH-CRYPTO gcm(aes) driver=" d; n = ""}' /proc/crypto
say "INIT finished at $(elapsed)s"
result "pass"
EOF

# Boots: kTLS with the default pooled sigil/2 connection (streams are framed in user space on
# the kTLS socket), kTLS with --no-pool (one connection per workload connection, relayed with
# splice(): the bytes never enter user space), and no kTLS (the user-space record layer, as on
# this host).
MODES=(ktls-pool:on: ktls-splice:on:--no-pool userspace:off:)
declare -A RESULTS
ok=1
for spec in "${MODES[@]}"; do
  IFS=: read -r mode ktls flags <<<"$spec"
  sed "s|@KTLS@|$ktls|; s|@AGENT_FLAGS@|$flags|; s|@MODE@|$mode|" "$WORK/init" >"$WORK/init-$mode"
  echo "ktls_vm: [$mode] ${MIB} MiB downloads, $ROUNDS rounds"
  vm_boot "$WORK/init-$mode" "$TIMEOUT_SEC" 1536
  grep -E '^(VMBENCH|AGENTS-(RESULT|LOG|INIT))' "$LOG.txt" || true
  if ! grep -q '^AGENTS-RESULT pass' "$LOG.txt"; then
    grep -E '^AGENTS-TAIL' "$LOG.txt" >&2 || tail -n 60 "$LOG.txt" >&2
    echo "ktls_vm: [$mode] the guest failed" >&2
    ok=0
    continue
  fi
  for path in plain sigil haproxy; do
    RESULTS[$mode.$path]=$(sed -n "s/^VMBENCH mode=$mode round=[1-9] path=$path WORKLOAD-STREAM pass .*(\([0-9.]*\) MiB\/s)$/\1/p" "$LOG.txt" |
      sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR + 1) / 2)]}')
    [[ -n ${RESULTS[$mode.$path]} ]] || ok=0
  done
done

echo "=============================================================================="
echo "Sigil one-stream throughput in a QEMU guest (TCG, 1 vCPU, kernel $KVER), $(date '+%Y-%m-%d %H:%M')"
echo "${MIB} MiB per download, median of $ROUNDS; MiB/s are emulated, only ratios carry over"
printf '  %-26s %10s %10s %10s %15s %13s\n' "" plain sigil haproxy "sigil/haproxy" "sigil/plain"
for spec in "${MODES[@]}"; do
  mode=${spec%%:*}
  p=${RESULTS[$mode.plain]:-} s=${RESULTS[$mode.sigil]:-} h=${RESULTS[$mode.haproxy]:-}
  printf '  %-26s %10s %10s %10s %15s %13s\n' "agents: $mode" "${p:--}" "${s:--}" "${h:--}" \
    "$(awk -v a="$s" -v b="$h" 'BEGIN {if (a != "" && b > 0) printf "%.2f", a / b; else print "-"}')" \
    "$(awk -v a="$s" -v b="$p" 'BEGIN {if (a != "" && b > 0) printf "%.2f", a / b; else print "-"}')"
done
best=$(for m in ktls-pool ktls-splice; do
  awk -v a="${RESULTS[$m.sigil]:-}" -v b="${RESULTS[$m.haproxy]:-}" -v m=$m \
    'BEGIN {if (a != "" && b > 0) printf "%.2f %s\n", a / b, m}'
done | sort -rn | head -n 1)
if [[ -n $best ]]; then
  awk -v r="${best%% *}" -v m="${best#* }" 'BEGIN {
    printf "  [%s] one-stream throughput >= 1.2x HAProxy with kTLS: %.2fx (%s)\n", (r >= 1.2 ? "MET " : "MISS"), r, m }'
else
  echo "  [n/a ] one-stream throughput >= 1.2x HAProxy with kTLS"
fi
[[ $ok -eq 1 ]] || fail "a boot did not measure every path"
