// SPDX-License-Identifier: GPL-2.0
/* Connection interception with exact process attribution.
 *
 * Attached to a managed cgroup v2 directory, these programs:
 *   cgroup/connect4|6     record who dialled what (by socket cookie) and rewrite the
 *                         destination of outbound TCP connects to the agent's listener;
 *   sockops               once the redirected connection is established, index the record by
 *                         the client's local (address, port) -- the peer the agent sees after
 *                         accept() -- and remove both records when the socket closes;
 *   cgroup/getpeername4|6 show the workload the address it dialled, not the agent's;
 *   cgroup/bind4|6        remember which managed process bound which TCP port (a hint for the
 *                         inbound side).
 *
 * Every program returns 1 ("allow") except connect when the record could not be stored: then
 * the connect is refused (EPERM) rather than sent to the agent unattributable or, worse, sent
 * past the agent unpoliced. Data layout and byte order: see intercept_abi.h.
 *
 * Only UAPI headers are used (no vmlinux.h / CO-RE): every field read is part of the stable
 * BPF context ABI.
 */
/* <linux/bpf.h> first: the libbpf headers use its __u32/__u64 types. */
#include <linux/bpf.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "intercept_abi.h"

/* From <sys/socket.h> / <netinet/in.h>, which are not usable with -target bpf. */
#define SIGIL_SOCK_STREAM 1
#define SIGIL_IPPROTO_TCP 6

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct sigil_config);
} config SEC(".maps");

/* Socket cookie -> record. LRU: a socket that dies without a TCP_CLOSE callback (e.g. connect
 * failed before the SYN) is evicted eventually instead of leaking. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SIGIL_MAX_CONNECTIONS);
  __type(key, __u64);
  __type(value, struct sigil_orig);
} by_cookie SEC(".maps");

/* Client local (address, port) -> record; what the agent looks up after accept(). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SIGIL_MAX_CONNECTIONS);
  __type(key, struct sigil_tuple_key);
  __type(value, struct sigil_orig);
} by_tuple SEC(".maps");

/* (family, port) -> managed process that bound it. Hints: see intercept_abi.h. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SIGIL_MAX_LISTENERS);
  __type(key, struct sigil_listener_key);
  __type(value, struct sigil_listener);
} listeners SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SIGIL_CTR_MAX);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 idx) {
  __u64* v = bpf_map_lookup_elem(&counters, &idx);
  /* Per-CPU slot and cgroup programs run with migration disabled: a plain add is enough. */
  if (v) *v += 1;
}

/* NULL unless the loader has stored a configuration and set SIGIL_CFG_ENABLED. Between
 * Load() and the config write (or after disabling) every program is a no-op. */
static __always_inline struct sigil_config* enabled_config(void) {
  __u32 zero = 0;
  struct sigil_config* cfg = bpf_map_lookup_elem(&config, &zero);
  if (!cfg || !(cfg->flags & SIGIL_CFG_ENABLED)) return 0;
  return cfg;
}

static __always_inline int is_v4_mapped(__u32 a0, __u32 a1, __u32 a2) {
  return a0 == 0 && a1 == 0 && a2 == bpf_htonl(0x0000ffff);
}

/* 127.0.0.0/8, and 0.0.0.0 which connect() also delivers to the local host. */
static __always_inline int is_loopback4(__u32 addr_be) {
  return (bpf_ntohl(addr_be) >> 24) == 127 || addr_be == 0;
}

/* ::1, and :: which connect() also delivers to the local host. */
static __always_inline int is_loopback6(__u32 a0, __u32 a1, __u32 a2, __u32 a3) {
  return a0 == 0 && a1 == 0 && a2 == 0 && (a3 == bpf_htonl(1) || a3 == 0);
}

/* Fills everything but the destination: who is connecting, from which cgroup. */
static __always_inline void fill_caller(struct sigil_orig* o, __u64 cookie) {
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u64 uid_gid = bpf_get_current_uid_gid();
  o->tgid = pid_tgid >> 32;
  o->tid = (__u32)pid_tgid;
  o->uid = (__u32)uid_gid;
  o->gid = uid_gid >> 32;
  o->cgroup_id = bpf_get_current_cgroup_id();
  o->cookie = cookie;
}

