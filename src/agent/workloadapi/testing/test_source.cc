#include "agent/workloadapi/testing/test_source.h"

#include <cstdlib>
#include <utility>

#include "core/ca.h"
#include "core/keys.h"

namespace sigil::agent::workloadapi::testing {
namespace {

TimePoint Now() { return Clock::System().Now(); }

template <class T>
T Must(Result<T> r) {
  if (!r.ok()) std::abort();
  return std::move(r).value();
}

}  // namespace

std::unique_ptr<TestSource> TestSource::Create(const std::string& trust_domain) {
  core::CaOptions options{Must(core::TrustDomain::Parse(trust_domain))};
  auto authorities = Must(core::AuthoritySet::Create(options, core::RotationPolicy{}, Now()));
  std::unique_ptr<TestSource> source(new TestSource(std::move(authorities)));
  source->MapUid(0, "/root-workload", "root-workload");
  source->MapUid(65534, "/nobody", "nobody");
  return source;
}

TestSource::TestSource(core::AuthoritySet authorities) : authorities_(std::move(authorities)) {}

void TestSource::BumpLocked() {
  ++generation_;
  cv_.notify_all();
}

void TestSource::MapUid(uint32_t uid, const std::string& path, const std::string& name) {
  std::lock_guard lock(mu_);
  auto id = Must(core::SpiffeId::FromPath(authorities_.active().ca.trust_domain(), path));
  by_uid_.insert_or_assign(uid, Mapping{std::move(id), name});
  BumpLocked();
}

void TestSource::UnmapUid(uint32_t uid) {
  std::lock_guard lock(mu_);
  by_uid_.erase(uid);
  BumpLocked();
}

void TestSource::ForceRotation() {
  std::lock_guard lock(mu_);
  cache_.clear();
  BumpLocked();
}

void TestSource::RotateBundle() {
  std::lock_guard lock(mu_);
  const core::TrustDomain td = authorities_.active().ca.trust_domain();
  auto ca = Must(core::X509Ca::CreateSelfSigned(core::CaOptions{td}, Now()));
  extra_roots_.push_back(ca.root());
  auto jwt_key = Must(core::PrivateKey::Generate(core::KeyType::kEcP256));
  extra_jwt_.push_back(core::JwtAuthority{Must(core::RandomKeyId()), jwt_key.Public()});
  BumpLocked();
}

void TestSource::AddFederatedDomain(const std::string& trust_domain) {
  std::lock_guard lock(mu_);
  const core::TrustDomain td = Must(core::TrustDomain::Parse(trust_domain));
  auto ca = Must(core::X509Ca::CreateSelfSigned(core::CaOptions{td}, Now()));
  auto bundle = std::make_shared<core::TrustBundle>(td);
  bundle->AddX509Authority(ca.root());
  auto jwt_key = Must(core::PrivateKey::Generate(core::KeyType::kEcP256));
  if (!bundle->AddJwtAuthority(Must(core::RandomKeyId()), jwt_key.Public()).ok()) std::abort();
  federated_.push_back(std::move(bundle));
  BumpLocked();
}

void TestSource::Touch() {
  std::lock_guard lock(mu_);
  BumpLocked();
}

void TestSource::Shutdown() {
  std::lock_guard lock(mu_);
  shutting_down_ = true;
  cv_.notify_all();
}

core::TrustDomain TestSource::trust_domain() const {
  std::lock_guard lock(mu_);
  return authorities_.active().ca.trust_domain();
}

int TestSource::issued_count() const {
  std::lock_guard lock(mu_);
  return issued_;
}

int TestSource::x509_calls() const {
  std::lock_guard lock(mu_);
  return x509_calls_;
}

std::optional<TestSource::Mapping> TestSource::MappingFor(uint32_t uid) const {
  auto it = by_uid_.find(uid);
  if (it == by_uid_.end()) return std::nullopt;
  return it->second;
}

Result<const TestSource::Cached*> TestSource::SvidLocked(const core::SpiffeId& id) {
  auto it = cache_.find(id.str());
  if (it != cache_.end()) return &it->second;
  SIGIL_ASSIGN_OR_RETURN(core::PrivateKey key, core::PrivateKey::Generate(core::KeyType::kEcP256));
  SIGIL_ASSIGN_OR_RETURN(core::IssuedX509Svid issued,
                         authorities_.IssueX509Svid(
                             core::X509SvidRequest{id, key.Public(), {}, Seconds(3600)}, Now()));
  SIGIL_ASSIGN_OR_RETURN(SecretBytes pkcs8, key.ToPkcs8Der());
  ++issued_;
  Cached cached{issued.chain, std::move(pkcs8), issued.leaf.NotAfter()};
  return &cache_.insert_or_assign(id.str(), std::move(cached)).first->second;
}

Result<std::vector<X509SvidGrant>> TestSource::X509Svids(const attest::AttestedProcess& process) {
  std::lock_guard lock(mu_);
  ++x509_calls_;
  auto mapping = MappingFor(process.uid);
  if (!mapping) return PermissionDenied("no identity issued");
  SIGIL_ASSIGN_OR_RETURN(const Cached* cached, SvidLocked(mapping->id));
  std::vector<X509SvidGrant> grants;
  grants.push_back(X509SvidGrant{mapping->id.str(), mapping->name, cached->chain,
                                 SecretBytes::Copy(cached->key.span()), cached->expires_at});
  return grants;
}

Result<std::vector<JwtSvidGrant>> TestSource::JwtSvids(const attest::AttestedProcess& process,
                                                       const std::vector<std::string>& audience,
                                                       const std::string& spiffe_id) {
  std::lock_guard lock(mu_);
  auto mapping = MappingFor(process.uid);
  if (!mapping) return PermissionDenied("no identity issued");
  if (!spiffe_id.empty() && spiffe_id != mapping->id.str()) {
    return PermissionDenied("no identity issued for " + spiffe_id);
  }
  const TimePoint now = Now();
  SIGIL_ASSIGN_OR_RETURN(std::string token,
                         authorities_.MintJwtSvid(mapping->id, audience, now, Seconds(300)));
  std::vector<JwtSvidGrant> grants;
  grants.push_back(
      JwtSvidGrant{mapping->id.str(), mapping->name, std::move(token), now + Seconds(300)});
  return grants;
}

Result<std::vector<IdentityExplanation>> TestSource::Explain(
    const attest::AttestedProcess& process) {
  std::lock_guard lock(mu_);
  std::vector<IdentityExplanation> out;
  auto mapping = MappingFor(process.uid);
  if (mapping) {
    out.push_back(IdentityExplanation{
        mapping->id.str(), mapping->name, {"unix:uid:" + std::to_string(process.uid)}});
  }
  return out;
}

core::BundleSet TestSource::Bundles() {
  std::lock_guard lock(mu_);
  core::TrustBundle own = authorities_.Bundle();
  for (const core::Certificate& root : extra_roots_) own.AddX509Authority(root);
  for (const core::JwtAuthority& jwt : extra_jwt_) {
    if (!own.AddJwtAuthority(jwt.kid, jwt.key).ok()) std::abort();
  }
  core::BundleSet set;
  set.Put(std::make_shared<const core::TrustBundle>(std::move(own)));
  for (const auto& bundle : federated_) set.Put(bundle);
  return set;
}

uint64_t TestSource::Generation() {
  std::lock_guard lock(mu_);
  return generation_;
}

uint64_t TestSource::WaitForChange(uint64_t seen, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return generation_ != seen || shutting_down_; });
  return generation_;
}

bool TestSource::ShuttingDown() {
  std::lock_guard lock(mu_);
  return shutting_down_;
}

}  // namespace sigil::agent::workloadapi::testing
