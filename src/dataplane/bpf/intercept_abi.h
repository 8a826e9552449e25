/* ABI shared by the interception BPF programs (intercept.bpf.c) and the C++ loader
 * (src/dataplane/intercept/). Plain C, fixed-width types, explicit padding: both sides must
 * agree byte for byte, and every padding field is written as zero so that structs used as
 * hash keys compare equal.
 *
 * Byte order conventions (the same in every struct below):
 *   - addresses are 16 bytes (`__u32 addr[4]`) in NETWORK byte order, exactly as the kernel
 *     stores them; an IPv4 address occupies addr[0] (the first 4 bytes) and addr[1..3] are 0.
 *     An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is always normalised to family AF_INET
 *     with the IPv4 address in addr[0].
 *   - ports are in HOST byte order.
 *   - family is AF_INET (2) or AF_INET6 (10).
 *   - pids (tgid, tid) are as seen from the initial pid namespace (bpf_get_current_pid_tgid).
 */
#ifndef SIGIL_DATAPLANE_BPF_INTERCEPT_ABI_H_
#define SIGIL_DATAPLANE_BPF_INTERCEPT_ABI_H_

#include <linux/types.h>

#define SIGIL_AF_INET 2
#define SIGIL_AF_INET6 10

/* Map capacities. The LRU maps evict the least recently used entry when full, so a leak
 * (e.g. a socket that never reached a state callback) can never exhaust memory. */
#define SIGIL_MAX_CONNECTIONS 65536
#define SIGIL_MAX_LISTENERS 16384

/* sigil_config.flags */
#define SIGIL_CFG_SKIP_LOOPBACK (1u << 0) /* never redirect 127.0.0.0/8 and ::1 */
#define SIGIL_CFG_ENABLED (1u << 1)       /* while clear, every program is a no-op */
#define SIGIL_CFG_HAVE_V6 (1u << 2)       /* redirect6_* is valid; else native v6 passes */

/* The single entry of the `config` ARRAY map. */
struct sigil_config {
  __u32 redirect4_addr;    /* agent outbound listener, IPv4, network order */
  __u32 redirect6_addr[4]; /* agent outbound listener, IPv6, network order */
  __u16 redirect4_port;    /* host order */
  __u16 redirect6_port;    /* host order */
  __u16 inbound_port;      /* connects to this port are never redirected (host order) */
  __u16 pad0;
  __u32 agent_tgid; /* connects made by this process are never redirected */
  __u32 flags;      /* SIGIL_CFG_* */
};

/* What a managed process dialled, and who it was. Value of `by_cookie` and `by_tuple`. */
struct sigil_orig {
  __u32 family;      /* family of dst_addr (AF_INET for IPv4-mapped destinations) */
  __u32 dst_addr[4]; /* original destination, network order */
  __u16 dst_port;    /* original destination port, host order */
  __u16 pad0;
  __u32 tgid; /* process (thread group) that called connect() */
  __u32 tid;  /* thread that called connect() */
  __u32 uid;
  __u32 gid;
  __u64 cgroup_id; /* cgroup v2 id (inode of the cgroup directory) */
  __u64 cookie;    /* socket cookie of the client socket */
};

/* Key of `by_tuple`: the client socket's LOCAL address and port, which is what the agent
 * sees as the peer of the accepted proxy connection. */
struct sigil_tuple_key {
  __u32 family;
  __u32 addr[4]; /* network order */
  __u16 port;    /* host order */
  __u16 pad0;
};

/* Key and value of `listeners`: which managed process bound a TCP port. A hint only: the
 * entry may be stale (process gone, bind failed after the hook ran, LRU eviction). */
struct sigil_listener_key {
  __u32 family;
  __u16 port; /* host order */
  __u16 pad0;
};

struct sigil_listener {
  __u32 tgid;
  __u32 uid;
  __u32 gid;
  __u32 pad0;
  __u64 cgroup_id;
};

/* Indices of the `counters` PERCPU_ARRAY map (each slot is a __u64 per CPU). */
enum sigil_counter {
  SIGIL_CTR_REDIRECTED = 0,       /* connect() rewritten to the agent */
  SIGIL_CTR_SKIPPED_AGENT = 1,    /* connect() by the agent itself */
  SIGIL_CTR_SKIPPED_LOOPBACK = 2, /* loopback destination with SIGIL_CFG_SKIP_LOOPBACK */
  SIGIL_CTR_UPDATE_FAILED = 3,    /* a map update failed (connect is then refused) */
  SIGIL_CTR_ESTABLISHED = 4,      /* intercepted connection established, tuple recorded */
  SIGIL_CTR_CLOSED = 5,           /* intercepted connection closed, entries removed */
  SIGIL_CTR_SKIPPED_INBOUND = 6,  /* destination port is the inbound port */
  SIGIL_CTR_SKIPPED_SELF = 7,     /* destination is the redirect address itself */
  SIGIL_CTR_LISTENERS = 8,        /* bind() of a TCP port recorded */
  SIGIL_CTR_MAX = 9,
};

#endif /* SIGIL_DATAPLANE_BPF_INTERCEPT_ABI_H_ */