/* Common checks for both connect hooks. Returns 1 when the connect must pass untouched. */
static __always_inline int skip_connect(const struct sigil_config* cfg, __u16 dst_port,
                                        int loopback) {
  /* The agent's own upstream connections must reach their real destination, otherwise the
   * agent would loop back into itself. */
  if ((bpf_get_current_pid_tgid() >> 32) == cfg->agent_tgid) {
    count(SIGIL_CTR_SKIPPED_AGENT);
    return 1;
  }
  /* The inbound (mTLS-terminating) port is the mesh's own transport: already protected. */
  if (dst_port == cfg->inbound_port) {
    count(SIGIL_CTR_SKIPPED_INBOUND);
    return 1;
  }
  if (loopback && (cfg->flags & SIGIL_CFG_SKIP_LOOPBACK)) {
    count(SIGIL_CTR_SKIPPED_LOOPBACK);
    return 1;
  }
  return 0;
}

/* Stores the record under the socket cookie. Returns 0 on success. */
static __always_inline int remember(struct sigil_orig* o) {
  if (bpf_map_update_elem(&by_cookie, &o->cookie, o, BPF_ANY) != 0) {
    count(SIGIL_CTR_UPDATE_FAILED);
    return -1;
  }
  return 0;
}

SEC("cgroup/connect4")
int sigil_connect4(struct bpf_sock_addr* ctx) {
  /* TCP only: UDP "connect" just sets a default destination and has no accept() on the
   * agent side to attribute. */
  if (ctx->type != SIGIL_SOCK_STREAM) return 1;
  struct sigil_config* cfg = enabled_config();
  if (!cfg) return 1;

  __u32 dst = ctx->user_ip4;
  __u16 port = bpf_ntohs((__u16)ctx->user_port);
  if (skip_connect(cfg, port, is_loopback4(dst))) return 1;
  /* A workload talking to the agent's listener directly is not redirected again (that would
   * record the listener as the "original" destination). */
  if (dst == cfg->redirect4_addr && port == cfg->redirect4_port) {
    count(SIGIL_CTR_SKIPPED_SELF);
    return 1;
  }

  struct sigil_orig o = {};
  o.family = SIGIL_AF_INET;
  o.dst_addr[0] = dst;
  o.dst_port = port;
  fill_caller(&o, bpf_get_socket_cookie(ctx));
  if (remember(&o) != 0) return 0; /* fail closed: EPERM */

  ctx->user_ip4 = cfg->redirect4_addr;
  ctx->user_port = bpf_htons(cfg->redirect4_port);
  count(SIGIL_CTR_REDIRECTED);
  return 1;
}

