// Resources, revisions, the change log and change waits, against every Store.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::AnyStoreTest;
using testing::Delete;
using testing::Event;
using testing::Upsert;

constexpr char kWI[] = "WorkloadIdentity";

class ResourceStoreTest : public AnyStoreTest {};
SIGIL_STORE_BACKENDS(ResourceStoreTest);

TEST_P(ResourceStoreTest, UpsertGetListRoundTrip) {
  FakeClock clock(FromUnixSeconds(1700000000));
  auto store = OpenStore({.clock = &clock});
  ResourceWrite batch[] = {Upsert(kWI, "web", R"({"a":1})"), Upsert(kWI, "api", R"({"b":2})"),
                           Upsert("Service", "web", R"({})")};
  auto applied = store->Apply(batch, {});
  ASSERT_TRUE(applied.ok()) << applied.error().ToString();
  EXPECT_EQ(applied->revision, 1u);
  ASSERT_EQ(applied->writes.size(), 3u);
  for (const auto& w : applied->writes) {
    EXPECT_TRUE(w.changed);
    EXPECT_EQ(w.resource_version, 1u);
  }
  auto got = store->Get(kWI, "web");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->spec_json, R"({"a":1})");
  EXPECT_EQ(got->created_at, FromUnixSeconds(1700000000));
  auto list = store->List(kWI);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->revision, 1u);
  ASSERT_EQ(list->items.size(), 2u);
  EXPECT_EQ(list->items[0].name, "api");  // ordered by name
  EXPECT_EQ(list->items[1].name, "web");

  clock.Advance(Seconds(5));
  ResourceWrite update[] = {Upsert(kWI, "web", R"({"a":2})", 1)};
  ASSERT_TRUE(store->Apply(update, {}).ok());
  got = store->Get(kWI, "web");
  EXPECT_EQ(got->resource_version, 2u);
  EXPECT_EQ(got->created_at, FromUnixSeconds(1700000000));
  EXPECT_EQ(got->updated_at, FromUnixSeconds(1700000005));

  auto missing = store->Get(kWI, "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("WorkloadIdentity/nope"), std::string::npos);
}

TEST_P(ResourceStoreTest, BatchWithOneStaleVersionChangesNothing) {
  auto store = OpenStore();
  ResourceWrite seed[] = {Upsert(kWI, "a", R"({"v":1})"), Upsert(kWI, "b", R"({"v":1})"),
                          Upsert(kWI, "c", R"({"v":1})")};
  ASSERT_TRUE(store->Apply(seed, {}).ok());
  ResourceWrite bump[] = {Upsert(kWI, "b", R"({"v":2})")};
  ASSERT_TRUE(store->Apply(bump, {}).ok());  // b is now at version 2
  const auto head_before = *store->GetAuditHead();

  ResourceWrite batch[] = {Upsert(kWI, "a", R"({"v":9})", 1), Upsert(kWI, "new", "{}", 0),
                           Upsert(kWI, "b", R"({"v":9})", 1),  // stale: stored is 2
                           Delete(kWI, "c")};
  AuditEvent audit[] = {Event("resource.apply", 1)};
  auto r = store->Apply(batch, audit);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kAborted);
  const std::string& msg = r.error().message();
  EXPECT_NE(msg.find("WorkloadIdentity/b"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stored 2"), std::string::npos) << msg;

  EXPECT_EQ(*store->CurrentRevision(), 2u);
  EXPECT_EQ(store->Get(kWI, "a")->spec_json, R"({"v":1})");
  EXPECT_EQ(store->Get(kWI, "a")->resource_version, 1u);
  EXPECT_EQ(store->Get(kWI, "new").error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(store->Get(kWI, "c").ok());
  EXPECT_EQ(store->ChangesSince(2, 100)->changes.size(), 0u);
  const auto head_after = *store->GetAuditHead();
  EXPECT_EQ(head_after.seq, head_before.seq);  // no audit record either
  EXPECT_EQ(head_after.hash, head_before.hash);
}

TEST_P(ResourceStoreTest, OptimisticConcurrency) {
  auto store = OpenStore();
  ResourceWrite create[] = {Upsert(kWI, "a", R"({"v":1})", 0)};
  auto v1 = store->Apply(create, {});
  ASSERT_TRUE(v1.ok());
  // expected 0 means "must not exist".
  auto again = store->Apply(create, {});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kAborted);
  EXPECT_NE(again.error().message().find("expected 0, stored 1"), std::string::npos);

  ResourceWrite update[] = {Upsert(kWI, "a", R"({"v":2})", 1)};
  ASSERT_TRUE(store->Apply(update, {}).ok());
  auto stale = store->Apply(update, {});  // a second writer with the same read
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code(), ErrorCode::kAborted);

  ResourceWrite stale_delete[] = {Delete(kWI, "a", 1)};
  EXPECT_EQ(store->Apply(stale_delete, {}).error().code(), ErrorCode::kAborted);
  ResourceWrite del[] = {Delete(kWI, "a", 2)};
  auto deleted = store->Apply(del, {});
  ASSERT_TRUE(deleted.ok()) << deleted.error().ToString();
  // Expecting a version of something that does not exist says so.
  auto gone = store->Apply(update, {});
  EXPECT_NE(gone.error().message().find("does not exist"), std::string::npos);
  // Versions are never reused after delete and re-create (no ABA).
  ResourceWrite recreate[] = {Upsert(kWI, "a", R"({"v":1})", 0)};
  auto v4 = store->Apply(recreate, {});
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->writes[0].resource_version, 4u);
}

