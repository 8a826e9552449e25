// Join tokens, nodes and blobs, against every Store.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/encoding.h"
#include "common/file_util.h"
#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::AnyStoreTest;
using testing::Event;
using testing::PgQueryText;

constexpr char kRawToken[] = "sigiljoin-Zq8r2LwXk4PpT7vNcB3mJ9aE";
const TimePoint kT0 = FromUnixSeconds(1700000000);

JoinTokenRecord Token(const std::string& secret, const std::string& node, TimePoint expires) {
  return JoinTokenRecord{.token_hash = Sha256Hex(AsBytes(secret)),
                         .node_name = node,
                         .created_by = "admin",
                         .created_at = kT0,
                         .expires_at = expires,
                         .used_at = {},
                         .expired_at = {}};
}

class JoinTokenTest : public AnyStoreTest {};
SIGIL_STORE_BACKENDS(JoinTokenTest);
class RecordStoreTest : public AnyStoreTest {};
SIGIL_STORE_BACKENDS(RecordStoreTest);

TEST_P(JoinTokenTest, SingleUseReuseUnknownAndExpired) {
  auto store = OpenStore();
  JoinTokenRecord token = Token(kRawToken, "node-1", kT0 + Seconds(600));
  AuditEvent created[] = {Event("token.create")};
  ASSERT_TRUE(store->CreateJoinToken(token, created).ok());
  auto dup = store->CreateJoinToken(token, {});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(dup.error().message().find(token.token_hash), std::string::npos);

  AuditEvent used[] = {Event("token.use")};
  auto first = store->ConsumeJoinToken(token.token_hash, kT0 + Seconds(10), used);
  ASSERT_TRUE(first.ok()) << first.error().ToString();
  EXPECT_EQ(first->status, ConsumeStatus::kConsumed);
  ASSERT_TRUE(first->token.has_value());
  EXPECT_EQ(first->token->node_name, "node-1");
  EXPECT_EQ(first->token->used_at, kT0 + Seconds(10));
  EXPECT_EQ(store->GetAuditHead()->seq, 2u);  // create + use, each in its own transaction

  auto reuse = store->ConsumeJoinToken(token.token_hash, kT0 + Seconds(11), used);
  ASSERT_TRUE(reuse.ok());
  EXPECT_EQ(reuse->status, ConsumeStatus::kAlreadyUsed);
  EXPECT_EQ(reuse->token->node_name, "node-1");
  EXPECT_EQ(store->GetAuditHead()->seq, 2u);  // the on-consume events were not appended

  auto unknown = store->ConsumeJoinToken(Sha256Hex(AsBytes("other")), kT0, used);
  EXPECT_EQ(unknown->status, ConsumeStatus::kUnknown);
  EXPECT_FALSE(unknown->token.has_value());

  JoinTokenRecord short_lived = Token("short", "node-2", kT0 + Seconds(60));
  ASSERT_TRUE(store->CreateJoinToken(short_lived, {}).ok());
  auto late = store->ConsumeJoinToken(short_lived.token_hash, kT0 + Seconds(60), used);
  EXPECT_EQ(late->status, ConsumeStatus::kExpired);
  EXPECT_FALSE(late->token->used_at.has_value());

  EXPECT_EQ(store->ConsumeJoinToken("not-a-hash", kT0, {}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ConsumeStatusName(ConsumeStatus::kAlreadyUsed), "already-used");
}

TEST_P(JoinTokenTest, ExpiryIsReportedAndAuditedExactlyOnce) {
  auto store = OpenStore();
  ASSERT_TRUE(store->CreateJoinToken(Token("a", "node-a", kT0 + Seconds(60)), {}).ok());
  ASSERT_TRUE(store->CreateJoinToken(Token("b", "node-b", kT0 + Seconds(120)), {}).ok());
  ASSERT_TRUE(store->CreateJoinToken(Token("c", "node-c", kT0 + Seconds(30)), {}).ok());
  ASSERT_EQ(store->ConsumeJoinToken(Sha256Hex(AsBytes("c")), kT0, {})->status,
            ConsumeStatus::kConsumed);
  ExpiryAuditFn audit_for = [](const JoinTokenRecord& t) {
    return AuditEvent{.type = "token.expire", .actor = "server", .node = t.node_name};
  };
  auto none = store->ExpireJoinTokens(kT0 + Seconds(59), audit_for);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto first = store->ExpireJoinTokens(kT0 + Seconds(90), audit_for);
  ASSERT_EQ(first->size(), 1u);  // the used token "c" is not an expiry
  EXPECT_EQ((*first)[0].node_name, "node-a");
  EXPECT_EQ((*first)[0].expired_at, kT0 + Seconds(90));
  auto second = store->ExpireJoinTokens(kT0 + Seconds(500), audit_for);
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].node_name, "node-b");
  EXPECT_TRUE(store->ExpireJoinTokens(kT0 + Seconds(900), audit_for)->empty());

  AuditFilter filter{.type = "token.expire"};
  auto records = store->QueryAudit(filter);
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ((*records)[0].event.node, "node-a");
  EXPECT_EQ((*records)[1].event.node, "node-b");
  auto list = store->ListJoinTokens();
  ASSERT_EQ(list->size(), 3u);
}

