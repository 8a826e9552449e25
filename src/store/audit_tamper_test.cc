// Tampering with the audit table through the real sqlite3 CLI (SQLite only; the PostgreSQL
// counterpart is in pg_store_test.cc).
#include <gtest/gtest.h>

#include <vector>

#include "store/audit_chain.h"
#include "store/sqlite_store.h"
#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::Event;
using testing::RunSqliteCli;
using testing::StoreTest;

// What an attacker with write access to the file does first: remove the append-only guard.
constexpr char kDropGuards[] = "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;\n";

class AuditTamperTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    std::vector<AuditEvent> events;
    for (int i = 1; i <= 100; ++i) events.push_back(Event("svid.issue", i));
    ASSERT_TRUE(store->AppendAudit(events).ok());
    ASSERT_TRUE(store->VerifyAudit()->ok);
  }  // the store is closed before the CLI touches the file

  AuditVerifyReport Tamper(const std::string& sql) {
    EXPECT_EQ(RunSqliteCli(DbPath(), std::string(kDropGuards) + sql), 0) << sql;
    auto store = OpenStore();
    EXPECT_NE(store, nullptr);
    auto report = store->VerifyAudit();
    EXPECT_TRUE(report.ok()) << report.error().ToString();
    EXPECT_FALSE(report->ok);
    EXPECT_TRUE(store->IntegrityCheck().ok());  // the file itself is healthy: only the chain
    return *report;
  }
};

TEST_F(AuditTamperTest, AppendOnlyTriggersStopCasualEdits) {
  EXPECT_NE(RunSqliteCli(DbPath(), "UPDATE audit SET actor = 'x' WHERE seq = 37;"), 0);
  EXPECT_NE(RunSqliteCli(DbPath(), "DELETE FROM audit WHERE seq = 50;"), 0);
  EXPECT_TRUE(OpenStore()->VerifyAudit()->ok);
}

TEST_F(AuditTamperTest, EditedFieldIsReportedAtThatRecord) {
  auto r = Tamper("UPDATE audit SET identity = 'spiffe://example.org/admin' WHERE seq = 37;");
  EXPECT_EQ(r.first_bad_seq, 37u);
  EXPECT_EQ(r.records_checked, 37u);
  EXPECT_NE(r.reason.find("altered"), std::string::npos) << r.reason;
}

TEST_F(AuditTamperTest, EditedPidAndTimeAreDetected) {
  EXPECT_EQ(Tamper("UPDATE audit SET pid = 4242 WHERE seq = 12;").first_bad_seq, 12u);
}

TEST_F(AuditTamperTest, EditedAndRehashedRecordBreaksTheNextLink) {
  // The attacker edits record 37 and recomputes its hash correctly; 37 is then
  // self-consistent, but record 38 still links to the old hash.
  auto original = OpenStore()->QueryAudit({.after_seq = 36, .limit = 1});
  ASSERT_EQ(original->size(), 1u);
  AuditRecord forged = original->front();
  forged.event.actor = "mallory";
  forged.hash = AuditRecordHash(forged.seq, forged.event, forged.prev_hash);
  auto r =
      Tamper("UPDATE audit SET actor = 'mallory', hash = '" + forged.hash + "' WHERE seq = 37;");
  EXPECT_EQ(r.first_bad_seq, 38u);
  EXPECT_NE(r.reason.find("prev_hash"), std::string::npos) << r.reason;
}

TEST_F(AuditTamperTest, DeletedRecordIsReportedMissing) {
  auto r = Tamper("DELETE FROM audit WHERE seq = 50;");
  EXPECT_EQ(r.first_bad_seq, 50u);
  EXPECT_NE(r.reason.find("missing"), std::string::npos) << r.reason;
}

TEST_F(AuditTamperTest, DeletedAndRenumberedRecordIsDetected) {
  auto r =
      Tamper("DELETE FROM audit WHERE seq = 50; UPDATE audit SET seq = seq - 1 WHERE seq > 50;");
  EXPECT_EQ(r.first_bad_seq, 50u);
}

TEST_F(AuditTamperTest, SwappedRecordsAreDetectedAtTheFirst) {
  // Swap the contents (every column but seq) of records 10 and 20.
  auto r = Tamper(
      "UPDATE audit SET seq = 100010 WHERE seq = 10;"
      "UPDATE audit SET seq = 10 WHERE seq = 20;"
      "UPDATE audit SET seq = 20 WHERE seq = 100010;");
  EXPECT_EQ(r.first_bad_seq, 10u);
}

TEST_F(AuditTamperTest, SwappedTimestampsAreDetected) {
  auto r = Tamper(
      "UPDATE audit SET time_us = (SELECT time_us FROM audit WHERE seq = 61) WHERE seq = 60;");
  EXPECT_EQ(r.first_bad_seq, 60u);
}

TEST_F(AuditTamperTest, AppendedForgeryIsDetected) {
  auto r = Tamper(
      "INSERT INTO audit (seq, time_us, type, actor, node, identity, pid, exe, details,"
      " prev_hash, hash) SELECT 101, time_us, 'token.use', 'admin', 'n', 'spiffe://x/y', NULL,"
      " '', '{}', hash, '" +
      std::string(64, 'b') + "' FROM audit WHERE seq = 100;");
  EXPECT_EQ(r.first_bad_seq, 101u);
  EXPECT_EQ(r.records_checked, 101u);
}

TEST_F(AuditTamperTest, TruncatedTailIsCaughtOnlyByAnAnchoredHead) {
  auto anchored = OpenStore()->GetAuditHead();
  ASSERT_TRUE(anchored.ok());
  ASSERT_EQ(RunSqliteCli(DbPath(), std::string(kDropGuards) + "DELETE FROM audit WHERE seq > 90;"),
            0);
  auto store = OpenStore();
  EXPECT_TRUE(store->VerifyAudit()->ok);  // the documented limitation of a bare chain
  auto records = store->QueryAudit({.after_seq = anchored->seq - 1, .limit = 1});
  EXPECT_TRUE(records->empty());  // ...which comparing against the anchor exposes
}

}  // namespace
}  // namespace sigil::store
