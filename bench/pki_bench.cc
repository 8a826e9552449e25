// PKI hot paths, measured against raw ECDSA P-256 signing in the same run.
//
//   build/release/bench/sigil_bench [--benchmark_min_time=1]
//
// The closing lines print each rate as a ratio to BM_RawEcdsaP256Sign (EVP_PKEY_sign over a
// 32-byte digest with a reused context: what `openssl speed ecdsap256` measures). Issuance
// target: >= 0.5 of raw signing for the signing step; the full CSR path also pays one ECDSA
// verification (proof of possession), reported separately.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>

#include "core/ca.h"
#include "core/csr.h"
#include "core/jwt_svid.h"
#include "core/spiffe_id.h"
#include "core/trust_bundle.h"

namespace sigil::core {
namespace {

struct Fixture {
  X509Ca ca = *X509Ca::CreateSelfSigned(
      {*TrustDomain::Parse("example.org"), KeyType::kEcP256, kDefaultCaTtl, kDefaultBackdate},
      Clock::System().Now());
  PrivateKey workload_key = *PrivateKey::Generate(KeyType::kEcP256);
  std::vector<uint8_t> csr_der = *CreateCsrDer(workload_key);
  SpiffeId id = *SpiffeId::Parse("spiffe://example.org/ns/prod/sa/payments");
  PrivateKey jwt_key = *PrivateKey::Generate(KeyType::kEcP256);
  std::string kid = "bench-kid";
  BundleSet bundles;

  Fixture() {
    auto b = std::make_shared<TrustBundle>(ca.trust_domain());
    b->AddX509Authority(ca.root());
    (void)b->AddJwtAuthority(kid, jwt_key.Public());
    bundles.Put(std::move(b));
  }
};

Fixture& F() {
  static Fixture f;
  return f;
}

void BM_RawEcdsaP256Sign(benchmark::State& state) {
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new(F().ca.key().get(), nullptr));
  EVP_PKEY_sign_init(ctx.get());
  unsigned char digest[32] = {1, 2, 3};
  unsigned char sig[80];
  for (auto _ : state) {
    size_t len = sizeof(sig);
    if (EVP_PKEY_sign(ctx.get(), sig, &len, digest, sizeof(digest)) != 1)
      state.SkipWithError("sign");
    benchmark::DoNotOptimize(sig);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawEcdsaP256Sign);

void BM_RawEcdsaP256Verify(benchmark::State& state) {
  EvpPkeyCtxPtr sctx(EVP_PKEY_CTX_new(F().ca.key().get(), nullptr));
  EVP_PKEY_sign_init(sctx.get());
  unsigned char digest[32] = {1, 2, 3};
  unsigned char sig[80];
  size_t len = sizeof(sig);
  EVP_PKEY_sign(sctx.get(), sig, &len, digest, sizeof(digest));
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new(F().ca.key().get(), nullptr));
  EVP_PKEY_verify_init(ctx.get());
  for (auto _ : state) {
    if (EVP_PKEY_verify(ctx.get(), sig, len, digest, sizeof(digest)) != 1)
      state.SkipWithError("verify");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawEcdsaP256Verify);

// Issuance for a key the server already trusts (build + sign + DER encode).
void BM_IssueX509Svid(benchmark::State& state) {
  PublicKey pub = F().workload_key.Public();
  for (auto _ : state) {
    auto svid = F().ca.IssueX509Svid({F().id, pub, {}, kDefaultX509SvidTtl}, Clock::System().Now());
    if (!svid.ok()) state.SkipWithError("issue");
    benchmark::DoNotOptimize(svid->leaf.ToDer());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IssueX509Svid);

// The full server path: parse CSR DER, verify its signature and key policy, issue, encode.
void BM_IssueX509SvidFromCsr(benchmark::State& state) {
  KeyPolicy policy;
  for (auto _ : state) {
    auto csr = Csr::ParseDer(F().csr_der);
    auto pub = csr->Verify(policy);
    if (!pub.ok()) state.SkipWithError("csr");
    auto svid =
        F().ca.IssueX509Svid({F().id, *pub, {}, kDefaultX509SvidTtl}, Clock::System().Now());
    if (!svid.ok()) state.SkipWithError("issue");
    benchmark::DoNotOptimize(svid->leaf.ToDer());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IssueX509SvidFromCsr);

void BM_JwtSvidMint(benchmark::State& state) {
  std::vector<std::string> aud{"spiffe://example.org/db"};
  for (auto _ : state) {
    TimePoint now = Clock::System().Now();
    auto token = MintJwtSvid(F().jwt_key, F().kid, {F().id, aud, now, now + kDefaultJwtSvidTtl});
    if (!token.ok()) state.SkipWithError("mint");
    benchmark::DoNotOptimize(token);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_JwtSvidMint);

void BM_JwtSvidValidate(benchmark::State& state) {
  std::vector<std::string> aud{"spiffe://example.org/db"};
  TimePoint now = Clock::System().Now();
  std::string token = *MintJwtSvid(F().jwt_key, F().kid, {F().id, aud, now, now + Seconds(3600)});
  for (auto _ : state) {
    auto svid = ValidateJwtSvid(token, F().bundles, aud, Clock::System().Now());
    if (!svid.ok()) state.SkipWithError("validate");
    benchmark::DoNotOptimize(svid);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_JwtSvidValidate);

void BM_SpiffeIdParse(benchmark::State& state) {
  for (auto _ : state) {
    auto id = SpiffeId::Parse("spiffe://example.org/ns/production/sa/payments-api/v2");
    benchmark::DoNotOptimize(id);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SpiffeIdParse);

// Collects items/s per benchmark so main() can print ratios to the baseline.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      auto it = r.counters.find("items_per_second");
      if (it != r.counters.end() && r.run_type == Run::RT_Iteration) {
        rates_[r.benchmark_name()] = it->second.value;
      }
    }
  }
  const std::map<std::string, double>& rates() const { return rates_; }

 private:
  std::map<std::string, double> rates_;
};

}  // namespace
}  // namespace sigil::core

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  sigil::core::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const auto& rates = reporter.rates();
  auto base = rates.find("BM_RawEcdsaP256Sign");
  if (base == rates.end() || base->second <= 0) return 0;
  std::printf("\nratios to raw ECDSA P-256 signing (%.0f/s), same run:\n", base->second);
  for (const auto& [name, rate] : rates) {
    std::printf("  %-28s %12.0f/s  %6.3f\n", name.c_str(), rate, rate / base->second);
  }
  return 0;
}
