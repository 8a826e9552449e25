// Several ControlPlanes on one store, as several `sigil server` replicas on one database: the
// authority set is created once, rotation steps and issuance bounds from different replicas
// serialise through the CaState compare-and-swap, and a replica picks up another's change
// (authority_store.cc). Real stores: a SQLite file opened twice and a throwaway PostgreSQL
// cluster (store/pg_test_cluster.h).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/certificate.h"
#include "server/change_feed.h"
#include "server/control_plane.h"
#include "store/store_test_util.h"

namespace sigil::server {
namespace {

using store::testing::AnyStoreTest;

constexpr Seconds kHour{3600};

class ReplicasTest : public AnyStoreTest {
 protected:
  Result<std::unique_ptr<ControlPlane>> TryReplica() {
    store::testing::TestStoreOptions o;
    o.clock = &clock_;
    SIGIL_ASSIGN_OR_RETURN(auto store, TryOpenStore(o));
    SIGIL_ASSIGN_OR_RETURN(auto kek, core::Kek::FromBytes(SecretBytes(32)));  // same on each
    ControlPlaneOptions options{{*core::TrustDomain::Parse("example.org")}, {}, {}};
    options.server_svid_ttl = kHour;
    return ControlPlane::Open(options, std::move(store), std::move(kek), clock_);
  }
  std::unique_ptr<ControlPlane> Replica() {
    auto cp = TryReplica();
    EXPECT_TRUE(cp.ok()) << cp.error().ToString();
    return cp.ok() ? std::move(cp).value() : nullptr;
  }

  static size_t AuditCount(ControlPlane& cp, const std::string& type) {
    store::AuditFilter f;
    f.type = type;
    auto records = cp.store().QueryAudit(f);
    EXPECT_TRUE(records.ok()) << records.error().ToString();
    return records.ok() ? records->size() : 0;
  }

  static const core::GenerationInfo* Role(const CaRotationStatus& s, core::GenerationRole role) {
    for (const auto& g : s.generations) {
      if (g.role == role) return &g;
    }
    return nullptr;
  }

  static std::vector<core::Certificate> IssueLeaf(ControlPlane& cp) {
    auto cred = cp.IssueServerCredential({"localhost"});
    EXPECT_TRUE(cred.ok()) << cred.error().ToString();
    if (!cred.ok()) return {};
    auto chain = core::ParseCertificatesPem(cred->chain_pem);
    EXPECT_TRUE(chain.ok());
    return chain.ok() ? *chain : std::vector<core::Certificate>{};
  }

  FakeClock clock_{FromUnixSeconds(1796398545)};
};

// Replicas share a store in production only on PostgreSQL (SQLite serves one server process per
// file); on SQLite the four are handles on one fresh file opened at once, which also exercises
// the concurrent first open (the WAL switch in store/sqlite_db.cc).
class ConcurrentReplicasTest : public ReplicasTest {};

TEST_P(ConcurrentReplicasTest, ReplicasStartingTogetherOnAnEmptyStoreShareOneCa) {
  constexpr int kReplicas = 4;
  std::vector<std::unique_ptr<ControlPlane>> replicas(kReplicas);
  std::vector<std::string> errors(kReplicas);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kReplicas) std::this_thread::yield();
      auto cp = TryReplica();
      if (cp.ok()) {
        replicas[i] = std::move(cp).value();
      } else {
        errors[i] = cp.error().ToString();
      }
    });
  }
  for (auto& t : threads) t.join();
  int created = 0;
  for (int i = 0; i < kReplicas; ++i) {
    ASSERT_NE(replicas[i], nullptr) << "replica " << i << ": " << errors[i];
    EXPECT_EQ(replicas[i]->Root().Fingerprint(), replicas[0]->Root().Fingerprint()) << i;
    EXPECT_EQ(replicas[i]->authorities_version(), replicas[0]->authorities_version()) << i;
    created += replicas[i]->created_authorities() ? 1 : 0;
  }
  EXPECT_EQ(created, 1);
  EXPECT_EQ(AuditCount(*replicas[0], "ca.init"), 1u);
}

