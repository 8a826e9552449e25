// Backup and restore support: Store::BumpRevision against every Store, and the SQLite online
// backup (SqliteOnlineBackup) taken while another handle keeps writing.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <limits>
#include <thread>
#include <vector>

#include "store/sqlite_backup.h"
#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::AnyStoreTest;
using testing::Event;
using testing::StoreTest;
using testing::Upsert;

constexpr char kWI[] = "WorkloadIdentity";

class RestoreStoreTest : public AnyStoreTest {};
SIGIL_STORE_BACKENDS(RestoreStoreTest);

TEST_P(RestoreStoreTest, BumpRevisionForcesSnapshotsAndNeverReusesVersions) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 3; ++i) {
    ResourceWrite w[] = {
        Upsert(kWI, "w" + std::to_string(i), R"({"i":)" + std::to_string(i) + "}")};
    AuditEvent e[] = {Event("apply", i)};
    ASSERT_TRUE(store->Apply(w, e).ok());
  }
  ASSERT_EQ(*store->CurrentRevision(), 3u);

  AuditEvent restore[] = {Event("store.restore", 9)};
  auto bumped = store->BumpRevision(1000, restore);
  ASSERT_TRUE(bumped.ok()) << bumped.error().ToString();
  EXPECT_EQ(*bumped, 1003u);
  EXPECT_EQ(*store->CurrentRevision(), 1003u);
  // Resources keep their versions; the change log is gone, so every resume from an older
  // revision (or a newer one, from the lost timeline) must take a snapshot.
  EXPECT_EQ(store->Get(kWI, "w1")->resource_version, 2u);
  for (uint64_t after : {0u, 2u, 3u, 1002u, 1004u, 5000u}) {
    auto page = store->ChangesSince(after, 100);
    ASSERT_FALSE(page.ok()) << after;
    EXPECT_EQ(page.error().code(), ErrorCode::kFailedPrecondition) << after;
  }
  auto page = store->ChangesSince(1003, 100);
  ASSERT_TRUE(page.ok()) << page.error().ToString();
  EXPECT_TRUE(page->changes.empty());
  EXPECT_EQ(page->revision, 1003u);
  auto list = store->List(kWI);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->revision, 1003u);
  EXPECT_EQ(list->items.size(), 3u);

  // The next write continues after the bump and resumes normally.
  ResourceWrite next[] = {Upsert(kWI, "w0", R"({"i":"new"})")};
  auto applied = store->Apply(next, {});
  ASSERT_TRUE(applied.ok());
  EXPECT_EQ(applied->revision, 1004u);
  EXPECT_EQ(applied->writes[0].resource_version, 1004u);
  page = store->ChangesSince(1003, 100);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->changes.size(), 1u);
  EXPECT_EQ(page->changes[0].name, "w0");

  // The audit record is part of the chain, and the store's invariants hold.
  auto head = store->GetAuditHead();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->seq, 4u);
  auto records = store->QueryAudit({.type = "store.restore"});
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ((*records)[0].seq, 4u);
  auto verified = store->VerifyAudit();
  ASSERT_TRUE(verified.ok());
  EXPECT_TRUE(verified->ok) << verified->reason;
  auto integrity = store->IntegrityCheck();
  EXPECT_TRUE(integrity.ok()) << integrity.error().ToString();

  // A second handle (another server replica) sees the bumped state.
  auto other = OpenStore();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(*other->CurrentRevision(), 1004u);
}

TEST_P(RestoreStoreTest, BumpRevisionRefusesZeroAndOverflowWithoutChanges) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ResourceWrite w[] = {Upsert(kWI, "a", "{}")};
  ASSERT_TRUE(store->Apply(w, {}).ok());
  AuditEvent e[] = {Event("store.restore")};
  auto zero = store->BumpRevision(0, e);
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.error().code(), ErrorCode::kInvalidArgument);
  auto huge = store->BumpRevision(std::numeric_limits<uint64_t>::max(), e);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(huge.error().message().find("int64"), std::string::npos);
  EXPECT_EQ(*store->CurrentRevision(), 1u);
  EXPECT_TRUE(store->ChangesSince(0, 10).ok());
  EXPECT_EQ(store->GetAuditHead()->seq, 0u);
}

// The copy is one consistent snapshot although a writer commits throughout: every resource
// write carries its audit record in the same transaction, so in any committed state the number
// of resources equals the audit head's seq and the revision.
TEST_F(StoreTest, SqliteOnlineBackupIsConsistentUnderConcurrentWrites) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      ResourceWrite w[] = {Upsert(kWI, "w" + std::to_string(i),
                                  R"({"payload":")" + std::string(512, 'x') + R"("})")};
      AuditEvent e[] = {Event("apply", i)};
      if (!store->Apply(w, e).ok()) return;
      written.fetch_add(1);
    }
  });
  while (written.load() < 50) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::vector<std::string> copies;
  for (int n = 0; n < 3; ++n) {
    const std::string copy = dir_ + "/copy" + std::to_string(n) + ".db";
    auto info = SqliteOnlineBackup(DbPath(), copy);
    ASSERT_TRUE(info.ok()) << info.error().ToString();
    EXPECT_TRUE(info->schema_current);
    EXPECT_GT(info->bytes, 0u);
    struct stat st {};
    ASSERT_EQ(::stat(copy.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    copies.push_back(copy);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop = true;
  writer.join();
  ASSERT_GT(written.load(), 50);
  for (const auto& copy : copies) {
    auto opened = SqliteStore::Open(copy);
    ASSERT_TRUE(opened.ok()) << opened.error().ToString();
    auto list = (*opened)->List(kWI);
    ASSERT_TRUE(list.ok());
    auto head = (*opened)->GetAuditHead();
    ASSERT_TRUE(head.ok());
    EXPECT_GE(list->items.size(), 50u) << copy;
    EXPECT_EQ(list->items.size(), head->seq) << copy;
    EXPECT_EQ(list->revision, head->seq) << copy;
    auto verified = (*opened)->VerifyAudit();
    ASSERT_TRUE(verified.ok());
    EXPECT_TRUE(verified->ok) << verified->reason;
    EXPECT_TRUE((*opened)->IntegrityCheck().ok());
  }
  // No temporary files are left beside the copies.
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename().string().find(".partial-"), std::string::npos)
        << entry.path();
  }
}

TEST_F(StoreTest, SqliteOnlineBackupRefusesExistingTargetsAndMissingSources) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  const std::string copy = dir_ + "/copy.db";
  ASSERT_TRUE(SqliteOnlineBackup(DbPath(), copy).ok());
  auto again = SqliteOnlineBackup(DbPath(), copy);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(again.error().message().find(copy), std::string::npos);

  auto missing = SqliteOnlineBackup(dir_ + "/nope.db", dir_ + "/copy2.db");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/copy2.db"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/nope.db"));  // never created

  // A SQLite file that is not a Sigil store.
  const std::string foreign = dir_ + "/foreign.db";
  ASSERT_EQ(testing::RunSqliteCli(foreign, "CREATE TABLE t (x);"), 0);
  auto not_sigil = SqliteOnlineBackup(foreign, dir_ + "/copy3.db");
  ASSERT_FALSE(not_sigil.ok());
  EXPECT_EQ(not_sigil.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(not_sigil.error().message().find("not a Sigil store"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/copy3.db"));
}

}  // namespace
}  // namespace sigil::store