TEST_P(ResourceStoreTest, InvalidBatchesAreRejected) {
  auto store = OpenStore();
  ResourceWrite dup[] = {Upsert(kWI, "a", "{}"), Delete(kWI, "a")};
  EXPECT_EQ(store->Apply(dup, {}).error().code(), ErrorCode::kInvalidArgument);
  ResourceWrite not_json[] = {Upsert(kWI, "a", "{nope")};
  EXPECT_EQ(store->Apply(not_json, {}).error().code(), ErrorCode::kInvalidArgument);
  ResourceWrite array[] = {Upsert(kWI, "a", "[1]")};
  EXPECT_EQ(store->Apply(array, {}).error().code(), ErrorCode::kInvalidArgument);
  ResourceWrite empty_name[] = {Upsert(kWI, "", "{}")};
  EXPECT_EQ(store->Apply(empty_name, {}).error().code(), ErrorCode::kInvalidArgument);
  ResourceWrite del_missing[] = {Delete(kWI, "ghost")};
  auto r = store->Apply(del_missing, {});
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.error().message().find("WorkloadIdentity/ghost"), std::string::npos);
  AuditEvent bad_details[] = {AuditEvent{.type = "x", .details_json = "42"}};
  EXPECT_EQ(store->Apply({}, bad_details).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(*store->CurrentRevision(), 0u);
  EXPECT_EQ(store->GetAuditHead()->seq, 0u);
}

TEST_P(ResourceStoreTest, RevisionsAndChangesSinceIncludeDeletes) {
  auto store = OpenStore();
  ResourceWrite r1[] = {Upsert(kWI, "a", R"({"v":1})"), Upsert(kWI, "b", R"({"v":1})")};
  ResourceWrite r2[] = {Upsert(kWI, "a", R"({"v":2})")};
  ResourceWrite r3[] = {Delete(kWI, "b")};
  ResourceWrite noop[] = {Upsert(kWI, "a", R"({"v":2})")};  // identical: not a change
  ASSERT_EQ(store->Apply(r1, {})->revision, 1u);
  ASSERT_EQ(store->Apply(r2, {})->revision, 2u);
  ASSERT_EQ(store->Apply(r3, {})->revision, 3u);
  auto same = store->Apply(noop, {});
  EXPECT_EQ(same->revision, 3u);
  EXPECT_FALSE(same->writes[0].changed);
  EXPECT_EQ(same->writes[0].resource_version, 2u);

  auto all = store->ChangesSince(0, 100);
  ASSERT_TRUE(all.ok()) << all.error().ToString();
  ASSERT_EQ(all->changes.size(), 4u);
  EXPECT_EQ(all->revision, 3u);
  EXPECT_FALSE(all->more);
  EXPECT_EQ(all->changes[0].name, "a");
  EXPECT_EQ(all->changes[1].name, "b");
  EXPECT_EQ(all->changes[2].spec_json, R"({"v":2})");
  EXPECT_EQ(all->changes[3].op, WriteOp::kDelete);
  EXPECT_EQ(all->changes[3].name, "b");
  EXPECT_EQ(all->changes[3].resource_version, 1u);  // the version that was deleted

  // Paging never splits a revision: limit 1 still returns both changes of revision 1.
  auto page = store->ChangesSince(0, 1);
  ASSERT_EQ(page->changes.size(), 2u);
  EXPECT_TRUE(page->more);
  EXPECT_EQ(page->revision, 1u);
  page = store->ChangesSince(page->revision, 1);
  ASSERT_EQ(page->changes.size(), 1u);
  EXPECT_EQ(page->revision, 2u);
  page = store->ChangesSince(3, 10);
  EXPECT_TRUE(page->changes.empty());
  EXPECT_EQ(page->revision, 3u);
  EXPECT_FALSE(page->more);
  EXPECT_EQ(store->ChangesSince(4, 10).error().code(), ErrorCode::kFailedPrecondition);

  // Compaction keeps the newest revision only; resuming from before it needs a snapshot.
  auto horizon = store->CompactChanges(1);
  ASSERT_TRUE(horizon.ok());
  EXPECT_EQ(*horizon, 2u);
  EXPECT_EQ(store->ChangesSince(1, 10).error().code(), ErrorCode::kFailedPrecondition);
  auto tail = store->ChangesSince(2, 10);
  ASSERT_EQ(tail->changes.size(), 1u);
  EXPECT_EQ(tail->changes[0].op, WriteOp::kDelete);
  EXPECT_EQ(*store->CompactChanges(5), 2u);  // never moves backwards
}