// Every file the database lives in: the SQLite file and its WAL, or (PostgreSQL, after a
// checkpoint) the database's own directory, the shared catalog and the WAL.
std::vector<std::filesystem::path> StorageFiles(const std::string& sqlite_dir,
                                                const std::string& pg_url,
                                                const std::string& pg_data_dir) {
  std::vector<std::filesystem::path> roots;
  if (!sqlite_dir.empty()) {
    roots.emplace_back(sqlite_dir);
  } else {
    EXPECT_TRUE(testing::PgExec(pg_url, "CHECKPOINT").ok());
    auto oid =
        PgQueryText(pg_url, "SELECT oid FROM pg_database WHERE datname = current_database()");
    EXPECT_TRUE(oid.ok());
    roots.emplace_back(pg_data_dir + "/base/" + (oid.ok() ? *oid : std::string("?")));
    roots.emplace_back(pg_data_dir + "/global");
    roots.emplace_back(pg_data_dir + "/pg_wal");
  }
  std::vector<std::filesystem::path> files;
  for (const auto& root : roots) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
  }
  return files;
}

TEST_P(JoinTokenTest, DatabaseFilesNeverContainTheRawToken) {
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->CreateJoinToken(Token(kRawToken, "node-1", kT0 + Seconds(600)), {}).ok());
    ASSERT_EQ(store->ConsumeJoinToken(Sha256Hex(AsBytes(kRawToken)), kT0, {})->status,
              ConsumeStatus::kConsumed);
  }
  const auto files =
      StorageFiles(dir_, location(), postgres() ? cluster_->data_dir() : std::string());
  ASSERT_FALSE(files.empty());
  bool hash_seen = false;
  for (const auto& path : files) {
    auto bytes = ReadFile(path.string(), size_t{64} << 20);
    ASSERT_TRUE(bytes.ok()) << bytes.error().ToString();
    EXPECT_EQ(bytes->find(kRawToken), std::string::npos) << path;
    // Sanity check of the search itself: the hash is there.
    hash_seen = hash_seen || bytes->find(Sha256Hex(AsBytes(kRawToken))) != std::string::npos;
  }
  EXPECT_TRUE(hash_seen);
}

TEST_P(JoinTokenTest, ConcurrentConsumersAcrossHandlesAdmitExactlyOne) {
  {
    auto store = OpenStore();
    ASSERT_TRUE(store->CreateJoinToken(Token(kRawToken, "node-1", kT0 + Seconds(600)), {}).ok());
  }
  constexpr int kThreads = 8;
  std::atomic<int> consumed{0}, reused{0}, errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      auto store = TryOpenStore();
      if (!store.ok()) {
        ++errors;
        return;
      }
      AuditEvent use[] = {Event("token.use")};
      auto r = (*store)->ConsumeJoinToken(Sha256Hex(AsBytes(kRawToken)), kT0, use);
      if (!r.ok()) {
        ++errors;
      } else if (r->status == ConsumeStatus::kConsumed) {
        ++consumed;
      } else if (r->status == ConsumeStatus::kAlreadyUsed) {
        ++reused;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(consumed.load(), 1);
  EXPECT_EQ(reused.load(), kThreads - 1);
  EXPECT_EQ(OpenStore()->GetAuditHead()->seq, 1u);
}

TEST_P(RecordStoreTest, NodesRoundTrip) {
  auto store = OpenStore();
  NodeRecord node{.name = "node-b",
                  .spiffe_id = "spiffe://example.org/sigil/node/node-b",
                  .svid_serial = "0a1b",
                  .svid_expiry = kT0 + Seconds(3600),
                  .joined_at = kT0,
                  .last_seen = kT0,
                  .revoked = false,
                  .revocation_reason = ""};
  AuditEvent join[] = {Event("node.join")};
  ASSERT_TRUE(store->UpsertNode(node, join).ok());
  NodeRecord other = node;
  other.name = "node-a";
  ASSERT_TRUE(store->UpsertNode(other, {}).ok());
  node.revoked = true;
  node.revocation_reason = "decommissioned";
  node.last_seen = kT0 + Seconds(5);
  ASSERT_TRUE(store->UpsertNode(node, {}).ok());
  auto got = store->GetNode("node-b");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->revoked);
  EXPECT_EQ(got->revocation_reason, "decommissioned");
  EXPECT_EQ(got->last_seen, kT0 + Seconds(5));
  EXPECT_EQ(got->svid_expiry, kT0 + Seconds(3600));
  auto list = store->ListNodes();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "node-a");
  EXPECT_EQ(store->GetNode("ghost").error().code(), ErrorCode::kNotFound);
}

TEST_P(RecordStoreTest, BlobsRoundTripAndNeverAppearInErrors) {
  auto store = OpenStore();
  std::vector<uint8_t> sealed = {0x00, 0x01, 0xff, 0x00, 0x42};
  ASSERT_TRUE(store->PutBlob("ca/key", sealed, {}).ok());
  EXPECT_EQ(*store->GetBlob("ca/key"), sealed);
  std::vector<uint8_t> rotated = {0x07};
  AuditEvent rotate[] = {Event("ca.rotate")};
  ASSERT_TRUE(store->PutBlob("ca/key", rotated, rotate).ok());
  EXPECT_EQ(*store->GetBlob("ca/key"), rotated);
  ASSERT_TRUE(store->PutBlob("empty", {}, {}).ok());
  EXPECT_TRUE(store->GetBlob("empty")->empty());
  auto missing = store->GetBlob("nope");
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("nope"), std::string::npos);
}

}  // namespace
}  // namespace sigil::store
