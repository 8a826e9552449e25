// ParseDocuments never crashes on garbage, and handles 10,000-document batches quickly.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "resources/parse.h"

namespace sigil::resources {
namespace {

const char* const kSeeds[] = {
    "apiVersion: sigil.dev/v1alpha1\nkind: WorkloadIdentity\nmetadata: {name: w}\nspec:\n"
    "  spiffeId: spiffe://e.org/w/{{node}}\n  selectors: [unix:uid:1, 'cgroup:/a']\n  ttl: 1h\n",
    "apiVersion: sigil.dev/v1alpha1\nkind: Service\nmetadata:\n  name: api\nspec:\n  mode: simple\n"
    "  addresses:\n    - '[2001:db8::/32]:443'\n    - 10.0.0.0/8:80\n  tls: {sni: a.b, port: "
    "443}\n",
    "---\napiVersion: sigil.dev/v1alpha1\nkind: CredentialBinding\nmetadata: {name: b}\nspec:\n"
    "  source: k\n  service: s\n  identities: ['spiffe://e.org/*']\n"
    "  delivery: {header: {name: Authorization, template: 'Bearer {{secret}}'}}\n---\n"
    "kind: CredentialSource\nspec: &s {type: aws, secretAccessKey: x}\nother: *s\n",
    R"([{"apiVersion":"sigil.dev/v1alpha1","kind":"AccessPolicy","metadata":{"name":"p"},)"
    R"("spec":{"sources":["spiffe://e.org/a/*"],"destinations":["api"],"action":"deny"}}])",
};

// Characters that steer a YAML parser into its less common paths.
constexpr std::string_view kAlphabet =
    "{}[]:,-?|>&*!%@#'\"\\\n\t ---...\xc3\xa9\x01\xff"
    "0a";

std::string Mutate(std::string s, std::mt19937& rng) {
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  int edits = 1 + static_cast<int>(pick(8));
  for (int e = 0; e < edits; ++e) {
    size_t pos = s.empty() ? 0 : pick(s.size() + 1);
    switch (pick(5)) {
      case 0:  // insert a special character
        s.insert(pos, 1, kAlphabet[pick(kAlphabet.size())]);
        break;
      case 1:  // delete a run
        if (!s.empty() && pos < s.size()) s.erase(pos, 1 + pick(8));
        break;
      case 2:  // overwrite a byte with anything
        if (!s.empty() && pos < s.size()) s[pos] = static_cast<char>(pick(256));
        break;
      case 3:  // duplicate a slice elsewhere
        if (!s.empty()) {
          size_t from = pick(s.size());
          s.insert(pos, s.substr(from, 1 + pick(40)));
        }
        break;
      default:  // truncate
        s.resize(pos);
        break;
    }
  }
  return s;
}

TEST(Robustness, TwoThousandMutatedAndRandomInputs) {
  std::mt19937 rng(20261204);
  size_t accepted = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string input;
    if (i % 5 == 4) {  // pure random bytes
      input.resize(std::uniform_int_distribution<size_t>(0, 300)(rng));
      for (char& c : input) c = static_cast<char>(rng());
    } else {
      input = Mutate(kSeeds[static_cast<size_t>(i) % std::size(kSeeds)], rng);
    }
    auto r = ParseDocuments(input);
    if (r.ok()) {
      ++accepted;
      for (const auto& res : *r) {
        EXPECT_FALSE(ToCanonicalJson(res).empty());
        EXPECT_FALSE(ToYaml(res).empty());
      }
    } else {
      EXPECT_FALSE(r.error().message().empty());
    }
  }
  std::printf("robustness: %zu of 2000 mutated inputs still valid\n", accepted);
}

TEST(Robustness, TenThousandWorkloadIdentities) {
  std::string text;
  for (int i = 0; i < 10'000; ++i) {
    std::string n = std::to_string(i);
    text += "---\napiVersion: sigil.dev/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: web-" +
            n + "\nspec:\n  spiffeId: spiffe://example.org/web/" + n +
            "\n  selectors:\n    - unix:uid:" + n + "\n    - unix:path:/usr/bin/web\n  ttl: 30m\n";
  }
  auto start = std::chrono::steady_clock::now();
  auto r = ParseDocuments(text);
  auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->size(), 10'000u);
  std::printf("10,000 WorkloadIdentity documents (%zu bytes): %.1f ms\n", text.size(), ms.count());

  // The JSON path (nlohmann) on a list of 2,000 (slow in Debug/ASan builds, so kept small).
  nlohmann::json list = nlohmann::json::array();
  for (size_t i = 0; i < 2'000; ++i) {
    list.push_back(nlohmann::json::parse(ToCanonicalJson((*r)[i])));
  }
  std::string json_text = list.dump();
  start = std::chrono::steady_clock::now();
  auto j = ParseDocuments(json_text);
  ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
  ASSERT_TRUE(j.ok()) << j.error().message();
  EXPECT_EQ(j->size(), 2'000u);
  std::printf("2,000 as a JSON list (%zu bytes): %.1f ms\n", json_text.size(), ms.count());
}

}  // namespace
}  // namespace sigil::resources