SEC("cgroup/connect6")
int sigil_connect6(struct bpf_sock_addr* ctx) {
  if (ctx->type != SIGIL_SOCK_STREAM) return 1;
  struct sigil_config* cfg = enabled_config();
  if (!cfg) return 1;

  __u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
  __u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
  __u16 port = bpf_ntohs((__u16)ctx->user_port);
  struct sigil_orig o = {};
  o.dst_port = port;

  if (is_v4_mapped(a0, a1, a2)) {
    /* A dual-stack socket dialling an IPv4 peer (::ffff:a.b.c.d). The kernel turns this into
     * an IPv4 connection, so it goes to the IPv4 listener in mapped form, and the record is
     * an IPv4 one (the agent sees an IPv4 peer if it listens on IPv4). */
    if (skip_connect(cfg, port, is_loopback4(a3))) return 1;
    if (a3 == cfg->redirect4_addr && port == cfg->redirect4_port) {
      count(SIGIL_CTR_SKIPPED_SELF);
      return 1;
    }
    o.family = SIGIL_AF_INET;
    o.dst_addr[0] = a3;
    fill_caller(&o, bpf_get_socket_cookie(ctx));
    if (remember(&o) != 0) return 0;
    ctx->user_ip6[3] = cfg->redirect4_addr; /* [0..2] already hold ::ffff: */
    ctx->user_port = bpf_htons(cfg->redirect4_port);
    count(SIGIL_CTR_REDIRECTED);
    return 1;
  }

  /* Without an IPv6 listener there is nowhere to send native IPv6 connections. */
  if (!(cfg->flags & SIGIL_CFG_HAVE_V6)) return 1;
  if (skip_connect(cfg, port, is_loopback6(a0, a1, a2, a3))) return 1;
  if (a0 == cfg->redirect6_addr[0] && a1 == cfg->redirect6_addr[1] &&
      a2 == cfg->redirect6_addr[2] && a3 == cfg->redirect6_addr[3] && port == cfg->redirect6_port) {
    count(SIGIL_CTR_SKIPPED_SELF);
    return 1;
  }
  o.family = SIGIL_AF_INET6;
  o.dst_addr[0] = a0;
  o.dst_addr[1] = a1;
  o.dst_addr[2] = a2;
  o.dst_addr[3] = a3;
  fill_caller(&o, bpf_get_socket_cookie(ctx));
  if (remember(&o) != 0) return 0;
  ctx->user_ip6[0] = cfg->redirect6_addr[0];
  ctx->user_ip6[1] = cfg->redirect6_addr[1];
  ctx->user_ip6[2] = cfg->redirect6_addr[2];
  ctx->user_ip6[3] = cfg->redirect6_addr[3];
  ctx->user_port = bpf_htons(cfg->redirect6_port);
  count(SIGIL_CTR_REDIRECTED);
  return 1;
}

/* The by_tuple key of a socket: its local address (normalised: IPv4-mapped -> AF_INET) and
 * local port. In sock_ops, local_ip4/local_ip6 are network order and local_port is HOST
 * order (unlike remote_port, which is network order). */
static __always_inline void local_tuple(struct bpf_sock_ops* skops, struct sigil_tuple_key* k) {
  k->port = (__u16)skops->local_port;
  if (skops->family == SIGIL_AF_INET) {
    k->family = SIGIL_AF_INET;
    k->addr[0] = skops->local_ip4;
    return;
  }
  __u32 a0 = skops->local_ip6[0], a1 = skops->local_ip6[1];
  __u32 a2 = skops->local_ip6[2], a3 = skops->local_ip6[3];
  if (is_v4_mapped(a0, a1, a2)) {
    k->family = SIGIL_AF_INET;
    k->addr[0] = a3;
    return;
  }
  k->family = SIGIL_AF_INET6;
  k->addr[0] = a0;
  k->addr[1] = a1;
  k->addr[2] = a2;
  k->addr[3] = a3;
}

SEC("sockops")
int sigil_sockops(struct bpf_sock_ops* skops) {
  if (skops->family != SIGIL_AF_INET && skops->family != SIGIL_AF_INET6) return 1;

  switch (skops->op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB: {
      /* The SYN is about to be sent. Ask for state callbacks now (not only once established)
       * so that a redirected connect that fails (refused, timed out) also reaches TCP_CLOSE
       * below and its by_cookie record is removed. */
      __u64 cookie = bpf_get_socket_cookie(skops);
      if (!bpf_map_lookup_elem(&by_cookie, &cookie)) return 1;
      bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
      return 1;
    }
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
      /* Runs in tcp_finish_connect(), before the final ACK of the handshake is sent, so the
       * agent's accept() can only return this connection after the tuple is in the map. */
      __u64 cookie = bpf_get_socket_cookie(skops);
      struct sigil_orig* o = bpf_map_lookup_elem(&by_cookie, &cookie);
      if (!o) return 1; /* not a connection we redirected */
      struct sigil_tuple_key k = {};
      local_tuple(skops, &k);
      if (bpf_map_update_elem(&by_tuple, &k, o, BPF_ANY) != 0) {
        count(SIGIL_CTR_UPDATE_FAILED);
      } else {
        count(SIGIL_CTR_ESTABLISHED);
      }
      /* Also here in case the socket connected without a TCP_CONNECT_CB (e.g. TCP fast open
       * paths); setting the flag twice is harmless. */
      bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
      return 1;
    }
    case BPF_SOCK_OPS_STATE_CB: {
      /* args[0] = old state, args[1] = new state. Runs at the start of tcp_set_state(), while
       * the local port is still bound, so local_tuple() is still accurate. */
      if (skops->args[1] != BPF_TCP_CLOSE) return 1;
      __u64 cookie = bpf_get_socket_cookie(skops);
      if (!bpf_map_lookup_elem(&by_cookie, &cookie)) return 1;
      struct sigil_tuple_key k = {};
      local_tuple(skops, &k);
      /* Delete the tuple entry only if it is ours: the local port may already have been
       * reused by a newer connection that overwrote it. */
      struct sigil_orig* t = bpf_map_lookup_elem(&by_tuple, &k);
      if (t && t->cookie == cookie) bpf_map_delete_elem(&by_tuple, &k);
      bpf_map_delete_elem(&by_cookie, &cookie);
      count(SIGIL_CTR_CLOSED);
      return 1;
    }
    default:
      return 1;
  }
}

