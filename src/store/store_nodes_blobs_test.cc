// Column-level node updates (TouchNode, RecordNodeSvid) and blobs committed with resources,
// against every Store.
#include <gtest/gtest.h>

#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::AnyStoreTest;
using testing::Upsert;

NodeRecord Node(const std::string& name) {
  NodeRecord n;
  n.name = name;
  n.spiffe_id = "spiffe://example.org/sigil/node/" + name;
  n.svid_serial = "01";
  n.svid_expiry = Clock::System().Now() + std::chrono::hours(24);
  n.joined_at = Clock::System().Now();
  n.last_seen = n.joined_at;
  return n;
}

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

class NodeBlobStoreTest : public AnyStoreTest {};
SIGIL_STORE_BACKENDS(NodeBlobStoreTest);

TEST_P(NodeBlobStoreTest, TouchNodeNeverUndoesARevocation) {
  auto store = OpenStore();
  ASSERT_TRUE(store->UpsertNode(Node("a"), {}).ok());
  // A caller read the node (not revoked) ...
  auto stale = store->GetNode("a");
  ASSERT_TRUE(stale.ok());
  // ... a revocation lands ...
  NodeRecord revoked = *stale;
  revoked.revoked = true;
  revoked.revocation_reason = "stolen";
  ASSERT_TRUE(store->UpsertNode(revoked, {}).ok());
  // ... and the first caller's last_seen update must not bring it back.
  TimePoint later = stale->last_seen + std::chrono::minutes(5);
  ASSERT_TRUE(store->TouchNode("a", later).ok());
  auto now = store->GetNode("a");
  ASSERT_TRUE(now.ok());
  EXPECT_TRUE(now->revoked);
  EXPECT_EQ(now->revocation_reason, "stolen");
  EXPECT_EQ(ToUnixSeconds(now->last_seen), ToUnixSeconds(later));
  // last_seen only moves forward.
  ASSERT_TRUE(store->TouchNode("a", stale->last_seen).ok());
  EXPECT_EQ(ToUnixSeconds(store->GetNode("a")->last_seen), ToUnixSeconds(later));
  EXPECT_EQ(store->TouchNode("missing", later).error().code(), ErrorCode::kNotFound);
}

TEST_P(NodeBlobStoreTest, RecordNodeSvidRefusesARevokedNodeAndAuditsOnlyOnSuccess) {
  auto store = OpenStore();
  ASSERT_TRUE(store->UpsertNode(Node("a"), {}).ok());
  AuditEvent e = testing::Event("node.renew");
  TimePoint expiry = Clock::System().Now() + std::chrono::hours(48);
  ASSERT_TRUE(
      store->RecordNodeSvid("a", "abcd", expiry, Clock::System().Now(), std::span(&e, 1)).ok());
  auto got = store->GetNode("a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->svid_serial, "abcd");
  EXPECT_EQ(ToUnixSeconds(got->svid_expiry), ToUnixSeconds(expiry));

  NodeRecord revoked = *got;
  revoked.revoked = true;
  ASSERT_TRUE(store->UpsertNode(revoked, {}).ok());
  auto head = store->GetAuditHead();
  auto refused =
      store->RecordNodeSvid("a", "ffff", expiry, Clock::System().Now(), std::span(&e, 1));
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(store->GetNode("a")->svid_serial, "abcd");
  EXPECT_EQ(store->GetAuditHead()->seq, head->seq);  // nothing appended
  EXPECT_EQ(store->RecordNodeSvid("zz", "01", expiry, Clock::System().Now(), {}).error().code(),
            ErrorCode::kNotFound);
}

TEST_P(NodeBlobStoreTest, RecordNodeSvidWithAnExpectedSerialSwapsItOnce) {
  auto store = OpenStore();
  ASSERT_TRUE(store->UpsertNode(Node("a"), {}).ok());  // serial "01"
  AuditEvent e = testing::Event("node.rejoin");
  TimePoint expiry = Clock::System().Now() + std::chrono::hours(1);
  TimePoint now = Clock::System().Now();
  ASSERT_TRUE(store->RecordNodeSvid("a", "02", expiry, now, std::span(&e, 1), "01").ok());
  EXPECT_EQ(store->GetNode("a")->svid_serial, "02");
  // The same expected serial again (a second rejoin with the consumed SVID): refused, nothing
  // written or audited.
  auto head = store->GetAuditHead();
  auto again = store->RecordNodeSvid("a", "03", expiry, now, std::span(&e, 1), "01");
  EXPECT_EQ(again.error().code(), ErrorCode::kAborted);
  EXPECT_EQ(store->GetNode("a")->svid_serial, "02");
  EXPECT_EQ(store->GetAuditHead()->seq, head->seq);
  // Revocation still wins over a matching serial.
  NodeRecord revoked = *store->GetNode("a");
  revoked.revoked = true;
  ASSERT_TRUE(store->UpsertNode(revoked, {}).ok());
  EXPECT_EQ(store->RecordNodeSvid("a", "04", expiry, now, {}, "02").error().code(),
            ErrorCode::kPermissionDenied);
}

TEST_P(NodeBlobStoreTest, BlobsCommitWithTheirResourcesOrNotAtAll) {
  auto store = OpenStore();
  std::vector<ResourceWrite> writes{Upsert("CredentialSource", "k", R"({"type":"static"})")};
  std::vector<BlobWrite> blobs{{"secret/k", Bytes("sealed-1"), false}};
  ASSERT_TRUE(store->ApplyWithBlobs(writes, blobs, {}).ok());
  EXPECT_EQ(*store->GetBlob("secret/k"), Bytes("sealed-1"));

  // A failing batch (stale expected version) writes neither.
  std::vector<ResourceWrite> stale{Upsert("CredentialSource", "k", R"({"type":"aws"})", 99)};
  std::vector<BlobWrite> other{{"secret/k", Bytes("sealed-2"), false}};
  EXPECT_EQ(store->ApplyWithBlobs(stale, other, {}).error().code(), ErrorCode::kAborted);
  EXPECT_EQ(*store->GetBlob("secret/k"), Bytes("sealed-1"));

  // Erase goes with the delete; erasing a missing blob is fine.
  std::vector<ResourceWrite> del{{"CredentialSource", "k", "", WriteOp::kDelete, std::nullopt}};
  std::vector<BlobWrite> erase{{"secret/k", {}, true}, {"secret/none", {}, true}};
  ASSERT_TRUE(store->ApplyWithBlobs(del, erase, {}).ok());
  EXPECT_EQ(store->GetBlob("secret/k").error().code(), ErrorCode::kNotFound);

  // The same blob twice, or a bad name, is refused before anything is written.
  std::vector<BlobWrite> twice{{"x", Bytes("1"), false}, {"x", Bytes("2"), false}};
  EXPECT_EQ(store->ApplyWithBlobs({}, twice, {}).error().code(), ErrorCode::kInvalidArgument);
  std::vector<BlobWrite> unnamed{{"", Bytes("1"), false}};
  EXPECT_EQ(store->ApplyWithBlobs({}, unnamed, {}).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(store->GetBlob("x").error().code(), ErrorCode::kNotFound);
}

}  // namespace
}  // namespace sigil::store
