// NftInterceptor: nftables redirect + SO_ORIGINAL_DST + sock_diag attribution; see
// nft_interceptor.h.
#include "dataplane/intercept/nft_interceptor.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "common/owned_fd.h"
#include "dataplane/intercept/cgroup2.h"
#include "dataplane/intercept/nft_run.h"
#include "dataplane/intercept/sock_diag.h"
#include "dataplane/intercept/socket_owner.h"

namespace sigil::dataplane {
namespace {

constexpr int kPriority = -110;  // before iptables' nat OUTPUT (-100): we see the original dst
constexpr size_t kMaxDirsWalked = 65536;
constexpr size_t kMaxCachedDirs = 4096;

std::string Errno(int err) { return std::strerror(err); }

std::string Ip4(const in_addr& a) {
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string Ip6(const in6_addr& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET6, &a, buf, sizeof buf);
  return buf;
}

std::string FormatAddr(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, &ss, sizeof sin);
    return Ip4(sin.sin_addr) + ":" + std::to_string(ntohs(sin.sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    sockaddr_in6 sin6{};
    std::memcpy(&sin6, &ss, sizeof sin6);
    return "[" + Ip6(sin6.sin6_addr) + "]:" + std::to_string(ntohs(sin6.sin6_port));
  }
  return "<family " + std::to_string(ss.ss_family) + ">";
}

bool SameAddr(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    sockaddr_in x{}, y{};
    std::memcpy(&x, &a, sizeof x);
    std::memcpy(&y, &b, sizeof y);
    return x.sin_addr.s_addr == y.sin_addr.s_addr && x.sin_port == y.sin_port;
  }
  sockaddr_in6 x{}, y{};
  std::memcpy(&x, &a, sizeof x);
  std::memcpy(&y, &b, sizeof y);
  return std::memcmp(&x.sin6_addr, &y.sin6_addr, 16) == 0 && x.sin6_port == y.sin6_port;
}

// An IPv4-mapped IPv6 address as AF_INET (the agent may listen dual-stack); others unchanged.
sockaddr_storage Unmap(const sockaddr_storage& ss) {
  if (ss.ss_family != AF_INET6) return ss;
  sockaddr_in6 sin6{};
  std::memcpy(&sin6, &ss, sizeof sin6);
  if (!IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) return ss;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = sin6.sin6_port;
  std::memcpy(&sin.sin_addr, &sin6.sin6_addr.s6_addr[12], 4);
  sockaddr_storage out{};
  std::memcpy(&out, &sin, sizeof sin);
  return out;
}

// The conntrack entry's original destination for an accepted socket of `family`.
Result<sockaddr_storage> OriginalDst(int fd, int family) {
  sockaddr_storage out{};
  if (family == AF_INET) {
    sockaddr_in sin{};
    socklen_t len = sizeof sin;
    if (::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sin, &len) != 0) {
      const int err = errno;
      if (err == ENOENT) return NotFound("no conntrack entry (not redirected)");
      return Unavailable("getsockopt(SO_ORIGINAL_DST): " + Errno(err));
    }
    std::memcpy(&out, &sin, sizeof sin);
    return out;
  }
  sockaddr_in6 sin6{};
  socklen_t len = sizeof sin6;
  if (::getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &sin6, &len) != 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound("no conntrack entry (not redirected)");
    return Unavailable("getsockopt(IP6T_SO_ORIGINAL_DST): " + Errno(err));
  }
  std::memcpy(&out, &sin6, sizeof sin6);
  return out;
}

// The "0::PATH" line of /proc/PID/cgroup (the cgroup v2 membership).
Result<std::string> CgroupV2PathOf(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/cgroup";
  OwnedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return NotFound("open " + path + ": " + Errno(errno));
  std::string text;
  char buf[4096];
  while (text.size() < (64 << 10)) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string_view line = std::string_view(text).substr(start, end - start);
    if (line.starts_with("0::")) return std::string(line.substr(3));
    start = end + 1;
  }
  return FailedPrecondition(path + " has no cgroup v2 entry (0::)");
}

