#include "dataplane/proxy/inject_audit.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace sigil::dataplane {
namespace {

nlohmann::json TakeParsed(InjectAuditBatch& b) { return nlohmann::json::parse(b.Take()); }

TEST(InjectAuditBatch, KeepsEachRequestInOrderAndEmptiesOnTake) {
  InjectAuditBatch b;
  EXPECT_TRUE(b.empty());
  EXPECT_FALSE(b.Add(1000, "GET", "api.example", "/v1/models"));
  EXPECT_FALSE(b.Add(1001, "POST", "api.example:443", "/v1/chat"));
  EXPECT_EQ(b.size(), 2u);
  const nlohmann::json got = TakeParsed(b);
  ASSERT_TRUE(got.is_array());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], (nlohmann::json{{"time_unix_ms", 1000},
                                    {"method", "GET"},
                                    {"host", "api.example"},
                                    {"path", "/v1/models"}}));
  EXPECT_EQ(got[1]["method"], "POST");
  EXPECT_EQ(got[1]["host"], "api.example:443");
  EXPECT_EQ(got[1]["time_unix_ms"], 1001);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.Take(), "[]");
}

TEST(InjectAuditBatch, FullAtMaxRequests) {
  InjectAuditBatch b;
  for (size_t i = 1; i < InjectAuditBatch::kMaxRequests; ++i) {
    ASSERT_FALSE(b.Add(static_cast<int64_t>(i), "GET", "h", "/")) << i;
  }
  EXPECT_TRUE(b.Add(99, "GET", "h", "/"));
  EXPECT_EQ(TakeParsed(b).size(), InjectAuditBatch::kMaxRequests);
  // The count starts again after a take.
  EXPECT_FALSE(b.Add(100, "GET", "h", "/"));
}

TEST(InjectAuditBatch, FullAtMaxBytesAndAlwaysWithinTheServersLimit) {
  InjectAuditBatch b;
  const std::string path(InjectAuditBatch::kMaxPath, 'p');
  size_t n = 0;
  while (!b.Add(1, "GET", std::string(InjectAuditBatch::kMaxField, 'h'), path)) ++n;
  EXPECT_LT(n + 1, InjectAuditBatch::kMaxRequests);
  const nlohmann::json details = {{"binding", std::string(253, 'b')},
                                  {"service", std::string(253, 's')},
                                  {"requests", TakeParsed(b)}};
  EXPECT_LE(details.dump().size(), size_t{16} * 1024);  // server: kMaxDetails
}

TEST(InjectAuditBatch, PeerStringsArePrintableAndBounded) {
  InjectAuditBatch b;
  const std::string long_path = "/" + std::string(5000, 'x');
  b.Add(1, "G\x01T", "h\xff\xfe.example", long_path);
  b.Add(2, std::string(1000, 'M'), "ok", "/short");
  const nlohmann::json got = TakeParsed(b);
  EXPECT_EQ(got[0]["method"], "G?T");
  EXPECT_EQ(got[0]["host"], "h??.example");
  EXPECT_EQ(got[0]["path"].get<std::string>().size(), InjectAuditBatch::kMaxPath);
  EXPECT_EQ(got[0]["path_truncated"], true);
  EXPECT_EQ(got[1]["method"].get<std::string>().size(), InjectAuditBatch::kMaxField);
  EXPECT_FALSE(got[1].contains("path_truncated"));
  // Valid UTF-8 whatever came in: the dump does not throw.
  EXPECT_NO_THROW((void)got.dump());
}

TEST(InjectAuditBatch, QuotesAndBackslashesAreEscaped) {
  InjectAuditBatch b;
  b.Add(7, "GET", "a\"b", "/x\\\"},{\"method\":\"forged");
  const nlohmann::json got = TakeParsed(b);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["host"], "a\"b");
  EXPECT_EQ(got[0]["path"], "/x\\\"},{\"method\":\"forged");
  EXPECT_EQ(got[0]["method"], "GET");
}

TEST(InjectAuditBatch, FullAtMaxBytesEvenWhenEveryByteNeedsEscaping) {
  InjectAuditBatch b;
  const std::string quotes(InjectAuditBatch::kMaxPath, '"');
  size_t n = 0;
  while (!b.Add(1, std::string(InjectAuditBatch::kMaxField, '\\'),
                std::string(InjectAuditBatch::kMaxField, '"'), quotes)) {
    ++n;
  }
  EXPECT_LT(n + 1, InjectAuditBatch::kMaxRequests);
  const std::string text = b.Take();
  EXPECT_LE(text.size() + 2 * 1024, size_t{16} * 1024);  // room for the names; server: kMaxDetails
  const nlohmann::json got = nlohmann::json::parse(text);
  EXPECT_EQ(got.size(), n + 1);
  EXPECT_EQ(got[0]["path"].get<std::string>(), quotes);
}

}  // namespace
}  // namespace sigil::dataplane
