#include "store/audit_chain.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "store/store_test_util.h"

namespace sigil::store {
namespace {

using testing::AnyStoreTest;
using testing::Event;

std::vector<AuditRecord> BuildChain(int n) {
  std::vector<AuditRecord> chain;
  std::string prev(kGenesisHash);
  for (int i = 1; i <= n; ++i) {
    AuditRecord r{.seq = static_cast<uint64_t>(i),
                  .event = Event("svid.issue", i),
                  .prev_hash = prev,
                  .hash = {}};
    r.hash = AuditRecordHash(r.seq, r.event, r.prev_hash);
    prev = r.hash;
    chain.push_back(std::move(r));
  }
  return chain;
}

TEST(AuditChainTest, EncodingIsUnambiguous) {
  AuditEvent a{.type = "ab", .actor = "c"};
  AuditEvent b{.type = "a", .actor = "bc"};
  EXPECT_NE(AuditCanonicalEncoding(1, a, kGenesisHash), AuditCanonicalEncoding(1, b, kGenesisHash));
  AuditEvent no_pid{.type = "t"};
  AuditEvent zero_pid{.type = "t", .pid = 0};
  EXPECT_NE(AuditRecordHash(1, no_pid, kGenesisHash), AuditRecordHash(1, zero_pid, kGenesisHash));
  EXPECT_NE(AuditRecordHash(1, no_pid, kGenesisHash), AuditRecordHash(2, no_pid, kGenesisHash));
  // Sub-microsecond differences are not part of the record.
  AuditEvent t1{.time = FromUnixSeconds(5), .type = "t"};
  AuditEvent t2 = t1;
  t2.time += std::chrono::nanoseconds(999);
  EXPECT_EQ(AuditRecordHash(1, t1, kGenesisHash), AuditRecordHash(1, t2, kGenesisHash));
  t2.time += std::chrono::nanoseconds(1);
  EXPECT_NE(AuditRecordHash(1, t1, kGenesisHash), AuditRecordHash(1, t2, kGenesisHash));
  // Known answer, pinning the documented encoding (domain tag, big-endian, length prefixes).
  std::string enc = AuditCanonicalEncoding(1, AuditEvent{.type = "x"}, "p");
  std::string expected("\0\0\0\x0esigil.audit.v1", 18);
  expected += std::string("\0\0\0\0\0\0\0\x01", 8) + std::string(8, '\0');
  expected += std::string("\0\0\0\x01x", 5) + std::string(12, '\0') + std::string(1, '\0');
  expected += std::string(8, '\0') + std::string("\0\0\0\x01p", 5);
  EXPECT_EQ(enc, expected);
}

TEST(AuditChainTest, VerifierDetectsEachKindOfTampering) {
  auto chain = BuildChain(20);
  EXPECT_TRUE(VerifyAuditChain(chain).ok);
  EXPECT_EQ(VerifyAuditChain(chain).records_checked, 20u);
  EXPECT_TRUE(VerifyAuditChain({}).ok);

  auto edited = chain;
  edited[6].event.exe = "/bin/evil";
  auto r = VerifyAuditChain(edited);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_seq, 7u);
  EXPECT_NE(r.reason.find("altered"), std::string::npos);

  auto deleted = chain;
  deleted.erase(deleted.begin() + 9);
  r = VerifyAuditChain(deleted);
  EXPECT_EQ(r.first_bad_seq, 10u);
  EXPECT_NE(r.reason.find("missing"), std::string::npos);

  auto rehashed = chain;  // edited and re-hashed: the next link breaks
  rehashed[6].event.actor = "mallory";
  rehashed[6].hash = AuditRecordHash(7, rehashed[6].event, rehashed[6].prev_hash);
  r = VerifyAuditChain(rehashed);
  EXPECT_EQ(r.first_bad_seq, 8u);
  EXPECT_NE(r.reason.find("prev_hash"), std::string::npos);

