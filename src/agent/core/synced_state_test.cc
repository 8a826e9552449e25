#include "agent/core/synced_state.h"

#include <gtest/gtest.h>

namespace sigil::agent {
namespace {

namespace pb = sigil::agent::v1;

void Upsert(pb::SyncResponse& m, const std::string& kind, const std::string& name,
            const std::string& spec, uint64_t version) {
  pb::Resource* r = m.add_upserts();
  r->set_kind(kind);
  r->set_name(name);
  r->set_resource_version(version);
  r->set_spec_json(spec);
}

std::string Revocation(const std::string& kind, const std::string& target) {
  return R"({"expiresAt":0,"identities":[],"kind":")" + kind + R"(","reason":"r","revokedAt":1,)" +
         R"("revokedBy":"spiffe://example.org/sigil/admin","serials":[],"target":")" + target +
         R"("})";
}

TEST(SyncedStateRevocations, BuiltFromSnapshotAndDeltasOnlyWhenTheyChange) {
  SyncedState state(*core::TrustDomain::Parse("example.org"));
  ASSERT_TRUE(state.revocations());
  EXPECT_TRUE(state.revocations()->empty());

  pb::SyncResponse snapshot;
  snapshot.set_snapshot(true);
  snapshot.set_revision(5);
  Upsert(snapshot, "Revocation", "binding/openai", Revocation("binding", "openai"), 3);
  Upsert(snapshot, "Revocation", "identity/spiffe://example.org/web",
         Revocation("identity", "spiffe://example.org/web"), 4);
  ASSERT_TRUE(state.Apply(snapshot).ok());
  auto first = state.revocations();
  EXPECT_EQ(first->size(), 2u);
  EXPECT_NE(first->FindBinding("openai"), nullptr);
  EXPECT_NE(first->FindIdentity("spiffe://example.org/web"), nullptr);

  // A delta that touches no Revocation keeps the same set (the data plane compares pointers).
  pb::SyncResponse unrelated;
  unrelated.set_revision(6);
  Upsert(unrelated, "Service", "web", R"({"mode":"mutual"})", 6);
  ASSERT_TRUE(state.Apply(unrelated).ok());
  EXPECT_EQ(state.revocations(), first);

  // A lift arrives as a delete.
  pb::SyncResponse lift;
  lift.set_revision(7);
  pb::ResourceRef* ref = lift.add_deletes();
  ref->set_kind("Revocation");
  ref->set_name("binding/openai");
  ASSERT_TRUE(state.Apply(lift).ok());
  auto second = state.revocations();
  EXPECT_NE(second, first);
  EXPECT_EQ(second->size(), 1u);
  EXPECT_EQ(second->FindBinding("openai"), nullptr);
  EXPECT_NE(first->FindBinding("openai"), nullptr);  // holders of the old set are unaffected

  // A snapshot without revocations clears them.
  pb::SyncResponse empty;
  empty.set_snapshot(true);
  empty.set_revision(8);
  ASSERT_TRUE(state.Apply(empty).ok());
  EXPECT_TRUE(state.revocations()->empty());
}

}  // namespace
}  // namespace sigil::agent
