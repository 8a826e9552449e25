#include "dataplane/inject/intercept_ca.h"

#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/encoding.h"
#include "common/file_util.h"
#include "common/ossl.h"
#include "core/x509_builder.h"

namespace sigil::dataplane::inject {
namespace {

namespace x509_builder = core::x509_builder;

constexpr Seconds kBackdate{10};
constexpr Seconds kLeafMinLeft{600};  // a leaf (or a generation for one) must have this left
constexpr size_t kMaxRootsFile = size_t{8} << 20;

using NameConstraintsPtr = std::unique_ptr<NAME_CONSTRAINTS, OsslFree<NAME_CONSTRAINTS_free>>;
using GeneralNamePtr = std::unique_ptr<GENERAL_NAME, OsslFree<GENERAL_NAME_free>>;
using GeneralSubtreePtr = std::unique_ptr<GENERAL_SUBTREE, OsslFree<GENERAL_SUBTREE_free>>;

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = Lower(c);
  return out;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

// LDH labels of 1..63 bytes, not starting or ending with '-', at most 253 bytes in all; with
// `wildcard`, a leading "*." is allowed.
Result<void> CheckDnsName(std::string_view name, bool wildcard) {
  std::string_view rest = name;
  if (wildcard && rest.starts_with("*.")) rest.remove_prefix(2);
  if (rest.empty() || name.size() > 253) {
    return InvalidArgument("intercept: \"" + std::string(name) + "\" is not a DNS name");
  }
  size_t start = 0;
  while (start <= rest.size()) {
    const size_t dot = std::min(rest.find('.', start), rest.size());
    const std::string_view label = rest.substr(start, dot - start);
    bool ok = !label.empty() && label.size() <= 63 && label.front() != '-' && label.back() != '-';
    for (char c : label) {
      ok = ok &&
           ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-');
    }
    if (!ok) {
      return InvalidArgument("intercept: \"" + std::string(name.substr(0, 253)) +
                             "\" is not a DNS name (LDH labels of 1-63 bytes)");
    }
    start = dot + 1;
  }
  return Ok();
}

Result<X509NamePtr> MakeName(std::string_view common_name) {
  X509NamePtr name(X509_NAME_new());
  if (!name) return OsslError("intercept: name");
  SIGIL_TRY(x509_builder::AddNameEntry(name.get(), "O", "Sigil"));
  SIGIL_TRY(x509_builder::AddNameEntry(name.get(), "CN", common_name));
  return name;
}

Result<GeneralNamePtr> DnsGeneralName(std::string_view dns) {
  GeneralNamePtr gn(GENERAL_NAME_new());
  ASN1_IA5STRING* value = ASN1_IA5STRING_new();
  if (!gn || value == nullptr ||
      ASN1_STRING_set(value, dns.data(), static_cast<int>(dns.size())) != 1) {
    ASN1_IA5STRING_free(value);
    return OsslError("intercept: DNS name");
  }
  GENERAL_NAME_set0_value(gn.get(), GEN_DNS, value);
  return gn;
}

Result<GeneralNamePtr> IpRangeGeneralName(size_t address_bytes) {
  // Address and mask, all zero: every address of the family.
  const std::vector<unsigned char> zero(2 * address_bytes, 0);
  GeneralNamePtr gn(GENERAL_NAME_new());
  ASN1_OCTET_STRING* value = ASN1_OCTET_STRING_new();
  if (!gn || value == nullptr ||
      ASN1_OCTET_STRING_set(value, zero.data(), static_cast<int>(zero.size())) != 1) {
    ASN1_OCTET_STRING_free(value);
    return OsslError("intercept: IP range");
  }
  GENERAL_NAME_set0_value(gn.get(), GEN_IPADD, value);
  return gn;
}

Result<void> PushSubtree(STACK_OF(GENERAL_SUBTREE) * stack, GeneralNamePtr name) {
  GeneralSubtreePtr subtree(GENERAL_SUBTREE_new());
  if (!subtree) return OsslError("intercept: subtree");
  GENERAL_NAME_free(subtree->base);
  subtree->base = name.release();
  if (sk_GENERAL_SUBTREE_push(stack, subtree.get()) == 0) return OsslError("intercept: subtree");
  subtree.release();
  return Ok();
}

// Permitted: the DNS names ("*.domain" -> ".domain"); excluded: all IPv4 and IPv6 addresses.
Result<void> AddNameConstraints(X509* x, const std::vector<std::string>& names) {
  NameConstraintsPtr nc(NAME_CONSTRAINTS_new());
  if (!nc) return OsslError("intercept: nameConstraints");
  nc->permittedSubtrees = sk_GENERAL_SUBTREE_new_null();
  nc->excludedSubtrees = sk_GENERAL_SUBTREE_new_null();
  if (nc->permittedSubtrees == nullptr || nc->excludedSubtrees == nullptr) {
    return OsslError("intercept: nameConstraints");
  }
  for (const auto& name : names) {
    std::string_view base = name;
    if (base.starts_with("*")) base.remove_prefix(1);  // "*.domain" -> ".domain"
    SIGIL_ASSIGN_OR_RETURN(GeneralNamePtr gn, DnsGeneralName(base));
    SIGIL_TRY(PushSubtree(nc->permittedSubtrees, std::move(gn)));
  }
  for (size_t bytes : {size_t{4}, size_t{16}}) {
    SIGIL_ASSIGN_OR_RETURN(GeneralNamePtr gn, IpRangeGeneralName(bytes));
    SIGIL_TRY(PushSubtree(nc->excludedSubtrees, std::move(gn)));
  }
  return OsslCheck(X509_add1_ext_i2d(x, NID_name_constraints, nc.get(), 1, X509V3_ADD_DEFAULT),
                   "intercept: add nameConstraints");
}

Result<void> AddLeafExtensions(X509* x, X509* issuer, std::string_view host) {
  SIGIL_TRY(x509_builder::AddBasicConstraints(x, false));
  SIGIL_TRY(x509_builder::AddKeyUsage(x, {x509_builder::kKuDigitalSignature}));
  ExtKeyUsagePtr eku(sk_ASN1_OBJECT_new_null());
  if (!eku || sk_ASN1_OBJECT_push(eku.get(), OBJ_nid2obj(NID_server_auth)) == 0) {
    return OsslError("intercept: extKeyUsage");
  }
  SIGIL_TRY(OsslCheck(X509_add1_ext_i2d(x, NID_ext_key_usage, eku.get(), 0, X509V3_ADD_DEFAULT),
                      "intercept: add extKeyUsage"));
  GeneralNamesPtr san(sk_GENERAL_NAME_new_null());
  if (!san) return OsslError("intercept: subjectAltName");
  SIGIL_ASSIGN_OR_RETURN(GeneralNamePtr gn, DnsGeneralName(host));
  if (sk_GENERAL_NAME_push(san.get(), gn.get()) == 0) return OsslError("intercept: SAN");
  gn.release();
  SIGIL_TRY(OsslCheck(X509_add1_ext_i2d(x, NID_subject_alt_name, san.get(), 0, X509V3_ADD_DEFAULT),
                      "intercept: add subjectAltName"));
  return x509_builder::AddKeyIdentifiers(x, issuer);
}

// Offers no protocol but HTTP/1.1 (the rewriter speaks nothing else): "http/1.1" when the
// client lists it, no ALPN at all otherwise.
int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  static constexpr unsigned char kHttp11[] = {'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned int at = 0;
  while (at < inlen) {
    const unsigned int len = in[at];
    if (at + 1 + len > inlen) break;
    if (len == sizeof kHttp11 && std::memcmp(in + at + 1, kHttp11, len) == 0) {
      *out = in + at + 1;
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    at += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

}  // namespace

bool InterceptNameMatches(std::string_view pattern, std::string_view host) {
  if (pattern.starts_with("*.")) {
    const std::string_view suffix = pattern.substr(1);  // ".domain"
    return host.size() > suffix.size() &&
           EqualsIgnoreCase(host.substr(host.size() - suffix.size()), suffix) &&
           host.substr(0, host.size() - suffix.size()).find('.') == std::string_view::npos;
  }
  return EqualsIgnoreCase(pattern, host);
}

InterceptCa::InterceptCa(InterceptCaOptions options) : options_(std::move(options)) {
  RemoveFiles();  // a previous run's files name a key that no longer exists
}

InterceptCa::~InterceptCa() {
  std::lock_guard lock(mu_);
  RemoveFiles();
}

std::string InterceptCa::ca_file() const {
  return options_.dir.empty() ? "" : options_.dir + "/" + std::string(kInterceptCaFile);
}

std::string InterceptCa::bundle_file() const {
  return options_.dir.empty() ? "" : options_.dir + "/" + std::string(kInterceptBundleFile);
}

void InterceptCa::RemoveFiles() {
  if (options_.dir.empty()) return;
  ::unlink(ca_file().c_str());
  ::unlink(bundle_file().c_str());
  files_written_ = false;
}

Result<std::unique_ptr<InterceptCa::Generation>> InterceptCa::NewGeneration(
    const std::vector<std::string>& names, TimePoint now) {
  SIGIL_ASSIGN_OR_RETURN(core::PrivateKey key, core::PrivateKey::Generate(core::KeyType::kEcP256));
  const TimePoint not_after = now + options_.ca_lifetime;
  // A distinct subject per generation, so path building never confuses two of them.
  std::array<uint8_t, 8> tag{};
  if (RAND_bytes(tag.data(), static_cast<int>(tag.size())) != 1) {
    return OsslError("intercept: random");
  }
  SIGIL_ASSIGN_OR_RETURN(X509NamePtr subject, MakeName("Sigil node-local interception CA " +
                                                       HexEncode(std::span<const uint8_t>(tag))));
  const core::PublicKey pub = key.Public();
  SIGIL_ASSIGN_OR_RETURN(X509Ptr x, x509_builder::NewCertificate(subject.get(), subject.get(), pub,
                                                                 now - kBackdate, not_after));
  SIGIL_TRY(x509_builder::AddBasicConstraints(x.get(), true));
  SIGIL_TRY(
      x509_builder::AddKeyUsage(x.get(), {x509_builder::kKuKeyCertSign, x509_builder::kKuCrlSign}));
  SIGIL_TRY(AddNameConstraints(x.get(), names));
  SIGIL_TRY(x509_builder::AddKeyIdentifiers(x.get(), x.get()));
  if (X509_sign(x.get(), key.get(), EVP_sha256()) <= 0) return OsslError("intercept: sign CA");
  return std::make_unique<Generation>(Generation{
      next_id_++, std::move(key), core::Certificate::Adopt(std::move(x)), names, not_after});
}

Result<bool> InterceptCa::Cover(std::vector<std::string> names, TimePoint now) {
  for (auto& n : names) {
    SIGIL_TRY(CheckDnsName(n, /*wildcard=*/true));
    n = ToLower(n);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  if (names.size() > options_.max_names) {
    return InvalidArgument("intercept: " + std::to_string(names.size()) +
                           " names to cover, more than " + std::to_string(options_.max_names));
  }
  std::lock_guard lock(mu_);
  names_ = names;
  bool changed = false;
  // Drop generations that expired or cover nothing still wanted.
  const size_t before = generations_.size();
  std::erase_if(generations_, [&](const std::unique_ptr<Generation>& g) {
    if (g->not_after <= now + kLeafMinLeft) return true;
    return std::none_of(g->names.begin(), g->names.end(), [&](const std::string& n) {
      return std::binary_search(names.begin(), names.end(), n);
    });
  });
  changed = generations_.size() != before;
  if (names.empty()) {
    leaves_.clear();
    RemoveFiles();
    return changed;
  }
  // A name without a generation that has half its lifetime left: a new generation for all.
  const bool need_new = std::any_of(names.begin(), names.end(), [&](const std::string& n) {
    return std::none_of(generations_.begin(), generations_.end(), [&](const auto& g) {
      return g->not_after - now >= options_.ca_lifetime / 2 &&
             std::binary_search(g->names.begin(), g->names.end(), n);
    });
  });
  if (need_new) {
    SIGIL_ASSIGN_OR_RETURN(auto g, NewGeneration(names, now));
    generations_.push_back(std::move(g));
    while (generations_.size() > std::max<size_t>(1, options_.max_generations)) {
      generations_.erase(generations_.begin());
    }
    changed = true;
  }
  // Leaves of dropped generations, or for names no longer covered, go.
  std::erase_if(leaves_, [&](const auto& entry) {
    const bool live = std::any_of(generations_.begin(), generations_.end(),
                                  [&](const auto& g) { return g->id == entry.second.generation; });
    const bool wanted = std::any_of(names.begin(), names.end(), [&](const std::string& n) {
      return InterceptNameMatches(n, entry.first);
    });
    return !live || !wanted;
  });
  if (changed || !files_written_) SIGIL_TRY(WriteFiles());
  return changed;
}

Result<void> InterceptCa::WriteFiles() {
  if (options_.dir.empty()) return Ok();
  std::string cas;
  for (const auto& g : generations_) cas += g->cert.ToPem();
  std::string roots_path = options_.system_roots;
  if (roots_path.empty()) roots_path = X509_get_default_cert_file();
  // Distributions link the default file to the real bundle (Debian: /usr/lib/ssl/cert.pem ->
  // /etc/ssl/certs/ca-certificates.crt); ReadFile does not follow links.
  std::error_code ec;
  const std::filesystem::path resolved = std::filesystem::canonical(roots_path, ec);
  auto roots = ec ? Result<std::string>(NotFound("open " + roots_path + ": " + ec.message()))
                  : ReadFile(resolved.string(), kMaxRootsFile);
  if (!roots.ok()) {
    return roots.error().WithContext("intercept: system roots for the bundle (" + roots_path + ")");
  }
  std::string bundle = std::move(*roots);
  if (!bundle.empty() && bundle.back() != '\n') bundle.push_back('\n');
  bundle += cas;
  SIGIL_TRY(MakeDirs(options_.dir, 0755));
  // The bundle first: whoever sees the CA file can rely on the bundle carrying it.
  SIGIL_TRY(WriteFileAtomic(bundle_file(), bundle, 0644));
  SIGIL_TRY(WriteFileAtomic(ca_file(), cas, 0644));
  files_written_ = true;
  return Ok();
}

const InterceptCa::Generation* InterceptCa::Pick(std::string_view host, TimePoint now) const {
  const Generation* best = nullptr;
  for (const auto& g : generations_) {
    if (g->not_after - now < kLeafMinLeft) continue;
    const bool permits = std::any_of(g->names.begin(), g->names.end(), [&](const std::string& n) {
      return InterceptNameMatches(n, host);
    });
    if (permits && (best == nullptr || g->not_after < best->not_after)) best = g.get();
  }
  return best;
}

Result<std::shared_ptr<SSL_CTX>> InterceptCa::ContextFor(std::string_view host_in, TimePoint now) {
  SIGIL_TRY(CheckDnsName(host_in, /*wildcard=*/false));
  const std::string host = ToLower(host_in);
  std::lock_guard lock(mu_);
  const bool wanted = std::any_of(names_.begin(), names_.end(), [&](const std::string& n) {
    return InterceptNameMatches(n, host);
  });
  if (!wanted) {
    return PermissionDenied("intercept: \"" + host + "\" is not a name this node intercepts");
  }
  if (auto it = leaves_.find(host); it != leaves_.end()) {
    const bool live = std::any_of(generations_.begin(), generations_.end(),
                                  [&](const auto& g) { return g->id == it->second.generation; });
    if (live && it->second.not_after - now >= kLeafMinLeft) return it->second.ctx;
    leaves_.erase(it);
  }
  const Generation* g = Pick(host, now);
  if (g == nullptr) {
    return FailedPrecondition("intercept: no live CA generation permits \"" + host + "\"");
  }
  SIGIL_ASSIGN_OR_RETURN(core::PrivateKey key, core::PrivateKey::Generate(core::KeyType::kEcP256));
  const TimePoint not_after = std::min(now + options_.leaf_lifetime, g->not_after);
  SIGIL_ASSIGN_OR_RETURN(X509NamePtr subject, MakeName(host));
  const core::PublicKey pub = key.Public();
  SIGIL_ASSIGN_OR_RETURN(
      X509Ptr x, x509_builder::NewCertificate(subject.get(), X509_get_subject_name(g->cert.get()),
                                              pub, now - kBackdate, not_after));
  SIGIL_TRY(AddLeafExtensions(x.get(), g->cert.get(), host));
  if (X509_sign(x.get(), g->key.get(), EVP_sha256()) <= 0) {
    return OsslError("intercept: sign leaf");
  }
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) return OsslError("intercept: SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_num_tickets(ctx.get(), 0);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_alpn_select_cb(ctx.get(), SelectAlpn, nullptr);
  if (SSL_CTX_use_certificate(ctx.get(), x.get()) != 1 ||
      SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    return OsslError("intercept: leaf context");
  }
  std::shared_ptr<SSL_CTX> shared(ctx.release(), SSL_CTX_free);
  if (leaves_.size() >= options_.max_cached_leaves) leaves_.clear();
  leaves_[host] = Leaf{g->id, not_after, shared};
  return shared;
}

std::vector<core::Certificate> InterceptCa::Authorities() const {
  std::lock_guard lock(mu_);
  std::vector<core::Certificate> out;
  for (const auto& g : generations_) out.push_back(g->cert);
  return out;
}

std::vector<std::string> InterceptCa::names() const {
  std::lock_guard lock(mu_);
  return names_;
}

Result<core::Certificate> InterceptCa::IssueUncheckedForTest(std::string_view host, TimePoint now) {
  std::lock_guard lock(mu_);
  if (generations_.empty()) return FailedPrecondition("intercept: no generation");
  const Generation& g = *generations_.back();
  SIGIL_ASSIGN_OR_RETURN(core::PrivateKey key, core::PrivateKey::Generate(core::KeyType::kEcP256));
  SIGIL_ASSIGN_OR_RETURN(X509NamePtr subject, MakeName(host));
  SIGIL_ASSIGN_OR_RETURN(
      X509Ptr x, x509_builder::NewCertificate(subject.get(), X509_get_subject_name(g.cert.get()),
                                              key.Public(), now - kBackdate,
                                              std::min(now + options_.leaf_lifetime, g.not_after)));
  SIGIL_TRY(AddLeafExtensions(x.get(), g.cert.get(), host));
  if (X509_sign(x.get(), g.key.get(), EVP_sha256()) <= 0) return OsslError("intercept: sign");
  return core::Certificate::Adopt(std::move(x));
}

}  // namespace sigil::dataplane::inject