TEST_P(ReplicasTest, ARotationOnOneReplicaReachesTheOthers) {
  auto a = Replica();
  auto b = Replica();
  ASSERT_TRUE(a && b);
  const std::string old_ca = b->SigningCa().Fingerprint();
  auto prepared = a->RotateCa(Seconds(600), false, "test");
  ASSERT_TRUE(prepared.ok()) << prepared.error().ToString();

  auto refreshed = b->RefreshAuthorities();
  ASSERT_TRUE(refreshed.ok()) << refreshed.error().ToString();
  EXPECT_TRUE(*refreshed);
  EXPECT_FALSE(*b->RefreshAuthorities());  // nothing new the second time
  EXPECT_EQ(b->authorities_version(), a->authorities_version());
  EXPECT_EQ(b->Bundle().sequence(), a->Bundle().sequence());
  EXPECT_EQ(b->Bundle().ToJwks(), a->Bundle().ToJwks());
  const CaRotationStatus status_b = b->CaStatus();
  const core::GenerationInfo* on_b = Role(status_b, core::GenerationRole::kPrepared);
  ASSERT_NE(on_b, nullptr);
  EXPECT_EQ(on_b->ca_sha256, prepared->ca_sha256);

  // Activation: both replicas' maintenance ticks find it due; one writes it, the other (here
  // deliberately not refreshed in between) loses the compare-and-swap, re-reads, and finds
  // nothing left to do.
  clock_.Advance(Seconds(601));
  auto on_a = a->RotateIfDue();
  ASSERT_TRUE(on_a.ok()) << on_a.error().ToString();
  EXPECT_TRUE(*on_a);
  auto stale_b = b->RotateIfDue();
  ASSERT_TRUE(stale_b.ok()) << stale_b.error().ToString();
  EXPECT_FALSE(*stale_b);
  EXPECT_EQ(b->SigningCa().Fingerprint(), prepared->ca_sha256);
  EXPECT_NE(b->SigningCa().Fingerprint(), old_ca);
  EXPECT_EQ(AuditCount(*a, "ca.rotate.activate"), 1u);
  EXPECT_EQ(AuditCount(*a, "ca.rotate.prepare"), 1u);
}

TEST_P(ReplicasTest, ConcurrentOperatorRotationsPrepareOneGeneration) {
  auto a = Replica();
  auto b = Replica();
  ASSERT_TRUE(a && b);
  Result<core::GenerationInfo> ra = Internal("not run"), rb = Internal("not run");
  std::atomic<int> ready{0};
  std::thread ta([&] {
    ready.fetch_add(1);
    while (ready.load() < 2) std::this_thread::yield();
    ra = a->RotateCa(Seconds(600), false, "alice");
  });
  std::thread tb([&] {
    ready.fetch_add(1);
    while (ready.load() < 2) std::this_thread::yield();
    rb = b->RotateCa(Seconds(600), false, "bob");
  });
  ta.join();
  tb.join();
  // Exactly one wins; the other sees the pending rotation once it re-read the store (or, had it
  // read after the winner's commit, at once).
  ASSERT_NE(ra.ok(), rb.ok()) << (ra.ok() ? "" : ra.error().ToString()) << " / "
                              << (rb.ok() ? "" : rb.error().ToString());
  const Error& loser = ra.ok() ? rb.error() : ra.error();
  EXPECT_EQ(loser.code(), ErrorCode::kFailedPrecondition) << loser.ToString();
  EXPECT_NE(loser.message().find("already pending"), std::string::npos) << loser.message();
  EXPECT_EQ(AuditCount(*a, "ca.rotate.prepare"), 1u);
  ASSERT_TRUE(a->RefreshAuthorities().ok());
  ASSERT_TRUE(b->RefreshAuthorities().ok());
  EXPECT_EQ(a->CaStatus().generations.size(), 2u);
  EXPECT_EQ(b->Bundle().ToJwks(), a->Bundle().ToJwks());
}