  auto forged = chain;
  forged.push_back(AuditRecord{.seq = 21,
                               .event = Event("token.use"),
                               .prev_hash = chain.back().hash,
                               .hash = std::string(64, 'a')});
  r = VerifyAuditChain(forged);
  EXPECT_EQ(r.first_bad_seq, 21u);
  EXPECT_EQ(r.records_checked, 21u);
}

class AuditStoreTest : public AnyStoreTest {};
SIGIL_STORE_BACKENDS(AuditStoreTest);

TEST_P(AuditStoreTest, ThousandRecordsVerifyAndLinkUp) {
  auto store = OpenStore();
  std::vector<AuditEvent> events;
  for (int i = 1; i <= 1000; ++i) events.push_back(Event("svid.issue", i));
  auto seqs = store->AppendAudit(std::span(events).first(400));
  ASSERT_TRUE(seqs.ok()) << seqs.error().ToString();
  EXPECT_EQ(seqs->front(), 1u);
  EXPECT_EQ(seqs->back(), 400u);
  for (size_t i = 400; i < events.size(); ++i) {
    ASSERT_TRUE(store->AppendAudit(std::span(events).subspan(i, 1)).ok());
  }
  auto report = store->VerifyAudit();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->reason;
  EXPECT_EQ(report->records_checked, 1000u);
  EXPECT_FALSE(report->first_bad_seq.has_value());
  auto all = store->QueryAudit({.limit = kMaxAuditQueryLimit});
  ASSERT_EQ(all->size(), 1000u);
  EXPECT_EQ((*all)[0].prev_hash, kGenesisHash);
  EXPECT_EQ((*all)[0].event.time, FromUnixSeconds(1700000001));
  EXPECT_EQ((*all)[1].prev_hash, (*all)[0].hash);
  auto head = store->GetAuditHead();
  EXPECT_EQ(head->seq, 1000u);
  EXPECT_EQ(head->hash, all->back().hash);
}

TEST_P(AuditStoreTest, QueryFilters) {
  FakeClock clock(FromUnixSeconds(1800000000));
  auto store = OpenStore({.clock = &clock});
  std::vector<AuditEvent> events;
  for (int i = 1; i <= 60; ++i) events.push_back(Event(i % 2 ? "svid.issue" : "token.use", i));
  events.push_back(AuditEvent{.type = "stamped"});  // no time: the store's clock stamps it
  ASSERT_TRUE(store->AppendAudit(events).ok());

  auto by_identity = store->QueryAudit({.identity = "spiffe://example.org/w/3"});
  ASSERT_EQ(by_identity->size(), 12u);
  for (const auto& r : *by_identity) EXPECT_EQ(r.event.identity, "spiffe://example.org/w/3");
  auto by_pid = store->QueryAudit({.pid = 1010});
  ASSERT_EQ(by_pid->size(), 1u);
  EXPECT_EQ(by_pid->front().seq, 10u);
  auto by_node_type = store->QueryAudit({.node = "node-1", .type = "token.use"});
  for (const auto& r : *by_node_type) {
    EXPECT_EQ(r.event.node, "node-1");
    EXPECT_EQ(r.event.type, "token.use");
  }
  EXPECT_FALSE(by_node_type->empty());
  auto window = store->QueryAudit(
      {.since = FromUnixSeconds(1700000010), .until = FromUnixSeconds(1700000020)});
  ASSERT_EQ(window->size(), 10u);
  EXPECT_EQ(window->front().seq, 10u);
  auto newest = store->QueryAudit({.newest_first = true, .limit = 2});
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ(newest->front().seq, 61u);
  EXPECT_EQ(newest->front().event.time, FromUnixSeconds(1800000000));
  EXPECT_EQ(newest->front().event.details_json, "{}");
  auto paged = store->QueryAudit({.after_seq = 55, .limit = 3});
  ASSERT_EQ(paged->size(), 3u);
  EXPECT_EQ(paged->front().seq, 56u);
  EXPECT_TRUE(store->VerifyAudit()->ok);
}

// `sigil audit --binding`: the top-level "binding" member of details, exactly.
TEST_P(AuditStoreTest, QueryByBinding) {
  auto store = OpenStore();
  std::vector<AuditEvent> events;
  auto with = [&](std::string type, std::string details) {
    AuditEvent e = Event(std::move(type), static_cast<int>(events.size()) + 1);
    e.details_json = std::move(details);
    events.push_back(std::move(e));
  };
  with("credential.grant", R"({"binding":"ml-openai","source":"openai-key"})");
  with("credential.denied", R"({"reason":"no identity","binding":"ml-openai"})");
  with("credential.grant", R"({"binding":"ml-openai-2"})");
  with("credential.grant", R"({"nested":{"binding":"ml-openai"}})");
  with("resource.apply", R"({"kind":"CredentialBinding","name":"ml-openai"})");
  // PostgreSQL's JSON functions fail on a whole query when any row has this escape.
  with("credential.grant", R"({"binding":"ml-openai\u0000x","other":"\u0000"})");
  with("credential.grant", R"({"note":"\"binding\":\"ml-openai\""})");
  with("dataplane.inject", R"({"binding":"ml-openai","host":"api.example","path":"/v1"})");
  ASSERT_TRUE(store->AppendAudit(events).ok());