SEC("cgroup/getpeername4")
int sigil_getpeername4(struct bpf_sock_addr* ctx) {
  if (ctx->type != SIGIL_SOCK_STREAM) return 1;
  /* Deliberately not gated on SIGIL_CFG_ENABLED: a connection redirected while enabled
   * keeps reporting its original peer. */
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct sigil_orig* o = bpf_map_lookup_elem(&by_cookie, &cookie);
  if (!o || o->family != SIGIL_AF_INET) return 1;
  ctx->user_ip4 = o->dst_addr[0];
  ctx->user_port = bpf_htons(o->dst_port);
  return 1;
}

SEC("cgroup/getpeername6")
int sigil_getpeername6(struct bpf_sock_addr* ctx) {
  if (ctx->type != SIGIL_SOCK_STREAM) return 1;
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct sigil_orig* o = bpf_map_lookup_elem(&by_cookie, &cookie);
  if (!o) return 1;
  if (o->family == SIGIL_AF_INET) {
    /* IPv4 peer of a dual-stack socket: report it in mapped form, as the kernel would. */
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
    ctx->user_ip6[3] = o->dst_addr[0];
  } else {
    ctx->user_ip6[0] = o->dst_addr[0];
    ctx->user_ip6[1] = o->dst_addr[1];
    ctx->user_ip6[2] = o->dst_addr[2];
    ctx->user_ip6[3] = o->dst_addr[3];
  }
  ctx->user_port = bpf_htons(o->dst_port);
  return 1;
}

/* bind(): remember which managed process serves a TCP port. The hook runs before the bind
 * itself, which may still fail (EADDRINUSE), so the entry is a hint the agent re-verifies. */
static __always_inline int record_bind(struct bpf_sock_addr* ctx, __u32 family) {
  if (ctx->type != SIGIL_SOCK_STREAM) return 1;
  if (!enabled_config()) return 1;
  __u16 port = bpf_ntohs((__u16)ctx->user_port);
  if (port == 0) return 1; /* ephemeral: a client socket or a port we cannot know yet */
  struct sigil_listener_key k = {};
  k.family = family;
  k.port = port;
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u64 uid_gid = bpf_get_current_uid_gid();
  struct sigil_listener v = {};
  v.tgid = pid_tgid >> 32;
  v.uid = (__u32)uid_gid;
  v.gid = uid_gid >> 32;
  v.cgroup_id = bpf_get_current_cgroup_id();
  if (bpf_map_update_elem(&listeners, &k, &v, BPF_ANY) != 0) {
    count(SIGIL_CTR_UPDATE_FAILED);
  } else {
    count(SIGIL_CTR_LISTENERS);
  }
  return 1;
}

SEC("cgroup/bind4")
int sigil_bind4(struct bpf_sock_addr* ctx) { return record_bind(ctx, SIGIL_AF_INET); }

SEC("cgroup/bind6")
int sigil_bind6(struct bpf_sock_addr* ctx) { return record_bind(ctx, SIGIL_AF_INET6); }
