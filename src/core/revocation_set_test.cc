#include "core/revocation_set.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/testing/pki_fixture.h"

namespace sigil::core {
namespace {

using testing::TestNow;

std::pair<std::string, std::string> Item(const std::string& kind, const std::string& target,
                                         std::vector<std::string> serials = {},
                                         std::vector<std::string> identities = {}) {
  nlohmann::json spec = {{"kind", kind},
                         {"target", target},
                         {"reason", "test " + kind},
                         {"revokedAt", 1796398545},
                         {"revokedBy", "spiffe://example.org/sigil/admin"},
                         {"serials", serials},
                         {"identities", identities},
                         {"expiresAt", 0}};
  return {kind + "/" + target, spec.dump()};
}

Certificate Leaf(const X509Ca& ca, const std::string& uri) {
  auto key = PrivateKey::Generate(KeyType::kEcP256);
  return testing::CraftLeaf(
      ca, key->Public(),
      {{NID_basic_constraints, "critical,CA:FALSE"}, {NID_subject_alt_name, "URI:" + uri}},
      TestNow() - Seconds(10), TestNow() + Seconds(3600));
}

TEST(RevocationSet, EmptyMatchesNothing) {
  RevocationSet set;
  EXPECT_TRUE(set.empty());
  X509Ca ca = testing::MakeCa();
  EXPECT_EQ(set.FindCertificate(Leaf(ca, "spiffe://example.org/a")), nullptr);
  EXPECT_EQ(set.FindBinding("b"), nullptr);
}

TEST(RevocationSet, MatchesBySerialIdentityBindingAndNode) {
  X509Ca ca = testing::MakeCa();
  Certificate by_serial = Leaf(ca, "spiffe://example.org/web");
  Certificate by_id = Leaf(ca, "spiffe://example.org/db");
  Certificate node_cert = Leaf(ca, "spiffe://example.org/worker");
  Certificate clean = Leaf(ca, "spiffe://example.org/web");
  std::vector<std::string> errors;
  RevocationSet set = RevocationSet::FromResources(
      {Item("svid", by_serial.SerialHex()), Item("identity", "spiffe://example.org/db"),
       Item("binding", "openai"),
       Item("node", "n1", {node_cert.SerialHex()}, {"spiffe://example.org/sigil/node/n1"})},
      &errors);
  EXPECT_TRUE(errors.empty());
  ASSERT_EQ(set.size(), 4u);

  const auto* e = set.FindCertificate(by_serial);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->kind, "svid");
  EXPECT_EQ(e->reason, "test svid");
  EXPECT_EQ(e->revoked_at, FromUnixSeconds(1796398545));
  ASSERT_NE(set.FindCertificate(by_id), nullptr);
  EXPECT_EQ(set.FindCertificate(by_id)->kind, "identity");
  ASSERT_NE(set.FindCertificate(node_cert), nullptr);
  EXPECT_EQ(set.FindCertificate(node_cert)->target, "n1");
  EXPECT_NE(set.FindIdentity("spiffe://example.org/sigil/node/n1"), nullptr);
  EXPECT_NE(set.FindNode("n1"), nullptr);
  EXPECT_EQ(set.FindNode("n2"), nullptr);
  // Same identity as a revoked serial, different certificate: not revoked.
  EXPECT_EQ(set.FindCertificate(clean), nullptr);
  EXPECT_NE(set.FindBinding("openai"), nullptr);
  EXPECT_EQ(set.FindBinding("openai2"), nullptr);
  EXPECT_EQ(set.FindCertificate("", ""), nullptr);
  EXPECT_NE(set.FindCertificate("", "spiffe://example.org/db"), nullptr);
  EXPECT_NE(RevocationSet::Describe(*e).find("svid/" + by_serial.SerialHex() + " revoked at 2026-"),
            std::string::npos);
}

TEST(RevocationSet, SkipsMalformedEntriesAndKeepsTheRest) {
  std::vector<std::string> errors;
  RevocationSet set =
      RevocationSet::FromResources({{"x/1", "not json"},
                                    {"x/2", R"({"kind":"node"})"},
                                    {"x/3", R"({"kind":"planet","target":"earth"})"},
                                    {"x/4", R"([1,2])"},
                                    Item("binding", "b")},
                                   &errors);
  EXPECT_EQ(set.size(), 1u);
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_NE(errors[2].find("unknown kind \"planet\""), std::string::npos);
  EXPECT_NE(set.FindBinding("b"), nullptr);
}

}  // namespace
}  // namespace sigil::core