TEST_P(ResourceStoreTest, WaitForChangeSeesOwnAndOtherHandlesCommits) {
  auto store = OpenStore({.change_poll_interval = std::chrono::milliseconds(20)});
  auto other = OpenStore();
  auto timed_out = store->WaitForChange(0, std::chrono::milliseconds(30));
  ASSERT_TRUE(timed_out.ok());
  EXPECT_EQ(*timed_out, 0u);

  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ResourceWrite w[] = {Upsert(kWI, "a", "{}")};
    ASSERT_TRUE(store->Apply(w, {}).ok());
  });
  EXPECT_EQ(*store->WaitForChange(0, std::chrono::seconds(10)), 1u);
  writer.join();
  ResourceWrite w[] = {Upsert(kWI, "b", "{}")};
  ASSERT_TRUE(other->Apply(w, {}).ok());  // seen through polling
  EXPECT_EQ(*store->WaitForChange(1, std::chrono::seconds(10)), 2u);
}

TEST_P(ResourceStoreTest, ConcurrentWritersOnOneHandle) {
  auto store = OpenStore();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        ResourceWrite w[] = {Upsert(kWI, "t" + std::to_string(t) + "-" + std::to_string(i), "{}")};
        AuditEvent e[] = {Event("resource.apply", i)};
        if (!store->Apply(w, e).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(*store->CurrentRevision(), uint64_t{kThreads * kPerThread});
  EXPECT_EQ(store->List(kWI)->items.size(), size_t{kThreads * kPerThread});
  auto report = store->VerifyAudit();
  EXPECT_TRUE(report->ok) << report->reason;
  EXPECT_EQ(report->records_checked, uint64_t{kThreads * kPerThread});
}

// A CredentialSource whose sealed secret changed keeps its spec; force_new_version still gives
// it a new version and a change-log entry (what `sigil credential rotate` relies on).
TEST_P(ResourceStoreTest, ForceNewVersionForAnUnchangedSpec) {
  auto store = OpenStore();
  ResourceWrite first[] = {Upsert("CredentialSource", "key", R"({"type":"static"})")};
  ASSERT_TRUE(store->Apply(first, {}).ok());
  auto same = store->Apply(first, {});
  ASSERT_TRUE(same.ok());
  EXPECT_FALSE(same->writes[0].changed);
  EXPECT_EQ(same->revision, 1u);

  ResourceWrite forced[] = {Upsert("CredentialSource", "key", R"({"type":"static"})", 1)};
  forced[0].force_new_version = true;
  auto applied = store->Apply(forced, {});
  ASSERT_TRUE(applied.ok()) << applied.error().ToString();
  EXPECT_TRUE(applied->writes[0].changed);
  EXPECT_EQ(applied->revision, 2u);
  EXPECT_EQ(store->Get("CredentialSource", "key")->resource_version, 2u);
  auto changes = store->ChangesSince(1, 100);
  ASSERT_TRUE(changes.ok());
  ASSERT_EQ(changes->changes.size(), 1u);
  EXPECT_EQ(changes->changes[0].name, "key");
  EXPECT_EQ(changes->changes[0].resource_version, 2u);
  // The expected version still guards it.
  auto stale = store->Apply(forced, {});
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code(), ErrorCode::kAborted);
}

}  // namespace
}  // namespace sigil::store