// For rule text: a path nft reads between double quotes, which it cannot escape.
bool QuotableForNft(std::string_view s) {
  for (const char c : s) {
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}

std::string ExclusionRules(const InterceptConfig& c) {
  std::string r;
  r += "meta l4proto != tcp return\n";
  // The mesh's own transport, already protected.
  r += "tcp dport " + std::to_string(c.inbound_port) + " return\n";
  if (c.skip_loopback) {
    // connect() to 0.0.0.0 / :: reaches the hook as 127.0.0.1 / ::1, so these cover them.
    r += "ip daddr 127.0.0.0/8 return\n";
    r += "ip6 daddr ::1 return\n";
  }
  // A workload dialling the listener directly is not redirected again.
  r += "ip daddr " + Ip4(c.redirect_v4.sin_addr) + " tcp dport " +
       std::to_string(ntohs(c.redirect_v4.sin_port)) + " return\n";
  if (c.redirect_v6) {
    r += "ip6 daddr " + Ip6(c.redirect_v6->sin6_addr) + " tcp dport " +
         std::to_string(ntohs(c.redirect_v6->sin6_port)) + " return\n";
  } else {
    r += "meta nfproto ipv6 return\n";  // nowhere to send native IPv6
  }
  return r;
}

std::string CgroupRule(const NftCgroupMatch& m) {
  return "socket cgroupv2 level " + std::to_string(m.level) + " \"" + m.nft_path +
         "\" goto to_listener\n";
}

std::string RedirectRules(const InterceptConfig& c) {
  std::string r = "counter name \"redirected\"\n";
  r += "meta nfproto ipv4 meta l4proto tcp dnat ip to " + Ip4(c.redirect_v4.sin_addr) + ":" +
       std::to_string(ntohs(c.redirect_v4.sin_port)) + "\n";
  if (c.redirect_v6) {
    r += "meta nfproto ipv6 meta l4proto tcp dnat ip6 to [" + Ip6(c.redirect_v6->sin6_addr) +
         "]:" + std::to_string(ntohs(c.redirect_v6->sin6_port)) + "\n";
  }
  return r;
}

std::string Indent(const std::string& lines, const std::string& pad) {
  std::string out;
  for (size_t start = 0; start < lines.size();) {
    size_t end = lines.find('\n', start);
    if (end == std::string::npos) end = lines.size();
    out += pad + lines.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

Result<struct stat> Stat(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return NotFound("stat " + path + ": " + Errno(errno));
  return st;
}

std::string Parent(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

std::string NftInterceptor::TableScript(const InterceptConfig& config, const std::string& table,
                                        const std::vector<NftCgroupMatch>& cgroups) {
  const std::string t = "inet " + table;
  std::string rules = ExclusionRules(config);
  for (const auto& m : cgroups) rules += CgroupRule(m);
  // "table; delete table; table {...}": create-or-replace in one transaction.
  return "table " + t + "\ndelete table " + t + "\ntable " + t + " {\n" +
         "  counter redirected {\n  }\n" + "  chain output {\n" +
         "    type nat hook output priority " + std::to_string(kPriority) + "; policy accept;\n" +
         Indent(rules, "    ") + "  }\n" + "  chain to_listener {\n" +
         Indent(RedirectRules(config), "    ") + "  }\n}\n";
}

std::string NftInterceptor::ChainScript(const InterceptConfig& config, const std::string& table,
                                        const std::vector<NftCgroupMatch>& cgroups) {
  const std::string prefix = "add rule inet " + table + " output ";
  std::string rules = ExclusionRules(config);
  for (const auto& m : cgroups) rules += CgroupRule(m);
  return "flush chain inet " + table + " output\n" + Indent(rules, prefix);
}

Result<NftInterceptor::Resolved> NftInterceptor::ResolveCgroup(const std::string& cgroup_dir,
                                                               const std::string& base) {
  char real[PATH_MAX];
  if (::realpath(cgroup_dir.c_str(), real) == nullptr) {
    return NotFound("intercept: cgroup " + cgroup_dir + ": " + Errno(errno));
  }
  Resolved r;
  r.dir = real;
  struct statfs fs {};
  if (::statfs(r.dir.c_str(), &fs) != 0 || fs.f_type != CGROUP2_SUPER_MAGIC) {
    return InvalidArgument("intercept: " + r.dir + " is not a cgroup v2 directory");
  }
  SIGIL_ASSIGN_OR_RETURN(const struct stat st, Stat(r.dir));
  r.id = static_cast<uint64_t>(st.st_ino);
  // Level: steps up to the hierarchy root (cgroup id 1), or to the top of this mount.
  r.mount_root = r.dir;
  uint32_t level = 0;
  for (std::string cur = r.dir; cur != "/" && level < 1024;) {
    SIGIL_ASSIGN_OR_RETURN(const struct stat here, Stat(cur));
    if (here.st_ino == 1) break;
    const std::string up = Parent(cur);
    SIGIL_ASSIGN_OR_RETURN(const struct stat above, Stat(up));
    if (above.st_dev != st.st_dev) break;
    cur = up;
    ++level;
    r.mount_root = cur;
  }
  r.match.level = level;
  // nft prepends "<base>/": climb out of the base with "..", then the absolute path.
  size_t depth = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    if (base[i] == '/' && i + 1 < base.size() && base[i + 1] != '/') ++depth;
  }
  std::string rel;
  for (size_t i = 0; i < depth; ++i) rel += "../";
  rel += r.dir.substr(1);
  if (!QuotableForNft(rel)) {
    return InvalidArgument("intercept: cgroup path " + r.dir +
                           " contains a character nft cannot take in a string");
  }
  Result<struct stat> via = Stat(base + "/" + rel);
  if (!via.ok() || via->st_ino != st.st_ino || via->st_dev != st.st_dev) {
    return Unavailable("intercept: nft resolves cgroup paths under " + base + ", and " + base +
                       "/" + rel + " is not " + r.dir +
                       " (the nftables fallback needs that directory, with no symlinks on it)");
  }
  r.match.nft_path = rel;
  return r;
}

Result<std::unique_ptr<NftInterceptor>> NftInterceptor::Load(const InterceptConfig& config,
                                                             NftInterceptOptions options) {
  if (config.redirect_v4.sin_family != AF_INET || config.redirect_v4.sin_port == 0 ||
      config.redirect_v4.sin_addr.s_addr == htonl(INADDR_ANY)) {
    return InvalidArgument(
        "intercept: redirect_v4 must be an AF_INET address (not 0.0.0.0) with a port");
  }
  if (config.redirect_v6.has_value() &&
      (config.redirect_v6->sin6_family != AF_INET6 || config.redirect_v6->sin6_port == 0 ||
       IN6_IS_ADDR_UNSPECIFIED(&config.redirect_v6->sin6_addr))) {
    return InvalidArgument(
        "intercept: redirect_v6 must be an AF_INET6 address (not ::) with a port");
  }
  if (config.agent_tgid <= 0) {
    return InvalidArgument("intercept: agent_tgid " + std::to_string(config.agent_tgid) +
                           " is not a process id");
  }
  if (options.table.empty() || !QuotableForNft(options.table) ||
      options.table.find_first_of(" {};") != std::string::npos) {
    return InvalidArgument("intercept: bad nft table name \"" + options.table + "\"");
  }
  if (::access(options.nft_binary.c_str(), X_OK) != 0) {
    return Unavailable("intercept: nftables: " + options.nft_binary + ": " + Errno(errno));
  }
  std::unique_ptr<NftInterceptor> self(new NftInterceptor(config, std::move(options)));
  SIGIL_ASSIGN_OR_RETURN(self->agent_cgroup_, CgroupV2PathOf(config.agent_tgid));
  SIGIL_TRY(RunNft(self->options_.nft_binary, {"-f", "-"},
                   TableScript(config, self->options_.table, {})));
  self->installed_ = true;
  return self;
}

NftInterceptor::~NftInterceptor() {
  if (!installed_) return;
  const std::string t = "inet " + options_.table;
  (void)RunNft(options_.nft_binary, {"-f", "-"}, "table " + t + "\ndelete table " + t + "\n");
}

Result<void> NftInterceptor::InstallLocked() {
  std::vector<NftCgroupMatch> matches;
  for (const auto& [id, r] : attached_) matches.push_back(r.match);
  SIGIL_TRY(
      RunNft(options_.nft_binary, {"-f", "-"}, ChainScript(config_, options_.table, matches)));
  return Ok();
}

Result<void> NftInterceptor::Attach(const std::string& cgroup_dir) {
  SIGIL_ASSIGN_OR_RETURN(Resolved r, ResolveCgroup(cgroup_dir, options_.nft_cgroup_base));
  // The rule tells processes apart by cgroup only: if the agent were inside, its own upstream
  // connections would be redirected back to itself.
  const std::string agent_dir = agent_cgroup_ == "/" ? r.mount_root : r.mount_root + agent_cgroup_;
  if (agent_dir == r.dir || agent_dir.starts_with(r.dir + "/")) {
    return FailedPrecondition("intercept: " + r.dir + " contains the agent's own cgroup (" +
                              agent_cgroup_ +
                              "); the nftables fallback can only tell the agent from workloads "
                              "by cgroup, so the agent must run outside managed cgroups");
  }
  std::lock_guard lock(mu_);
  if (attached_.contains(r.id)) return Ok();
  attached_.emplace(r.id, r);
  if (Result<void> ok = InstallLocked(); !ok.ok()) {
    attached_.erase(r.id);
    return ok.error().WithContext("intercept: attach " + r.dir);
  }
  return Ok();
}

Result<void> NftInterceptor::Detach(const std::string& cgroup_dir) {
  std::lock_guard lock(mu_);
  auto it = attached_.end();
  if (Result<uint64_t> id = CgroupId(cgroup_dir); id.ok()) it = attached_.find(*id);
  if (it == attached_.end()) {
    char real[PATH_MAX];
    const std::string want = ::realpath(cgroup_dir.c_str(), real) ? real : cgroup_dir;
    for (auto i = attached_.begin(); i != attached_.end(); ++i) {
      if (i->second.dir == want || i->second.dir == cgroup_dir) it = i;
    }
  }
  if (it == attached_.end()) {
    return NotFound("intercept: detach: " + cgroup_dir + " is not attached");
  }
  const Resolved removed = it->second;
  attached_.erase(it);
  dir_by_id_.clear();
  if (Result<void> ok = InstallLocked(); !ok.ok()) {
    attached_.emplace(removed.id, removed);
    return ok.error().WithContext("intercept: detach " + removed.dir);
  }
  return Ok();
}

Result<std::string> NftInterceptor::ManagedDir(uint64_t cgroup_id) const {
  std::vector<std::string> roots;
  {
    std::lock_guard lock(mu_);
    if (auto it = attached_.find(cgroup_id); it != attached_.end()) return it->second.dir;
    if (auto it = dir_by_id_.find(cgroup_id); it != dir_by_id_.end()) return it->second;
    for (const auto& [id, r] : attached_) roots.push_back(r.dir);
  }
  // Breadth-first below each attached directory; cgroup ids are directory inode numbers.
  std::deque<std::string> queue(roots.begin(), roots.end());
  size_t walked = 0;
  while (!queue.empty() && walked < kMaxDirsWalked) {
    const std::string dir = std::move(queue.front());
    queue.pop_front();
    ++walked;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) continue;  // removed meanwhile
    std::string found;
    while (const dirent* e = ::readdir(d)) {
      if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
      std::string child = dir + "/" + e->d_name;
      if (static_cast<uint64_t>(e->d_ino) == cgroup_id) {
        found = std::move(child);
        break;
      }
      queue.push_back(std::move(child));
    }
    ::closedir(d);
    if (!found.empty()) {
      std::lock_guard lock(mu_);
      if (dir_by_id_.size() >= kMaxCachedDirs) dir_by_id_.clear();
      dir_by_id_[cgroup_id] = found;
      return found;
    }
  }
  return NotFound("cgroup id " + std::to_string(cgroup_id) + " is not a managed cgroup");
}

Result<OriginalConnection> NftInterceptor::Attribute(int fd,
                                                     const sockaddr_storage& raw_peer) const {
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    return Internal("getsockname: " + Errno(errno));
  }
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6) {
    return InvalidArgument("accepted socket family " + std::to_string(local.ss_family) +
                           " is not AF_INET or AF_INET6");
  }
  const sockaddr_storage peer = Unmap(raw_peer);
  if (peer.ss_family != AF_INET && peer.ss_family != AF_INET6) {
    return InvalidArgument("peer address family " + std::to_string(raw_peer.ss_family) +
                           " is not AF_INET or AF_INET6");
  }
  // A dual-stack listener sees an IPv4 client through IPv4 conntrack.
  const int family = peer.ss_family;
  SIGIL_ASSIGN_OR_RETURN(const sockaddr_storage orig, OriginalDst(fd, family));
  if (SameAddr(Unmap(local), orig)) {
    return NotFound("no intercepted connection from " + FormatAddr(peer) +
                    " (not redirected: a direct connection to the listener)");
  }
  Result<TcpSocketInfo> client = FindTcpSocket(peer, orig);
  if (!client.ok()) {
    return NotFound("client socket " + FormatAddr(peer) + " -> " + FormatAddr(orig) +
                    " not found (closed?): " + client.error().message());
  }
  if (client->inode == 0) {
    return NotFound("client socket " + FormatAddr(peer) + " is closing (no owner any more)");
  }
  if (client->cgroup_id == 0) {
    return FailedPrecondition(
        "the kernel reports no cgroup for sockets (INET_DIAG_CGROUP_ID "
        "needs Linux 5.7 with cgroup socket data)");
  }
  SIGIL_ASSIGN_OR_RETURN(const std::string dir, ManagedDir(client->cgroup_id));
  SIGIL_ASSIGN_OR_RETURN(const std::vector<pid_t> holders,
                         ProcessesHoldingSocket(dir, client->inode));
  if (holders.empty()) {
    return NotFound("no process in " + dir + " holds socket inode " +
                    std::to_string(client->inode) + " (exited or moved to another cgroup)");
  }
  if (holders.size() > 1) {
    std::string pids;
    for (const pid_t p : holders) pids += (pids.empty() ? "" : ",") + std::to_string(p);
    return PermissionDenied("socket inode " + std::to_string(client->inode) +
                            " is held by several processes (" + pids +
                            "): cannot tell which one connected");
  }
  SIGIL_ASSIGN_OR_RETURN(const gid_t gid, EffectiveGid(holders.front()));
  OriginalConnection c;
  c.original_dst = orig;
  c.tgid = holders.front();
  c.tid = holders.front();
  c.uid = client->uid;
  c.gid = gid;
  c.cgroup_id = client->cgroup_id;
  c.cookie = client->inode;
  return c;
}