TEST_P(ReplicasTest, AnIssuanceOnAStaleReplicaIsRecordedOnTheGenerationThatSignedIt) {
  auto a = Replica();
  auto b = Replica();
  ASSERT_TRUE(a && b);
  const std::string old_ca = b->SigningCa().Fingerprint();
  ASSERT_EQ(IssueLeaf(*b).size(), 2u);  // the old generation has signed (as a server's own cert)
  // A rotates and activates at once; B has not heard of it yet.
  ASSERT_TRUE(a->RotateCa(Seconds(0), false, "test").ok());
  ASSERT_TRUE(*a->RotateIfDue());
  ASSERT_NE(a->SigningCa().Fingerprint(), old_ca);

  // Ten minutes on, B signs with the old generation past the bound it stored: recording the
  // new bound conflicts with A's write, B re-reads and raises the bound of the generation
  // that signed, which is retiring now.
  clock_.Advance(Seconds(600));
  ASSERT_EQ(b->SigningCa().Fingerprint(), old_ca) << "B is meant to be stale here";
  std::vector<core::Certificate> leaf = IssueLeaf(*b);
  ASSERT_EQ(leaf.size(), 2u);
  EXPECT_EQ(leaf[1].Fingerprint(), old_ca);

  auto c = Replica();  // a fresh replica reads only what is stored
  ASSERT_TRUE(c);
  const CaRotationStatus stored = c->CaStatus();
  const core::GenerationInfo* retiring = Role(stored, core::GenerationRole::kRetiring);
  ASSERT_NE(retiring, nullptr);
  EXPECT_EQ(retiring->ca_sha256, old_ca);
  ASSERT_TRUE(retiring->x509_issued_until.has_value());
  EXPECT_GE(*retiring->x509_issued_until, leaf[0].NotAfter());
  ASSERT_TRUE(retiring->leaves_bundle_at.has_value());
  EXPECT_GE(*retiring->leaves_bundle_at, leaf[0].NotAfter());
  // And B now signs with the new generation.
  EXPECT_EQ(b->SigningCa().Fingerprint(), a->SigningCa().Fingerprint());
}

TEST_P(ReplicasTest, AStaleReplicaHandsOutNothingFromAGenerationThatLeftTheBundle) {
  auto a = Replica();
  auto b = Replica();
  ASSERT_TRUE(a && b);
  const std::string old_ca = b->SigningCa().Fingerprint();
  // The first generation signed nothing, so activating the next one retires it at once.
  ASSERT_TRUE(a->RotateCa(Seconds(0), false, "test").ok());
  ASSERT_TRUE(*a->RotateIfDue());
  ASSERT_EQ(a->CaStatus().generations.size(), 1u);

  // B still holds the old generation: its certificate would chain to a root no relying party
  // has any more, so it is refused (retryable), and B now holds the stored set.
  auto refused = b->IssueServerCredential({"localhost"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable) << refused.error().ToString();
  EXPECT_NE(refused.error().message().find("left the bundle"), std::string::npos);
  std::vector<core::Certificate> leaf = IssueLeaf(*b);
  ASSERT_EQ(leaf.size(), 2u);
  EXPECT_EQ(leaf[1].Fingerprint(), a->SigningCa().Fingerprint());
  EXPECT_NE(leaf[1].Fingerprint(), old_ca);
}

TEST_P(ReplicasTest, TheChangeFeedObserverRefreshesAReplicaWithoutATick) {
  auto a = Replica();
  auto b = Replica();
  ASSERT_TRUE(a && b);
  ChangeFeed feed(
      b->store(), [&] { return b->Bundle().sequence(); }, kDefaultFeedWindow,
      [&](const std::vector<store::Change>& changes) {
        for (const auto& c : changes) {
          if (c.kind == kCaStateKind) (void)b->RefreshAuthorities();
        }
      });
  ASSERT_TRUE(feed.Start().ok());
  const ChangeFeed::Position before = feed.Current();
  ASSERT_TRUE(a->RotateCa(Seconds(600), false, "test").ok());
  const uint64_t want = a->Bundle().sequence();
  ChangeFeed::Position pos = before;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pos.bundle_sequence != want && std::chrono::steady_clock::now() < deadline) {
    pos = feed.Wait(pos, std::chrono::milliseconds(500));
  }
  EXPECT_EQ(pos.bundle_sequence, want);
  EXPECT_EQ(b->Bundle().sequence(), want);
  feed.Stop();
}

SIGIL_STORE_BACKENDS(ReplicasTest);
SIGIL_STORE_BACKENDS(ConcurrentReplicasTest);

}  // namespace
}  // namespace sigil::server
