// InterceptCa: the node-local CA of the TLS-interception mode of `inject` Services
// (spec.inject.terminateTls, docs/injection.md "TLS interception"). The agent terminates a
// workload's HTTPS connection with a leaf this CA issues for the name the workload asked for
// (SNI), and the workload trusts the CA through a bundle file `sigil run` points it to.
//
// What limits the damage the CA could do:
//   - Its key is generated here (EC P-256) and never leaves the process: no file, no API. With
//     the agent's secure heap (custody::HardenProcess) the private scalar lives in the mlocked,
//     non-dumpable arena, like workload keys.
//   - Each CA certificate is short-lived (24 h by default) and re-created with every agent
//     start (the old key is gone, so are its files).
//   - Critical X.509 nameConstraints: the DNS names of the terminating Services as permitted
//     subtrees ("api.example" permits api.example and names below it, as RFC 5280 defines
//     DNS constraints; "*.example" becomes ".example", names below example only), and every
//     IPv4 and IPv6 address excluded. A certificate for any other server name, even one signed
//     with a stolen key, fails the workload's path validation.
//   - Leaves are issued only for names Cover() was given (and only when the proxy found the
//     name covered by the Service the connection was dialled to), live 1 h, and never outlive
//     their CA.
//
// Generations. Name constraints are fixed when a CA certificate is signed, and workloads load
// the bundle once (at start, or per connection). So a CA is never changed: when a name has no
// CA with at least half its lifetime left (a new Service, or rotation), a new generation is
// added, constrained to all current names, and the files list every live generation. A leaf is
// signed by the oldest live generation that permits its name: a workload that read the bundle
// keeps working for at least half a CA lifetime (12 h) after it did. Generations whose names
// are all gone, and expired ones, are dropped; at most `max_generations` are kept (the oldest
// goes first).
//
// Files (in options.dir, 0644, replaced atomically): kInterceptCaFile holds the live CA
// certificates; kInterceptBundleFile holds the system roots followed by them (what
// SSL_CERT_FILE and friends point to). Both are removed when no name is covered any more and
// when the object is destroyed: their presence means "interception is on on this node".
//
// Thread-safe.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "core/certificate.h"
#include "core/keys.h"

namespace sigil::dataplane::inject {

inline constexpr std::string_view kInterceptCaFile = "inject-ca.pem";
inline constexpr std::string_view kInterceptBundleFile = "inject-ca-bundle.pem";
inline constexpr std::string_view kDefaultInterceptDir = "/run/sigil";

struct InterceptCaOptions {
  std::string dir;           // where the files go; "" writes none (tests)
  std::string system_roots;  // PEM roots the bundle starts with; "" = OpenSSL's default file
  Seconds ca_lifetime{24 * 3600};
  Seconds leaf_lifetime{3600};
  size_t max_names = 256;  // names one generation can be constrained to
  size_t max_generations = 8;
  size_t max_cached_leaves = 1024;  // leaf contexts kept for reuse (wildcards: many hosts)
};

// `pattern` is a DNS name or "*.domain" (exactly one more label); `host` a DNS name.
// Case-insensitive.
bool InterceptNameMatches(std::string_view pattern, std::string_view host);

class InterceptCa {
 public:
  explicit InterceptCa(InterceptCaOptions options);
  ~InterceptCa();  // removes the files
  InterceptCa(const InterceptCa&) = delete;
  InterceptCa& operator=(const InterceptCa&) = delete;

  // The names leaves may be issued for from now on (DNS names, "*.domain" patterns; invalid
  // ones are InvalidArgument and change nothing). Adds a generation when one of them has no
  // live generation with half its lifetime left, drops expired and unneeded ones, and rewrites
  // the files when the set of generations changed; empty `names` drops everything and removes
  // the files. Returns whether the generations changed.
  Result<bool> Cover(std::vector<std::string> names, TimePoint now);

  // A TLS server context (TLS 1.2+, ALPN http/1.1 only, no session tickets) presenting a leaf
  // for `host`, which must match a name given to the last Cover (PermissionDenied otherwise).
  // Contexts are cached and reused while their leaf has 10 minutes left.
  Result<std::shared_ptr<SSL_CTX>> ContextFor(std::string_view host, TimePoint now);

  // The live CA certificates, oldest first.
  std::vector<core::Certificate> Authorities() const;
  std::vector<std::string> names() const;
  std::string ca_file() const;      // "" without options.dir
  std::string bundle_file() const;  // "" without options.dir

  // Tests only: a leaf for any `host` from the newest generation, skipping the coverage check
  // (to prove the name constraints hold on their own).
  Result<core::Certificate> IssueUncheckedForTest(std::string_view host, TimePoint now);

 private:
  struct Generation {
    uint64_t id;
    core::PrivateKey key;
    core::Certificate cert;
    std::vector<std::string> names;
    TimePoint not_after;
  };
  struct Leaf {
    uint64_t generation = 0;
    TimePoint not_after;
    std::shared_ptr<SSL_CTX> ctx;
  };

  Result<std::unique_ptr<Generation>> NewGeneration(const std::vector<std::string>& names,
                                                    TimePoint now);
  Result<void> WriteFiles();
  void RemoveFiles();
  const Generation* Pick(std::string_view host, TimePoint now) const;

  const InterceptCaOptions options_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Generation>> generations_;  // oldest first
  std::vector<std::string> names_;                        // lowercased, sorted, unique
  std::map<std::string, Leaf, std::less<>> leaves_;
  uint64_t next_id_ = 1;
  bool files_written_ = false;
};

}  // namespace sigil::dataplane::inject