Result<OriginalConnection> NftInterceptor::Lookup(int accepted_fd,
                                                  const sockaddr_storage& peer) const {
  const auto start = std::chrono::steady_clock::now();
  Result<OriginalConnection> r = Attribute(accepted_fd, peer);
  lookups_.fetch_add(1, std::memory_order_relaxed);
  if (!r.ok()) lookup_failures_.fetch_add(1, std::memory_order_relaxed);
  lookup_micros_.fetch_add(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - start)
                                .count()),
      std::memory_order_relaxed);
  if (!r.ok()) return r.error().WithContext("intercept (nftables)");
  return r;
}

std::optional<ListenerOwner> NftInterceptor::LookupListener(int family, uint16_t port) const {
  if (family != AF_INET && family != AF_INET6) return std::nullopt;
  std::vector<TcpSocketInfo> candidates;
  if (auto own = TcpListeners(family, port); own.ok()) candidates = std::move(*own);
  if (family == AF_INET) {
    // A dual-stack IPv6 listener also serves IPv4; after the IPv4 ones.
    if (auto v6 = TcpListeners(AF_INET6, port); v6.ok()) {
      for (const auto& s : *v6) {
        if (!s.v6only) candidates.push_back(s);
      }
    }
  }
  for (const auto& s : candidates) {
    if (s.inode == 0 || s.cgroup_id == 0) continue;
    Result<std::string> dir = ManagedDir(s.cgroup_id);
    if (!dir.ok()) continue;  // not a managed process's listener
    Result<std::vector<pid_t>> holders = ProcessesHoldingSocket(*dir, s.inode);
    if (!holders.ok() || holders->empty()) continue;
    // Pre-forked servers share the socket; the lowest pid is usually the parent that bound it.
    Result<gid_t> gid = EffectiveGid(holders->front());
    if (!gid.ok()) continue;
    return ListenerOwner{
        .tgid = holders->front(), .uid = s.uid, .gid = *gid, .cgroup_id = s.cgroup_id};
  }
  return std::nullopt;
}

InterceptCounters NftInterceptor::Counters() const {
  InterceptCounters c;
  c.lookups = lookups_.load(std::memory_order_relaxed);
  c.lookup_failures = lookup_failures_.load(std::memory_order_relaxed);
  c.lookup_micros = lookup_micros_.load(std::memory_order_relaxed);
  // "... counter redirected { packets N bytes M } ...": the nat chain sees only the first
  // packet of each connection, so packets = connections redirected.
  Result<std::string> out =
      RunNft(options_.nft_binary, {"list", "counter", "inet", options_.table, "redirected"});
  if (out.ok()) {
    const size_t at = out->find("packets ");
    if (at != std::string::npos) {
      const char* p = out->data() + at + 8;
      std::from_chars(p, out->data() + out->size(), c.redirected);
    }
  }
  return c;
}

}  // namespace sigil::dataplane