  auto got = store->QueryAudit({.binding = "ml-openai"});
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[0].seq, 1u);
  EXPECT_EQ((*got)[1].seq, 2u);
  EXPECT_EQ((*got)[2].seq, 8u);
  auto grants = store->QueryAudit({.type = "credential.grant", .binding = "ml-openai"});
  ASSERT_TRUE(grants.ok());
  ASSERT_EQ(grants->size(), 1u);
  auto newest = store->QueryAudit({.binding = "ml-openai", .newest_first = true, .limit = 1});
  ASSERT_TRUE(newest.ok());
  ASSERT_EQ(newest->size(), 1u);
  EXPECT_EQ(newest->front().seq, 8u);
  // A name with a NUL is a different name (SQLite's json_extract would have cut it).
  auto other = store->QueryAudit({.binding = std::string("ml-openai\0x", 11)});
  ASSERT_TRUE(other.ok()) << other.error().ToString();
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ(other->front().seq, 6u);
  EXPECT_TRUE(store->QueryAudit({.binding = "none"})->empty());
}

// `sigil revoke svid SERIAL`: the issuance record of one certificate, by its top-level "serial".
TEST_P(AuditStoreTest, QueryBySerial) {
  auto store = OpenStore();
  std::vector<AuditEvent> events;
  auto with = [&](std::string type, std::string node, std::string details) {
    AuditEvent e = Event(std::move(type), static_cast<int>(events.size()) + 1);
    e.node = std::move(node);
    e.details_json = std::move(details);
    events.push_back(std::move(e));
  };
  with("node.join", "node-a", R"({"serial":"3fa9","expires":100})");
  with("node.renew", "node-a", R"({"serial":"77","previous_serial":"3fa9","expires":200})");
  with("svid.issue", "node-a", R"({"serial":"3fa90","expires":300})");
  with("svid.issue", "node-b", R"({"exe_sha256":"x","serial":"3fa9","expires":300})");
  with("svid.issue", "node-b", R"({"nested":{"serial":"3fa9"}})");
  with("svid.issue", "node-b", R"({"note":"\"serial\":\"3fa9\"","other":"\u0000"})");
  with("revoke.svid", "", R"({"target":"3fa9"})");
  ASSERT_TRUE(store->AppendAudit(events).ok());

  auto got = store->QueryAudit({.serial = "3fa9"});
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  ASSERT_EQ(got->size(), 2u);  // not previous_serial, not a longer serial, not nested
  EXPECT_EQ((*got)[0].seq, 1u);
  EXPECT_EQ((*got)[1].seq, 4u);
  auto issued = store->QueryAudit({.type = "svid.issue", .serial = "3fa9"});
  ASSERT_TRUE(issued.ok());
  ASSERT_EQ(issued->size(), 1u);
  EXPECT_EQ(issued->front().event.node, "node-b");
  auto on_a = store->QueryAudit({.node = "node-a", .serial = "3fa9"});
  ASSERT_TRUE(on_a.ok());
  ASSERT_EQ(on_a->size(), 1u);
  EXPECT_EQ(on_a->front().event.type, "node.join");
  // Combined with binding, both must hold.
  EXPECT_TRUE(store->QueryAudit({.binding = "b", .serial = "3fa9"})->empty());
  EXPECT_TRUE(store->QueryAudit({.serial = "3fa"})->empty());
  EXPECT_EQ(store->QueryAudit({.serial = "77"})->size(), 1u);
}

}  // namespace
}  // namespace sigil::store
