# shellcheck shell=sh
# The guest side of the two-agent QEMU runs (tests/vm/run_agents_vm.sh,
# bench/dataplane/ktls_vm.sh), sourced by their init scripts (busybox sh). guest_base mounts
# the basics; agents_up builds the two "hosts" (network namespaces sgA 10.77.0.1 and sgB
# 10.77.0.2 joined by veth), starts `sigil server` in sgA and one agent per namespace (after
# guest_base), and returns once both agents are ready; web_up starts the server workload. Every wait is a bounded loop; a setup failure prints
# AGENTS-RESULT fail and powers off.
#
# Inputs: AGENT_FLAGS (extra agent flags), KTLS (on: load tls.ko, the default; off: no kTLS).
# Sets ADMIN, AGENT_API, HEALTH_A, HEALTH_B.

guest_base() {
  mount -t proc proc /proc
  mount -t sysfs sys /sys
  mount -t devtmpfs dev /dev 2>/dev/null
  mount -t tmpfs tmp /tmp
  mount -t tmpfs run /run
  mkdir -p /var && ln -s /run /var/run
  echo /sbin/modprobe > /proc/sys/kernel/modprobe
  hostname sigil-vm
}

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

agents_up() {
  guest_base
  say "INIT kernel $(uname -r), kTLS ${KTLS:-on}, agent flags: ${AGENT_FLAGS:-(none)}"
  if [ "${KTLS:-on}" = on ]; then
    modprobe tls || result "fail modprobe tls"
    # The AES-NI drivers, as udev loads them on a host whose CPU has AES-NI; without them the
    # kernel's gcm(aes) for kTLS is the generic C code.
    modprobe aesni_intel 2>/dev/null || say "INIT aesni_intel not loaded"
  fi
  modprobe veth || result "fail modprobe veth"
  if [ "${KTLS:-on}" = off ]; then
    # No tls module, and none loaded on demand (TCP_ULP "tls" would ask for it): the agents
    # find no kTLS and relay in user space, as on a kernel without it.
    echo /bin/false > /proc/sys/kernel/modprobe
  fi
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
}

# The server workload behind agent B (the `mutual` Service web, 10.77.0.2:8080), under sigil run.
web_up() {
  ip netns exec sgB $SIGIL run --cgroup-root /cgroup2 --managed-cgroup sigil-vm-b -- \
    /bin/vm_server serve 10.77.0.2 8080 >/tmp/web.log 2>&1 &
}
